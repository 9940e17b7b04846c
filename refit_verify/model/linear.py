"""Block-FP8 W8A8 linear: 1x128 per-token activation groups times 128x128 weight blocks.

Two GEMM backends share the activation quantizer, so they differ only in the matmul:
- "emulated": dequantize both operands to float32 and matmul. Exact up to float32 summation
  order and deterministic on CPU: the reference every other path is measured against.
- "native": torch's block-scaled FP8 matmul on Hopper (cuBLAS, sm90). Its scale-layout rules
  moved between torch releases, so the layout is probed once and recorded (`native_layout`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from refit_verify.errors import BadInputError
from refit_verify.fp8.quantize import QuantizedTensor, dequantize, quantize_activation

BLOCK = 128
BACKENDS = ("emulated", "native")


@dataclass(frozen=True)
class ActQuant:
    """One quantized activation matrix: codes (M, K) e4m3 and scales (M, K/128) float32."""

    data: torch.Tensor
    scale_inv: torch.Tensor


def quantize_act(x2d: torch.Tensor, recipe="vllm_act_group", name: str | None = None) -> ActQuant:
    """vLLM's dynamic per-token-group quantization (FACTS.md §3); K must divide into groups of 128."""
    if x2d.shape[-1] % BLOCK:
        raise BadInputError(f"W8A8 needs K % {BLOCK} == 0 (vLLM's group quant), got K={x2d.shape[-1]}", name)
    qt: QuantizedTensor = quantize_activation(x2d, recipe, name)
    return ActQuant(qt.data, qt.scale_inv)


def dequantize_act(a: ActQuant) -> torch.Tensor:
    return dequantize(a.data, a.scale_inv, (1, BLOCK))


def dequantize_weight(w: torch.Tensor, scale_inv: torch.Tensor) -> torch.Tensor:
    return dequantize(w, scale_inv, (BLOCK, BLOCK))


def check_weight(w: torch.Tensor, scale_inv: torch.Tensor, name: str | None = None) -> None:
    if w.dtype != torch.float8_e4m3fn:
        raise BadInputError(f"FP8 linear expects float8_e4m3fn weight, got {w.dtype}", name)
    want = (math.ceil(w.shape[0] / BLOCK), math.ceil(w.shape[1] / BLOCK))
    if tuple(scale_inv.shape) != want:
        raise BadInputError(f"weight_scale_inv shape {tuple(scale_inv.shape)} != {want} for weight "
                            f"{tuple(w.shape)} (128x128 blocks)", name)
    if scale_inv.dtype != torch.float32:
        raise BadInputError(f"weight_scale_inv must be float32, got {scale_inv.dtype}", name)


def emulated_gemm(a: ActQuant, w: torch.Tensor, scale_inv: torch.Tensor,
                  w_dequant: torch.Tensor | None = None) -> torch.Tensor:
    """float32 (M, N) = dequant(a) @ dequant(w).T; `w_dequant` lets a caller cache the weight side."""
    wd = dequantize_weight(w, scale_inv) if w_dequant is None else w_dequant
    return dequantize_act(a) @ wd.t()


def w8a8_linear(x: torch.Tensor, w: torch.Tensor, scale_inv: torch.Tensor, *, backend: str = "emulated",
                act_recipe="vllm_act_group", name: str | None = None,
                w_dequant: torch.Tensor | None = None) -> torch.Tensor:
    """y = x @ W.T with x quantized per token group; returns float32 of shape x.shape[:-1] + (N,)."""
    check_weight(w, scale_inv, name)
    lead = x.shape[:-1]
    a = quantize_act(x.reshape(-1, x.shape[-1]), act_recipe, name)
    if backend == "emulated":
        y = emulated_gemm(a, w, scale_inv, w_dequant)
    elif backend == "native":
        from refit_verify.model.native import native_gemm

        y = native_gemm(a.data, a.scale_inv, w, scale_inv)
    else:
        raise BadInputError(f"unknown GEMM backend {backend!r}; known: {', '.join(BACKENDS)}", name)
    return y.reshape(*lead, w.shape[0])
