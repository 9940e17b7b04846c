"""The reference block quantizer: one function driven by a Recipe, clarity over speed."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from refit_verify.errors import BadInputError, NonFiniteInputError, RecipeFailure
from refit_verify.fp8 import format as fmt
from refit_verify.fp8.presets import get_recipe
from refit_verify.fp8.recipe import Recipe

_FLOAT_INPUTS = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


@dataclass(frozen=True)
class QuantizedTensor:
    data: torch.Tensor  # float8_e4m3fn, shape (M, N)
    scale_inv: torch.Tensor  # float32, shape (ceil(M/bm), ceil(N/bn)); w ~= data * scale_inv
    recipe: Recipe

    @property
    def codes(self) -> torch.Tensor:
        return fmt.codes(self.data)


def validate_input(w, name: str | None = None) -> None:
    if not isinstance(w, torch.Tensor):
        raise BadInputError(f"expected a torch.Tensor, got {type(w).__name__}", name)
    if w.dim() != 2:
        raise BadInputError(f"expected a 2-D weight, got {w.dim()}-D shape {tuple(w.shape)}", name)
    if w.dtype not in _FLOAT_INPUTS:
        raise BadInputError(
            f"expected a float32/bfloat16/float16 weight, got {w.dtype}"
            + (" (already quantized?)" if w.dtype in (torch.float8_e4m3fn, torch.float8_e5m2) else ""),
            name,
        )
    if w.is_meta:
        raise BadInputError("meta tensor has no data to quantize", name)


def first_non_finite(w: torch.Tensor, block: tuple[int, int]):
    bad = ~torch.isfinite(w)
    if not bool(bad.any()):
        return None
    r, c = (int(i) for i in bad.nonzero()[0])
    return (r // block[0], c // block[1]), (r, c), float(w[r, c])


def _pad(x: torch.Tensor, recipe: Recipe) -> torch.Tensor:
    m, n = x.shape
    bm, bn = recipe.block
    if recipe.padding == "none":
        if m % bm or n % bn:
            raise ValueError(f"shape {tuple(x.shape)} is not a multiple of the block {recipe.block}")
        return x
    pm, pn = math.ceil(m / bm) * bm, math.ceil(n / bn) * bn
    if recipe.padding == "zero":
        padded = torch.zeros((pm, pn), dtype=x.dtype, device=x.device)
        padded[:m, :n] = x
        return padded
    # "edge": NeMo-RL pads only when needed, with a constant equal to the last element
    if (pm, pn) == (m, n):
        return x
    return torch.nn.functional.pad(x, (0, pn - n, 0, pm - m), mode="constant", value=float(x[-1, -1]))


def scales_for_amax(amax: torch.Tensor, r: Recipe, in_dtype=torch.float32,
                    descale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(multiplier-or-divisor used on elements, stored scale_inv), both float32 [Mb, Nb, 1, 1].

    Python-scalar / tensor is evaluated by torch as tensor.reciprocal() * scalar (two roundings);
    the real implementations write `448.0 / amax` and `1.0 / sf`, so the same expressions are kept.
    `descale`, when given, is amax / MAX already evaluated in the input dtype (scale_compute_dtype).
    """
    if r.scale_form in ("descale", "descale_rcp"):
        sf = _descale(amax, r, descale)
        # vLLM's native activation path floors the scale before UE8M0 rounding: its golden
        # zero group stores 2**-17 = ceil_pow2(1/(448*512)), not the floor itself.
        if r.scale_min is not None:
            sf = sf.clamp(min=r.scale_min)
        if r.pow2 == "float_ceil":
            sf = fmt.ue8m0_ceil_float(sf)
        elif r.pow2 == "float_ceil_exp2":
            sf = fmt.ue8m0_ceil_float_exp2(sf)
        elif r.pow2 == "bits_ceil":
            sf = fmt.ue8m0_ceil_bits(sf)
        elif r.pow2 == "nemo_e8m0":
            sf = torch.reciprocal(fmt.ue8m0_nemo_scale(sf))
        elif r.pow2 == "te_frexp":
            sf = torch.reciprocal(fmt.pow2_floor_frexp(fmt.E4M3_MAX / amax))
        elif r.pow2 == "mx_e8m0":
            sf = fmt.mx_e8m0_scale(sf)
        elif r.pow2 == "te_e8m0":
            sf = fmt.te_e8m0_scale(sf)
        if r.quantize_op == "mul_reciprocal":
            return 1.0 / sf, sf
        if r.quantize_op == "div":
            return sf, sf
        return fmt.E4M3_MAX / amax, sf  # mul_scale with a descale store: s = MAX / amax
    # scale forms: compute the multiplier s first, store reciprocal(s)
    if r.pow2 == "nemo_e8m0":
        s = fmt.ue8m0_nemo_scale(amax / fmt.E4M3_MAX)
    else:
        if r.scale_form == "scale_f64":
            s = (fmt.E4M3_MAX / amax.double()).float()
        elif r.scale_form == "scale_div":
            s = torch.div(fmt.E4M3_MAX, amax)
        else:
            s = fmt.E4M3_MAX / amax
        if r.inf_scale == "fmax":
            s = torch.where(s == torch.inf, torch.finfo(torch.float32).max, s)
        elif r.inf_scale == "fmax_input":
            s = torch.where(s == torch.inf, torch.finfo(in_dtype).max, s)
        if r.pow2 == "te_frexp":
            # frexp(0) would give 0.5: TE keeps the non-pow2 answer (0) for an infinite amax.
            s = torch.where(amax == torch.inf, 0.0, fmt.pow2_floor_frexp(s))
        elif r.pow2 == "float_ceil":
            s = torch.reciprocal(fmt.ue8m0_ceil_float(torch.reciprocal(s)))
        elif r.pow2 == "bits_ceil":
            s = torch.reciprocal(fmt.ue8m0_ceil_bits(torch.reciprocal(s)))
        if r.zero_amax_scale_one:
            s = torch.where(amax == 0, 1.0, s)
        if r.inf_scale == "one":
            s = torch.where(amax == torch.inf, 1.0, s)
    return s, torch.reciprocal(s)


