"""Fused Triton block quantizer: one program per 128x128 block, amax + scale + quantize + store.

Bit-exact with the reference `quantize` on the same device (see spec.py for the two device facts
it is compiled with). Pitfalls handled, each tested on the GPU (suites/nightly/test_triton_exact.py):
- amax through integer max of sign-cleared fp32 bits: NaN > inf > finite as integers, so NaN
  propagates like torch.amax (tl.max on floats drops NaN);
- divisions with tl.math.div_rn (IEEE) — Triton's `/` on fp32 is an approximate division;
- `a / 448` reproduced as torch does it on the device (CUDA: a * fp32(1/448));
- 448 / a reproduced as torch's __rtruediv__ does it: reciprocal(a) * 448, two roundings;
- no FMA contraction (enable_fp_fusion=False; there is no a*b+c in the formulas anyway);
- libdevice log2 without flush-to-zero (enable_reflect_ftz=False), the same log2f torch calls;
  powers of two built from bits (exact, denormals included);
- fp8 cast: hardware RNE (cvt.rn.satfinite) in range, then the overflow rule of the torch
  being matched (torch 2.11: |y| > 464 and inf -> NaN, exactly 464 -> 448 by RNE; or saturation),
  NaN keeps its sign bit like c10.
"""

from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from refit_verify.fp8.kernels.spec import (
    BITS_448, BITS_464, FP32_MAX, RECIP_E4M3_MAX, device_semantics, kernel_spec,
)
from refit_verify.fp8.presets import get_recipe
from refit_verify.fp8.quantize import QuantizedTensor, quantize, validate_input

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _log2(x):
    if INTERP:  # the interpreter has no libdevice; numpy's log2 stands in (CPU checks only)
        return tl.log2(x)
    else:
        return libdevice.log2(x)


@triton.jit
def _exp2(x):
    if INTERP:
        return tl.exp2(x)
    else:
        return libdevice.exp2(x)


@triton.jit
def _recip(x):
    return tl.math.div_rn(1.0, x)


@triton.jit
def _pow2_from_int(k):
    """2**k for integer-valued fp32 k (inf, -inf, NaN pass through as torch.pow(2, k) gives them)."""
    kc = tl.where(k != k, 0.0, tl.minimum(tl.maximum(k, -1000.0), 1000.0)).to(tl.int32)
    normal = (tl.minimum(tl.maximum(kc + 127, 1), 254) << 23).to(tl.float32, bitcast=True)
    sub = (1 << tl.minimum(tl.maximum(kc + 149, 0), 22)).to(tl.float32, bitcast=True)
    out = tl.where(kc >= -126, normal, tl.where(kc >= -149, sub, 0.0))
    out = tl.where(kc > 127, float("inf"), out)
    return tl.where(k != k, k, out)


@triton.jit
def _div448(a, DIV_RECIP: tl.constexpr):
    if DIV_RECIP:
        return a * RECIP_448
    else:
        return tl.math.div_rn(a, 448.0)


@triton.jit
def block_scales(amax, HAS_FLOOR: tl.constexpr, FLOOR: tl.constexpr, SCALE_FORM: tl.constexpr,
            POW2: tl.constexpr, ZERO_ONE: tl.constexpr, INF_ONE: tl.constexpr, INF_FMAX: tl.constexpr,
            QUANT_DIV: tl.constexpr, DIV_RECIP: tl.constexpr):
    """(factor, scale_inv) for one block, in the reference's op order (quantize.scales_for_amax)."""
    a = amax
    if HAS_FLOOR:
        a = tl.where(a != a, a, tl.maximum(a, FLOOR))
    if SCALE_FORM == 0:
        sf = _div448(a, DIV_RECIP)
        if POW2 == 1:  # vLLM: 2 ** ceil(log2(sf)) with the same log2f torch uses
            k = tl.math.ceil(_log2(tl.abs(sf)))
            sf = tl.where((sf == sf) & (tl.abs(sf) != float("inf")), _pow2_from_int(k), sf)
        elif POW2 == 2:  # DeepGEMM: exponent bits, +1 if any mantissa bit, clamp [1, 254]
            b = tl.abs(sf).to(tl.int32, bitcast=True)
            e = ((b >> 23) & 0xFF) + ((b & 0x7FFFFF) != 0).to(tl.int32)
            sf = (tl.minimum(tl.maximum(e, 1), 254) << 23).to(tl.float32, bitcast=True)
        if QUANT_DIV:
            factor = sf
        else:
            factor = _recip(sf)
        scale_inv = sf
    else:
        if POW2 == 3:  # NeMo: biased exponent in a uint8; NaN casts to 0 there, meaning s = 1
            e = tl.minimum(tl.maximum(tl.math.ceil(_log2(_div448(a, DIV_RECIP))), -127.0), 127.0) + 127.0
            e = tl.where(e != e, 0.0, e)
            # torch.exp2 here, not a bit-built power of two: on CUDA exp2f(-127) returns
            # 2**-127 - 2**-149 (measured, H100 torch 2.11), and the stored scale shows it
            s = tl.where(e == 0.0, 1.0, _exp2(127.0 - e))
        else:
            if SCALE_FORM == 2:  # torchao: (448 / a) in float64, then float32
                # div_rn is fp32-only; fp64 `/` lowers to div.rn.f64 (there is no approximate one)
                s = ((1.0 / a.to(tl.float64)) * 448.0).to(tl.float32)
            else:  # torch's 448 / a is reciprocal(a) * 448: two roundings
                s = _recip(a) * 448.0
            if INF_FMAX:
                s = tl.where(s == float("inf"), FP32_MAX_C, s)
            if ZERO_ONE:
                s = tl.where(a == 0.0, 1.0, s)
            if INF_ONE:
                s = tl.where(a == float("inf"), 1.0, s)
        factor = s
        scale_inv = _recip(s)
    return factor, scale_inv


