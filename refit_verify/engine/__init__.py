"""Drivers for real inference engines (vLLM on CPU); imported lazily, engines optional."""
