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


# vLLM's Triton/CUDA group-quant kernels assert K % 128 == 0; its QuantFP8 native path (what runs when the
# custom op is disabled, e.g. under torch.compile) zero-pads K to whole groups and crops the codes: groups
# start at column 0 and the last one holds K % 128 live columns, the same columns as the weight's last
# 128-wide block (the Triton block GEMM takes cdiv(K, 128) scale columns). A K that does not divide runs
# on that native recipe.
PARTIAL_K_RECIPE = {"vllm_act_group": "vllm_act_group_native",
                    "vllm_act_group_ue8m0": "vllm_act_group_native_ue8m0"}


def act_recipe_for(k: int, recipe="vllm_act_group", name: str | None = None):
    """The activation recipe that runs for this K: the given one, or its padding twin when K % 128 != 0."""
    from refit_verify.fp8 import get_recipe

    r = get_recipe(recipe)
    if k % BLOCK == 0 or r.padding != "none":
        return r
    if r.name in PARTIAL_K_RECIPE:
        return get_recipe(PARTIAL_K_RECIPE[r.name])
    raise BadInputError(f"activation recipe {r.name} needs K % {BLOCK} == 0 (no padding), got K={k}", name)


def quantize_act(x2d: torch.Tensor, recipe="vllm_act_group", name: str | None = None) -> ActQuant:
    """vLLM's dynamic per-token-group quantization (FACTS.md §3); see PARTIAL_K_RECIPE for K % 128 != 0."""
    qt: QuantizedTensor = quantize_activation(x2d, act_recipe_for(x2d.shape[-1], recipe, name), name)
    return ActQuant(qt.data, qt.scale_inv)


def dequantize_act(a: ActQuant) -> torch.Tensor:
    return dequantize(a.data, a.scale_inv, (1, BLOCK))


def dequantize_weight(w: torch.Tensor, scale_inv: torch.Tensor) -> torch.Tensor:
    return dequantize(w, scale_inv, (BLOCK, BLOCK))


def dequantize_weight_rows(w: torch.Tensor, row_scale: torch.Tensor, name: str | None = None) -> torch.Tensor:
    """float32 weight from per-row scales [N, ceil(K/128)]: the exact placement of fused shards."""
    want = (w.shape[0], math.ceil(w.shape[1] / BLOCK))
    if tuple(row_scale.shape) != want:
        raise BadInputError(f"weight_scale_inv_rows shape {tuple(row_scale.shape)} != {want}", name)
    return w.float() * row_scale.float().repeat_interleave(BLOCK, 1)[:, : w.shape[1]]


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
