"""Fast quantizers, tested bit-exact against `refit_verify.fp8.quantize` (the reference).

Importable without triton or a GPU: the Triton module loads on first use.
"""

from __future__ import annotations

from refit_verify.fp8.kernels.spec import SUPPORTED_RECIPES, UnsupportedRecipe, device_semantics, kernel_spec


def triton_available() -> tuple[bool, str]:
    """(usable, reason) — usable means triton imports and a CUDA device (or the interpreter) exists."""
    import os

    try:
        import triton  # noqa: F401
    except ImportError as exc:
        return False, f"triton is not installed ({exc})"
    import torch

    if os.environ.get("TRITON_INTERPRET") == "1":
        return True, "triton interpreter"
    if not torch.cuda.is_available():
        return False, "no CUDA device"
    return True, "cuda"


def quantize_triton(w, recipe="vllm_per_block", name=None, **kw):
    from refit_verify.fp8.kernels.triton_block import quantize_triton as impl

    return impl(w, recipe, name, **kw)


def quantize_emulated(w, recipe="vllm_per_block", name=None, **kw):
    from refit_verify.fp8.kernels.emulate import quantize_emulated as impl

    return impl(w, recipe, name, **kw)


__all__ = ["SUPPORTED_RECIPES", "UnsupportedRecipe", "device_semantics", "kernel_spec", "quantize_emulated",
           "quantize_triton", "triton_available"]
