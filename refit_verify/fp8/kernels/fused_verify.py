"""Fused verifier: one kernel reads each weight once and quantizes it with two recipes in registers.

Per 128x128 block it writes the count of differing codes, the first differing element, both
scales' float32 bits, each side's NaN-code count, the largest fp8-step distance between differing
finite codes, and four float32 sums (|w|^2, |w - a|^2, |w - b|^2, |a - b|^2) for the SQNR-style
metrics. Nothing else is written: neither side's codes ever reach memory, so the extra memory is the
per-block table (48 bytes a block, 0.3% of the weight's bytes).

The per-block arithmetic is the quantizer kernels' own (`triton_block._scales`, `grouped._block_codes`),
so each side's codes are those `quantize` gives on the same device (see spec.py);
suites/nightly/test_fused_verify.py checks the counts against the streaming comparison of two
materialised quantizations.

Work table: one row per tensor (element offset from the first tensor, shape, row stride, blocks per
block-row, first block, offset of its last element) and one int32 per block naming its tensor.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import triton
import triton.language as tl

from refit_verify.fp8.kernels.grouped import _block_codes, launch_extra
from refit_verify.fp8.kernels.spec import device_semantics
from refit_verify.fp8.kernels.triton_block import INTERPRET, _scales, _spec
from refit_verify.fp8.presets import get_recipe

TCOLS = 8  # int64 fields per tensor row
ICOLS = 8  # int32 outputs per block: n_diff, first, sbits_a, sbits_b, nan_a, nan_b, max_ulp, 0
FCOLS = 4  # float32 outputs per block: w2, ea2, eb2, eab2
NO_DIFF = 1 << 30


@triton.jit
def _side_amax(x, inside, last, partial, PAD_EDGE: tl.constexpr, NAN_TO_NUM: tl.constexpr, EVEN: tl.constexpr):
    """(values this side quantizes, its block amax as fp32): nan_to_num and NeMo's edge pad applied."""
    xs = x
    lv = last
    if NAN_TO_NUM:
        xs = tl.where(xs != xs, 0.0, xs)
        xs = tl.where(xs == float("inf"), 448.0, tl.where(xs == float("-inf"), -448.0, xs))
        lv = tl.where(lv != lv, 0.0, lv)
        lv = tl.where(lv == float("inf"), 448.0, tl.where(lv == float("-inf"), -448.0, lv))
    bits = tl.max(tl.max(xs.to(tl.int32, bitcast=True) & 0x7FFFFFFF, axis=1), axis=0)
    if PAD_EDGE and not EVEN:
        bits = tl.where(partial, tl.maximum(bits, lv.to(tl.int32, bitcast=True) & 0x7FFFFFFF), bits)
    return xs, bits.to(tl.float32, bitcast=True)


@triton.jit
def _ordered(codes):
    """fp8 steps from zero, signed (sign-magnitude to two's complement), as refit_verify.fp8.format."""
    c = codes.to(tl.int32)
    mag = c & 0x7F
    return tl.where((c & 0x80) != 0, -mag, mag)


@triton.jit
def _dequant(codes, scale_inv):
    v = codes.to(tl.float8e4nv, bitcast=True).to(tl.float32) * scale_inv
    return tl.where((tl.abs(v) < float("inf")) & ((codes & 0x7F) != 0x7F), v, 0.0)