def _descale(amax: torch.Tensor, r: Recipe, descale: torch.Tensor | None) -> torch.Tensor:
    if descale is not None:
        return descale
    if r.scale_form == "descale_rcp":  # TE: amax * float32(1/448), one rounding of a rounded constant
        return amax * torch.tensor(fmt.E4M3_MAX_RCP_F32, dtype=torch.float32)
    return amax / fmt.E4M3_MAX


def _quantize_blocks(x: torch.Tensor, r: Recipe):
    m, n = x.shape
    bm, bn = r.block
    padded = _pad(x, r)
    pm, pn = padded.shape
    tiles = padded.reshape(pm // bm, bm, pn // bn, bn).permute(0, 2, 1, 3)  # [Mb, Nb, bm, bn]
    if r.nan_policy == "zero":
        tiles = torch.nan_to_num(tiles.float(), nan=0.0, posinf=fmt.E4M3_MAX, neginf=-fmt.E4M3_MAX)
    amax, descale = _amax(tiles, r)
    factor, scale_inv = scales_for_amax(amax, r, x.dtype, descale)
    if r.quantize_op == "div":
        y = tiles / factor
    else:
        y = tiles * factor
    if r.quantize_dtype == "input":  # torch computes a bf16 op in float32 and rounds once to bf16
        y = y.to(x.dtype)
    if r.add_zero_point:
        y = y + torch.zeros((), dtype=y.dtype)
    if r.clamp:
        y = torch.clamp(y, min=-fmt.E4M3_MAX, max=fmt.E4M3_MAX)
    q = y.to(torch.float8_e4m3fn)
    q = q.permute(0, 2, 1, 3).reshape(pm, pn)[:m, :n]
    if not r.crop_as_view:
        q = q.contiguous()
    if r.scale_dtype == "bfloat16":
        scale_inv = scale_inv.to(torch.bfloat16).float()
    if r.e8m0_byte0_to_1:  # after the codes: only the stored scale moves (NeMo-RL's MXFP8 refit)
        scale_inv = torch.where(scale_inv == 2.0**-127, torch.full_like(scale_inv, 2.0**-126), scale_inv)
    return q, scale_inv.reshape(pm // bm, pn // bn)


def _amax(tiles: torch.Tensor, r: Recipe):
    """(float32 block amax after the floor, descale in the input dtype or None)."""
    mag = tiles.abs()
    if r.nan_policy == "ignore_in_amax":  # fmaxf / std::max(amax, x): a NaN never wins
        mag = torch.where(torch.isnan(mag), torch.zeros_like(mag), mag)
    if r.scale_compute_dtype == "input":
        a = mag.amax(dim=(2, 3), keepdim=True)
        if r.amax_floor is not None:
            a = a.clamp(min=r.amax_floor)
        return a.float(), (a / fmt.E4M3_MAX).float()
    amax = mag.float().amax(dim=(2, 3), keepdim=True)
    if r.amax_floor is not None:
        amax = amax.clamp(min=r.amax_floor)
    return amax, None


def quantize(w: torch.Tensor, recipe="vllm_per_block", name: str | None = None) -> QuantizedTensor:
    """Quantize a 2-D weight (or activation, with a (1, 128) recipe) exactly as `recipe` does."""
    r = get_recipe(recipe)
    validate_input(w, name)
    x = w.float() if r.upcast_input else w
    if r.nan_policy == "raise" and x.numel():
        found = first_non_finite(x, r.block)
        if found:
            raise NonFiniteInputError(name, *found)
    try:
        data, scale_inv = _quantize_blocks(x, r)
    except (RuntimeError, IndexError, ValueError) as exc:
        raise RecipeFailure(r.name, name, exc) from exc
    return QuantizedTensor(data=data, scale_inv=scale_inv, recipe=r)


def dequantize(qt: QuantizedTensor | torch.Tensor, scale_inv: torch.Tensor | None = None,
               block: tuple[int, int] | None = None) -> torch.Tensor:
    """float32 w ~= data * scale_inv, each scale broadcast over its block."""
    if isinstance(qt, QuantizedTensor):
        data, scale_inv, block = qt.data, qt.scale_inv, qt.recipe.block
    else:
        data, block = qt, block or (128, 128)
    m, n = data.shape
    expanded = scale_inv.repeat_interleave(block[0], 0).repeat_interleave(block[1], 1)[:m, :n]
    return data.float() * expanded


def quantize_activation(x: torch.Tensor, recipe="vllm_act_group", name: str | None = None) -> QuantizedTensor:
    """Per-token groups of 1x128 along K; scales (M, K/128) row-major."""
    r = get_recipe(recipe)
    if r.block[0] != 1:
        raise BadInputError(f"activation recipes use (1, G) groups, {r.name} has {r.block}", name)
    return quantize(x, r, name)