@triton.jit
def cast_e4m3(y, CAST_NAN: tl.constexpr, SOFT_CAST: tl.constexpr):
    bits = y.to(tl.int32, bitcast=True)
    sign = (bits >> 24) & 0x80
    mag = bits & 0x7FFFFFFF
    if SOFT_CAST:
        # RNE in integer arithmetic (normal range) and by one fp32 add (subnormals: adding 2**14
        # leaves exactly the 2**-9 grid), valid below 464; the fix-ups below handle the rest.
        odd = (mag >> 20) & 1
        normal = ((mag + 0x7FFFF + odd) - (120 << 23)) >> 20
        sub = (tl.abs(y) + 16384.0).to(tl.int32, bitcast=True) - 0x46800000
        q = tl.where(mag < 0x3C800000, sub, normal) | sign
    else:
        q = y.to(tl.float8e4nv, fp_downcast_rounding="rtne").to(tl.uint8, bitcast=True).to(tl.int32)
    nan = mag > 0x7F800000
    if CAST_NAN:
        q = tl.where((mag > BITS_464_C) | nan, sign | 0x7F, q)
    else:
        q = tl.where(nan, sign | 0x7F, tl.where(mag > BITS_448_C, sign | 0x7E, q))
    return q.to(tl.uint8)


@triton.jit
def _load_tile(x_ptr, rows, cols, M, N, stride_xm, EVEN: tl.constexpr, BIG: tl.constexpr):
    if BIG:
        off = rows[:, None].to(tl.int64) * stride_xm + cols[None, :]
    else:
        off = rows[:, None] * stride_xm + cols[None, :]
    if EVEN:
        x = tl.load(x_ptr + off)
    else:
        x = tl.load(x_ptr + off, mask=(rows[:, None] < M) & (cols[None, :] < N), other=0.0)
    return x.to(tl.float32)