@triton.jit(do_not_specialize=["n_blocks"])
def _fused_verify_kernel(
    x_ptr, ttab_ptr, bmap_ptr, iout_ptr, fout_ptr, n_blocks,
    A_PAD_EDGE: tl.constexpr, A_NAN_TO_NUM: tl.constexpr, A_HAS_FLOOR: tl.constexpr, A_FLOOR: tl.constexpr,
    A_SCALE_FORM: tl.constexpr, A_POW2: tl.constexpr, A_ZERO_ONE: tl.constexpr, A_INF_ONE: tl.constexpr,
    A_INF_FMAX: tl.constexpr, A_QUANT_DIV: tl.constexpr, A_CLAMP: tl.constexpr, A_DIV_RECIP: tl.constexpr,
    A_CAST_NAN: tl.constexpr,
    B_PAD_EDGE: tl.constexpr, B_NAN_TO_NUM: tl.constexpr, B_HAS_FLOOR: tl.constexpr, B_FLOOR: tl.constexpr,
    B_SCALE_FORM: tl.constexpr, B_POW2: tl.constexpr, B_ZERO_ONE: tl.constexpr, B_INF_ONE: tl.constexpr,
    B_INF_FMAX: tl.constexpr, B_QUANT_DIV: tl.constexpr, B_CLAMP: tl.constexpr, B_DIV_RECIP: tl.constexpr,
    B_CAST_NAN: tl.constexpr,
    EVEN: tl.constexpr, METRICS: tl.constexpr, SOFT_CAST: tl.constexpr, FAST_CAST: tl.constexpr,
):
    blk = tl.program_id(0)
    t = tl.load(bmap_ptr + blk).to(tl.int64)
    row = ttab_ptr + t * 8
    x_off = tl.load(row)
    m = tl.load(row + 1)
    n = tl.load(row + 2)
    sx = tl.load(row + 3)
    nbn = tl.load(row + 4)
    local = blk - tl.load(row + 5)
    bi = local // nbn
    bj = local - bi * nbn
    m_rem = m - bi * 128
    n_rem = n - bj * 128
    base = x_ptr + (x_off + bi * 128 * sx + bj * 128)
    r = tl.arange(0, 128)
    c = tl.arange(0, 128)
    off = r[:, None] * sx.to(tl.int32) + c[None, :]  # the host checks 128 * stride < 2**31
    lin = r[:, None] * 128 + c[None, :]
    inside = (r[:, None] < m_rem) & (c[None, :] < n_rem)
    if EVEN:
        x = tl.load(base + off).to(tl.float32)
    else:
        x = tl.load(base + off, mask=inside, other=0.0).to(tl.float32)
    partial = (m_rem < 128) | (n_rem < 128)
    if (A_PAD_EDGE or B_PAD_EDGE) and not EVEN:
        last = tl.load(x_ptr + tl.load(row + 6)).to(tl.float32)
    else:
        last = tl.full([], 0.0, tl.float32)
    xa, amax_a = _side_amax(x, inside, last, partial, A_PAD_EDGE, A_NAN_TO_NUM, EVEN)
    xb, amax_b = _side_amax(x, inside, last, partial, B_PAD_EDGE, B_NAN_TO_NUM, EVEN)
    fa, sa = _scales(amax_a, A_HAS_FLOOR, A_FLOOR, A_SCALE_FORM, A_POW2, A_ZERO_ONE, A_INF_ONE, A_INF_FMAX,
                     A_QUANT_DIV, A_DIV_RECIP)
    fb, sb = _scales(amax_b, B_HAS_FLOOR, B_FLOOR, B_SCALE_FORM, B_POW2, B_ZERO_ONE, B_INF_ONE, B_INF_FMAX,
                     B_QUANT_DIV, B_DIV_RECIP)
    ca = _block_codes(xa, amax_a, fa, A_CAST_NAN, A_CLAMP, A_QUANT_DIV, SOFT_CAST, FAST_CAST)
    cb = _block_codes(xb, amax_b, fb, B_CAST_NAN, B_CLAMP, B_QUANT_DIV, SOFT_CAST, FAST_CAST)
    diff = (ca != cb) & inside
    nan_a = ((ca & 0x7F) == 0x7F) & inside
    nan_b = ((cb & 0x7F) == 0x7F) & inside
    steps = tl.abs(_ordered(ca) - _ordered(cb))
    steps = tl.where(diff & ~nan_a & ~nan_b, steps, 0)
    o = iout_ptr + blk.to(tl.int64) * 8
    tl.store(o, tl.sum(tl.sum(diff.to(tl.int32), axis=1), axis=0))
    tl.store(o + 1, tl.min(tl.min(tl.where(diff, lin, NO_DIFF_C), axis=1), axis=0))
    tl.store(o + 2, sa.to(tl.int32, bitcast=True))
    tl.store(o + 3, sb.to(tl.int32, bitcast=True))
    tl.store(o + 4, tl.sum(tl.sum(nan_a.to(tl.int32), axis=1), axis=0))
    tl.store(o + 5, tl.sum(tl.sum(nan_b.to(tl.int32), axis=1), axis=0))
    tl.store(o + 6, tl.max(tl.max(steps, axis=1), axis=0))
    if METRICS:
        src = tl.where(tl.abs(x) < float("inf"), x, 0.0)
        da = tl.where(inside, _dequant(ca, sa), 0.0)
        db = tl.where(inside, _dequant(cb, sb), 0.0)
        f = fout_ptr + blk.to(tl.int64) * 4
        tl.store(f, tl.sum(tl.sum(src * src, axis=1), axis=0))
        tl.store(f + 1, tl.sum(tl.sum((src - da) * (src - da), axis=1), axis=0))
        tl.store(f + 2, tl.sum(tl.sum((src - db) * (src - db), axis=1), axis=0))
        tl.store(f + 3, tl.sum(tl.sum((da - db) * (da - db), axis=1), axis=0))


NO_DIFF_C = tl.constexpr(NO_DIFF)


def fused_supported(recipe) -> bool:
    from refit_verify.fp8.kernels.spec import UnsupportedRecipe, kernel_spec

    try:
        kernel_spec(recipe, False, False)
        return True
    except UnsupportedRecipe:
        return False


