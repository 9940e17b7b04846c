"""The fused kernel's arithmetic, block by block, in plain torch (runs anywhere, no triton).

This is the kernel's specification made executable: same op order, same NaN handling through
integer bit patterns, same cast fix-ups. It is tested bit-exact against the reference on CPU
(suites/pr) and the Triton kernel is tested against the reference on the GPU (suites/nightly),
so a divergence shows up on whichever side moved. Slow by design: one block at a time is not
needed, whole-tensor ops on [Mb, Nb, 128, 128] tiles give the same values.
"""

from __future__ import annotations

import math

import torch

from refit_verify.fp8.kernels.spec import (
    BITS_448, BITS_464, E4M3_MAX, FP32_MAX, RECIP_E4M3_MAX, KernelSpec, device_semantics, kernel_spec,
)
from refit_verify.fp8.quantize import QuantizedTensor, validate_input
from refit_verify.fp8.presets import get_recipe


def _f(v: float, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(v, dtype=torch.float32, device=like.device)


def recip(x: torch.Tensor) -> torch.Tensor:
    """1/x rounded once (the kernel's div_rn(1, x); torch.reciprocal is correctly rounded too)."""
    return torch.ones_like(x) / x


def amax_bits(tiles: torch.Tensor) -> torch.Tensor:
    """max |x| over the last two dims via integer compare of the sign-cleared fp32 bits.

    Every NaN pattern is larger than inf as an integer, so NaN propagates the way torch.amax
    propagates it; a float max reduction (Triton's tl.max) would drop it.
    """
    bits = tiles.float().contiguous().view(torch.int32) & 0x7FFFFFFF
    return bits.amax(dim=(-2, -1), keepdim=True).view(torch.float32)


def div448(a: torch.Tensor, spec: KernelSpec) -> torch.Tensor:
    if spec.div_recip:
        return a * _f(RECIP_E4M3_MAX, a)
    return a / _f(E4M3_MAX, a).expand_as(a)


def pow2_from_int(k: torch.Tensor) -> torch.Tensor:
    """2**k for integer-valued float k, built from bits (exact; denormals and inf included)."""
    ki = torch.nan_to_num(k, nan=0.0, posinf=1000.0, neginf=-1000.0).clamp(-1000, 1000).to(torch.int32)
    normal = ((ki + 127).clamp(1, 254) << 23).view(torch.float32)
    sub = (torch.ones_like(ki) << (ki + 149).clamp(0, 22)).view(torch.float32)
    out = torch.where(ki >= -126, normal, torch.where(ki >= -149, sub, torch.zeros_like(normal)))
    out = torch.where(ki > 127, torch.full_like(out, math.inf), out)
    return torch.where(torch.isnan(k), k, out)


def ceil_log2_float(s: torch.Tensor) -> torch.Tensor:
    return torch.ceil(torch.log2(s.abs()))


def ceil_pow2_bits(s: torch.Tensor) -> torch.Tensor:
    bits = s.abs().float().contiguous().view(torch.int32)
    e = ((bits >> 23) & 0xFF) + ((bits & 0x7FFFFF) != 0).int()
    return (e.clamp(1, 254) << 23).view(torch.float32)


def nemo_multiplier(descale: torch.Tensor) -> torch.Tensor:
    """NeMo's uint8 biased exponent: NaN casts to 0 there (GPU cvt), which means s = 1."""
    e = torch.ceil(torch.log2(descale)).clamp(-127, 127) + 127
    e = torch.where(torch.isnan(e), torch.zeros_like(e), e)
    return torch.where(e == 0, torch.ones_like(e), torch.exp2(127 - e))  # exp2 as torch calls it


def scales(amax: torch.Tensor, spec: KernelSpec):
    """(factor applied to elements, stored scale_inv) from the block amax, kernel op order."""
    a = amax
    if spec.has_floor:  # clamp(min=floor) that lets NaN through
        a = torch.where(torch.isnan(a), a, torch.maximum(a, _f(spec.floor, a)))
    if spec.scale_form == 0:
        sf = div448(a, spec)
        if spec.pow2 == 1:
            sf = torch.where(torch.isfinite(sf), pow2_from_int(ceil_log2_float(sf)), sf)
        elif spec.pow2 == 2:
            sf = ceil_pow2_bits(sf)
        return (sf, sf) if spec.quant_div else (recip(sf), sf)
    if spec.pow2 == 3:
        s = nemo_multiplier(div448(a, spec))
    else:
        if spec.scale_form == 2:
            s = (recip(a.double()) * E4M3_MAX).float()
        else:
            s = recip(a) * _f(E4M3_MAX, a)
        if spec.inf_fmax:
            s = torch.where(s == math.inf, _f(FP32_MAX, s), s)
        if spec.zero_one:
            s = torch.where(a == 0, torch.ones_like(s), s)
        if spec.inf_one:
            s = torch.where(a == math.inf, torch.ones_like(s), s)
    return s, recip(s)


def cast_e4m3_codes(y: torch.Tensor, cast_nan: bool) -> torch.Tensor:
    """fp32 -> e4m3fn codes: RNE in range, then the overflow rule of the torch being matched."""
    codes = y.clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn).view(torch.uint8)
    bits = y.contiguous().view(torch.int32)
    sign = ((bits >> 24) & 0x80).to(torch.uint8)
    mag = bits & 0x7FFFFFFF
    nan = mag > 0x7F800000
    over = mag > BITS_464  # exactly 464 is a tie that RNE sends to 448
    if cast_nan:
        codes = torch.where(over | nan, sign | 0x7F, codes)
    else:
        codes = torch.where(nan, sign | 0x7F, torch.where(mag > BITS_448, sign | 0x7E, codes))
    return codes


def quantize_emulated(w: torch.Tensor, recipe, name=None, semantics: dict | None = None) -> QuantizedTensor:
    r = get_recipe(recipe)
    validate_input(w, name)
    sem = semantics or device_semantics(w.device)
    spec = kernel_spec(r, sem["div_recip"], sem["cast_nan"])
    m, n = w.shape
    mb, nb = math.ceil(m / 128), math.ceil(n / 128)
    x = torch.zeros(mb * 128, nb * 128, dtype=torch.float32, device=w.device)
    if spec.pad_edge:
        x.fill_(float(w[-1, -1]))
    x[:m, :n] = w.float()
    tiles = x.reshape(mb, 128, nb, 128).permute(0, 2, 1, 3)
    if spec.nan_to_num:
        tiles = torch.nan_to_num(tiles, nan=0.0, posinf=E4M3_MAX, neginf=-E4M3_MAX)
    factor, scale_inv = scales(amax_bits(tiles), spec)
    y = tiles / factor if spec.quant_div else tiles * factor
    if spec.clamp:
        y = torch.where(torch.isnan(y), y, y.clamp(-E4M3_MAX, E4M3_MAX))
    codes = cast_e4m3_codes(y, spec.cast_nan)
    codes = codes.permute(0, 2, 1, 3).reshape(mb * 128, nb * 128)[:m, :n].contiguous()
    return QuantizedTensor(codes.view(torch.float8_e4m3fn), scale_inv.reshape(mb, nb).contiguous(), r)