# Shapes are not specialized (one compile per recipe and dtype, not per shape); the row stride is,
# so that 16-byte aligned rows keep their vector loads.
@triton.jit(do_not_specialize=["M", "N", "NB_N", "LAST_OFF"])
def _block_quant_kernel(
    x_ptr, q_ptr, s_ptr, M, N, stride_xm, stride_qm, NB_N, LAST_OFF,
    PAD_EDGE: tl.constexpr, NAN_TO_NUM: tl.constexpr, HAS_FLOOR: tl.constexpr, FLOOR: tl.constexpr,
    SCALE_FORM: tl.constexpr, POW2: tl.constexpr, ZERO_ONE: tl.constexpr, INF_ONE: tl.constexpr,
    INF_FMAX: tl.constexpr, QUANT_DIV: tl.constexpr, CLAMP: tl.constexpr, DIV_RECIP: tl.constexpr,
    CAST_NAN: tl.constexpr, SOFT_CAST: tl.constexpr, FLOAT_AMAX: tl.constexpr, EVEN: tl.constexpr,
    BIG: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, SUB_M: tl.constexpr,
):
    pid = tl.program_id(0)
    bi = pid // NB_N
    bj = pid % NB_N
    cols = bj * BN + tl.arange(0, BN)
    if PAD_EDGE:
        last = tl.load(x_ptr + LAST_OFF).to(tl.float32)
    # SUB_M == BM: the block stays in registers (one read). SUB_M < BM: two passes over row
    # slices, the second read hitting L2 — fewer registers, more programs in flight.
    for r0 in tl.static_range(0, BM, SUB_M):
        rows = bi * BM + r0 + tl.arange(0, SUB_M)
        x = _load_tile(x_ptr, rows, cols, M, N, stride_xm, EVEN, BIG)
        if PAD_EDGE and not EVEN:
            x = tl.where((rows[:, None] < M) & (cols[None, :] < N), x, last)
        if NAN_TO_NUM:
            x = tl.where(x != x, 0.0, x)
            x = tl.where(x == float("inf"), 448.0, tl.where(x == float("-inf"), -448.0, x))
        if FLOAT_AMAX:  # the naive float max: drops NaN (kept only as a self-test mutant)
            part = tl.max(tl.max(tl.abs(x), axis=1), axis=0).to(tl.int32, bitcast=True)
        else:
            bits = x.to(tl.int32, bitcast=True) & 0x7FFFFFFF
            part = tl.max(tl.max(bits, axis=1), axis=0)
        if r0 == 0:  # r0 is a compile-time constant: the first slice starts the running max
            amax_bits = part
        else:
            amax_bits = tl.maximum(amax_bits, part)
    amax = amax_bits.to(tl.float32, bitcast=True)
    factor, scale_inv = block_scales(amax, HAS_FLOOR, FLOOR, SCALE_FORM, POW2, ZERO_ONE, INF_ONE, INF_FMAX,
                                QUANT_DIV, DIV_RECIP)
    for r0 in tl.static_range(0, BM, SUB_M):
        rows = bi * BM + r0 + tl.arange(0, SUB_M)
        if SUB_M < BM:
            x = _load_tile(x_ptr, rows, cols, M, N, stride_xm, EVEN, BIG)
            if NAN_TO_NUM:
                x = tl.where(x != x, 0.0, x)
                x = tl.where(x == float("inf"), 448.0, tl.where(x == float("-inf"), -448.0, x))
        if QUANT_DIV:
            y = tl.math.div_rn(x, factor)
        else:
            y = x * factor
        if CLAMP:
            y = tl.where(y != y, y, tl.minimum(tl.maximum(y, -448.0), 448.0))
        codes = cast_e4m3(y, CAST_NAN, SOFT_CAST)
        if BIG:
            qoff = rows[:, None].to(tl.int64) * stride_qm + cols[None, :]
        else:
            qoff = rows[:, None] * stride_qm + cols[None, :]
        if EVEN:
            tl.store(q_ptr + qoff, codes)
        else:
            tl.store(q_ptr + qoff, codes, mask=(rows[:, None] < M) & (cols[None, :] < N))
    tl.store(s_ptr + pid, scale_inv)


# Module-level constants the jitted functions read (Triton captures globals as constexprs).
INTERP = tl.constexpr(INTERPRET)
RECIP_448 = tl.constexpr(RECIP_E4M3_MAX)
FP32_MAX_C = tl.constexpr(FP32_MAX)
BITS_464_C = tl.constexpr(BITS_464)
BITS_448_C = tl.constexpr(BITS_448)

_SPECS: dict = {}


def clear_spec_cache() -> None:
    """Forget the kernel constexprs built per (recipe, semantics)."""
    _SPECS.clear()


def spec_constexprs(r, div_recip, cast_nan):
    key = (r, div_recip, cast_nan)
    if key not in _SPECS:
        _SPECS[key] = kernel_spec(r, div_recip, cast_nan).constexprs()
    return _SPECS[key]


DEFAULT_LAUNCH = {"num_warps": 8, "sub_m": 128, "soft_cast": False, "float_amax": False}