def _tables(tensors):
    """(per-tensor int64 table, per-block tensor ids, block counts, EVEN) on the CPU."""
    x0 = tensors[0]
    es = x0.element_size()
    rows, counts, even = [], [], True
    start = 0
    for x in tensors:
        m, n = x.shape
        if x.stride(1) != 1 or x.stride(0) * 128 >= 2**31:
            raise ValueError(f"fused verifier needs unit column stride and row stride < 2**24, got {x.stride()}")
        off = (x.data_ptr() - x0.data_ptr()) // es
        nbn, nb = math.ceil(n / 128), math.ceil(m / 128) * math.ceil(n / 128)
        rows.append((off, m, n, x.stride(0), nbn, start, off + (m - 1) * x.stride(0) + n - 1, 0))
        counts.append(nb)
        start += nb
        even &= m % 128 == 0 and n % 128 == 0
    bmap = np.repeat(np.arange(len(tensors), dtype=np.int32), counts)
    return torch.tensor(rows, dtype=torch.int64), torch.from_numpy(bmap), counts, even


def fused_block_stats(tensors, recipe_a, recipe_b, metrics: bool = True, semantics=None, num_warps: int = 8,
                      fast_cast: bool = True):
    """Launch the fused verifier over `tensors` (2-D, one dtype, one device).

    Returns (iout (blocks, 8) int32, fout (blocks, 4) float32, counts: blocks per tensor), on the device.
    """
    ra, rb = get_recipe(recipe_a), get_recipe(recipe_b)
    dev = tensors[0].device
    if len({t.dtype for t in tensors}) != 1:
        raise ValueError("fused verifier needs one input dtype per launch")
    sem = semantics or device_semantics(dev)
    spec_a = {f"A_{k}": v for k, v in _spec(ra, sem["div_recip"], sem["cast_nan"]).items()}
    spec_b = {f"B_{k}": v for k, v in _spec(rb, sem["div_recip"], sem["cast_nan"]).items()}
    ttab, bmap, counts, even = _tables(tensors)
    nblk = int(bmap.numel())
    ttab, bmap = ttab.to(dev), bmap.to(dev)
    iout = torch.empty((nblk, ICOLS), dtype=torch.int32, device=dev)
    fout = torch.zeros((nblk, FCOLS), dtype=torch.float32, device=dev)
    _fused_verify_kernel[(nblk,)](tensors[0], ttab, bmap, iout, fout, nblk, **spec_a, **spec_b, EVEN=even,
                                  METRICS=metrics, SOFT_CAST=INTERPRET, FAST_CAST=fast_cast,
                                  num_warps=num_warps, **launch_extra())
    return iout, fout, counts


def verdict_rows(tensors, iout, fout, counts):
    """Per tensor: a dict with the fields of compare.stream.TensorVerdict's counts and sums.

    Blocks of one tensor are contiguous, so every per-tensor figure is a segment reduction.
    """
    ii = iout.cpu().numpy()
    ff = fout.cpu().numpy().astype(np.float64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    n_diff = np.add.reduceat(ii[:, 0].astype(np.int64), starts)
    sdiff = ii[:, 2] != ii[:, 3]
    n_scale = np.add.reduceat(sdiff.astype(np.int64), starts)
    nan_a = np.add.reduceat(ii[:, 4].astype(np.int64), starts)
    nan_b = np.add.reduceat(ii[:, 5].astype(np.int64), starts)
    max_ulp = np.maximum.reduceat(ii[:, 6], starts)
    sums = np.add.reduceat(ff, starts, axis=0)
    out = []
    for k, x in enumerate(tensors):
        m, n = x.shape
        nbn = math.ceil(n / 128)
        s0, s1 = starts[k], starts[k] + counts[k]
        first_el = first_scale = None
        if n_diff[k]:
            idx = np.nonzero(ii[s0:s1, 0])[0]
            loc = ii[s0:s1, 1][idx]
            rows = (idx // nbn) * 128 + loc // 128
            cols = (idx % nbn) * 128 + loc % 128
            j = int(np.argmin(rows.astype(np.int64) * n + cols))
            first_el = (int(rows[j]), int(cols[j]))
        if n_scale[k]:
            b = int(np.nonzero(sdiff[s0:s1])[0][0])
            first_scale = (b // nbn, b % nbn)
        out.append({"n_code_mismatch": int(n_diff[k]), "n_scale_mismatch": int(n_scale[k]),
                    "first_element": first_el, "first_scale_block": first_scale,
                    "max_code_ulp": int(max_ulp[k]), "nan_codes": (int(nan_a[k]), int(nan_b[k])),
                    "sums": tuple(float(v) for v in sums[k])})
    return out
