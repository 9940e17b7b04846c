"""pytest plugin: hypothesis profiles and options that point the suites at a user's implementation."""

from __future__ import annotations

import os


def _register_hypothesis_profiles() -> None:
    try:
        from hypothesis import HealthCheck, settings
    except ImportError:  # hypothesis is a test extra; the plugin must still load without it
        return
    common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    settings.register_profile("ci", derandomize=True, max_examples=20, print_blob=True, **common)
    settings.register_profile("dev", max_examples=100, print_blob=True, **common)
    settings.register_profile("nightly", max_examples=1000, print_blob=True, **common)
    default = "ci" if os.environ.get("CI") else "dev"
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", default))


_register_hypothesis_profiles()


def pytest_addoption(parser):
    group = parser.getgroup("refit-verify")
    group.addoption("--refit-quantizer", default=None,
                    help="MODULE:ATTR (or path/to/file.py:ATTR) of a quantizer f(w) -> (fp8, scale_inv) to test")
    group.addoption("--refit-quantizer-kwargs", default=None, help="JSON kwargs passed to the quantizer")
    group.addoption("--refit-against", default="vllm_per_block", help="recipe the quantizer must match")
    group.addoption("--refit-seed", default=0, type=int, help="base seed of every random input")