def quantize_triton(w: torch.Tensor, recipe="vllm_per_block", name: str | None = None, *,
                    semantics: dict | None = None, num_warps: int | None = None,
                    sub_m: int | None = None, soft_cast: bool | None = None, out=None) -> QuantizedTensor:
    """Same contract as `refit_verify.fp8.quantize.quantize`, for the recipes in SUPPORTED_RECIPES.

    `semantics` overrides the device facts (default: measured on w.device, see spec.py).
    `out=(data, scale_inv)` writes into preallocated buffers (streaming verifier, bench).
    """
    r = get_recipe(recipe)
    validate_input(w, name)
    sem = semantics or device_semantics(w.device)
    spec = spec_constexprs(r, sem["div_recip"], sem["cast_nan"])
    m, n = w.shape
    if m == 0 or n == 0:  # the reference's own behaviour (some recipes fail there, as upstream)
        return quantize(w, r, name)
    x = w if w.stride(1) == 1 else w.contiguous()
    mb, nb = math.ceil(m / 128), math.ceil(n / 128)
    if out is not None:
        data, scale_inv = out
    elif r.crop_as_view and (m % 128 or n % 128):
        # the reference returns the crop of its padded result: same values, same strides
        data = torch.empty((mb * 128, nb * 128), dtype=torch.float8_e4m3fn, device=w.device)[:m, :n]
        scale_inv = torch.empty((mb, nb), dtype=torch.float32, device=w.device)
    else:
        data = torch.empty((m, n), dtype=torch.float8_e4m3fn, device=w.device)
        scale_inv = torch.empty((mb, nb), dtype=torch.float32, device=w.device)
    launch = dict(DEFAULT_LAUNCH)
    if r.padding == "edge":
        # H100, graph replay: nemo_rl 79.7% of copy bandwidth at 8 warps, 81.8% at 16 (docs/GPU_NOTES.md)
        launch["num_warps"] = 16
    if num_warps:
        launch["num_warps"] = num_warps
    if sub_m:
        launch["sub_m"] = sub_m
    if soft_cast is not None:
        launch["soft_cast"] = soft_cast
    if INTERPRET:  # the interpreter's own fp8 conversion is not RNE; use the integer cast
        launch["soft_cast"] = True
    extra = {} if INTERPRET else {"enable_fp_fusion": False, "enable_reflect_ftz": False}
    _block_quant_kernel[(mb * nb,)](
        x, data.view(torch.uint8), scale_inv, m, n, x.stride(0), data.stride(0), nb,
        (m - 1) * x.stride(0) + (n - 1),
        **spec, BM=128, BN=128, SUB_M=launch["sub_m"], SOFT_CAST=launch["soft_cast"],
        FLOAT_AMAX=launch["float_amax"], EVEN=(m % 128 == 0 and n % 128 == 0),
        BIG=max(x.stride(0) * mb * 128, data.stride(0) * mb * 128) >= 2**31, num_warps=launch["num_warps"], **extra,
    )
    return QuantizedTensor(data=data, scale_inv=scale_inv, recipe=r)


# ---- probes: the kernel's own helpers applied elementwise, for exhaustive tests on the GPU ----

@triton.jit
def _scales_probe_kernel(a_ptr, f_ptr, s_ptr, n, HAS_FLOOR: tl.constexpr, FLOOR: tl.constexpr,
                         SCALE_FORM: tl.constexpr, POW2: tl.constexpr, ZERO_ONE: tl.constexpr,
                         INF_ONE: tl.constexpr, INF_FMAX: tl.constexpr, QUANT_DIV: tl.constexpr,
                         DIV_RECIP: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    a = tl.load(a_ptr + offs, mask=m, other=0.0)
    f, s = block_scales(a, HAS_FLOOR, FLOOR, SCALE_FORM, POW2, ZERO_ONE, INF_ONE, INF_FMAX, QUANT_DIV, DIV_RECIP)
    tl.store(f_ptr + offs, f, mask=m)
    tl.store(s_ptr + offs, s, mask=m)


@triton.jit
def _cast_probe_kernel(y_ptr, q_ptr, n, CAST_NAN: tl.constexpr, SOFT_CAST: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    y = tl.load(y_ptr + offs, mask=m, other=0.0)
    tl.store(q_ptr + offs, cast_e4m3(y, CAST_NAN, SOFT_CAST), mask=m)


def _extra():
    return {} if INTERPRET else {"enable_fp_fusion": False, "enable_reflect_ftz": False}


def probe_scales(amax: torch.Tensor, recipe, semantics: dict | None = None):
    """(factor, scale_inv) the kernel computes for each fp32 amax value."""
    sem = semantics or device_semantics(amax.device)
    c = kernel_spec(recipe, sem["div_recip"], sem["cast_nan"]).constexprs()
    keep = ("HAS_FLOOR", "FLOOR", "SCALE_FORM", "POW2", "ZERO_ONE", "INF_ONE", "INF_FMAX", "QUANT_DIV", "DIV_RECIP")
    a = amax.float().contiguous().view(-1)
    f, s = torch.empty_like(a), torch.empty_like(a)
    _scales_probe_kernel[(triton.cdiv(a.numel(), 1024),)](a, f, s, a.numel(), **{k: c[k] for k in keep},
                                                          BLOCK=1024, **_extra())
    return f.view(amax.shape), s.view(amax.shape)


def probe_cast(y: torch.Tensor, cast_nan: bool, soft_cast: bool = False) -> torch.Tensor:
    """The kernel's fp32 -> e4m3fn codes for each value."""
    v = y.float().contiguous().view(-1)
    q = torch.empty(v.shape, dtype=torch.uint8, device=v.device)
    _cast_probe_kernel[(triton.cdiv(v.numel(), 1024),)](v, q, v.numel(), CAST_NAN=cast_nan,
                                                        SOFT_CAST=soft_cast or INTERPRET, BLOCK=1024, **_extra())
    return q.view(y.shape)
