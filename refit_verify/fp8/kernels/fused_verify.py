"""Fused verifier: one kernel reads each weight once and quantizes it with two recipes in registers.

Per 128x128 block it writes the count of differing codes, the first differing element, both
scales' float32 bits, each side's NaN-code count, the largest fp8-step distance between differing
finite codes, and four float32 sums (|w|^2, |w - a|^2, |w - b|^2, |a - b|^2) for the SQNR-style
metrics. Nothing else is written: neither side's codes ever reach memory, so the extra memory is the
per-block table (48 bytes a block, 0.3% of the weight's bytes).

The per-block arithmetic is the quantizer kernels' own (`triton_block.block_scales`, `grouped._block_codes`),
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

from refit_verify.fp8.kernels.grouped import cast_bare, launch_extra
from refit_verify.fp8.kernels.spec import device_semantics
from refit_verify.fp8.kernels.triton_block import BITS_448_C, INTERPRET, cast_e4m3, block_scales, spec_constexprs
from refit_verify.fp8.presets import get_recipe

TCOLS = 8  # int64 fields per tensor row
ICOLS = 8  # int32 outputs per block: n_diff, first, sbits_a, sbits_b, nan_a, nan_b, max_ulp, 0
FCOLS = 4  # float32 outputs per block: w2, ea2, eb2, eab2
NO_DIFF = 1 << 30


@triton.jit
def _amax_bits(bits, NAN_TO_NUM: tl.constexpr):
    """Largest sign-cleared fp32 pattern (NaN > inf > finite); under nan_to_num NaN counts as 0 and
    inf as 448, in integer form, so the amax is that of the values the recipe quantizes."""
    if NAN_TO_NUM:
        bits = tl.where(bits > 0x7F800000, 0, tl.where(bits == 0x7F800000, BITS_448_C, bits))
    return tl.max(tl.max(bits, axis=1), axis=0)


@triton.jit
def _side_scale(amax, last_bits, partial, PAD_EDGE: tl.constexpr, NAN_TO_NUM: tl.constexpr, EVEN: tl.constexpr):
    """A recipe's block amax (fp32) from its in-tensor amax pattern and NeMo's edge pad value."""
    if PAD_EDGE and not EVEN:
        lb = last_bits
        if NAN_TO_NUM:
            lb = tl.where(lb > 0x7F800000, 0, tl.where(lb == 0x7F800000, BITS_448_C, lb))
        amax = tl.where(partial, tl.maximum(amax, lb), amax)
    return amax.to(tl.float32, bitcast=True)


@triton.jit
def _nan_to_num(x, NAN_TO_NUM: tl.constexpr):
    if NAN_TO_NUM:
        x = tl.where(x != x, 0.0, x)
        x = tl.where(x == float("inf"), 448.0, tl.where(x == float("-inf"), -448.0, x))
    return x


@triton.jit
def _codes(x, factor, CAST_NAN: tl.constexpr, CLAMP: tl.constexpr, QUANT_DIV: tl.constexpr,
           SOFT_CAST: tl.constexpr, FULL: tl.constexpr):
    if QUANT_DIV:
        y = tl.math.div_rn(x, factor)
    else:
        y = x * factor
    if FULL:
        if CLAMP:
            y = tl.where(y != y, y, tl.minimum(tl.maximum(y, -448.0), 448.0))
        return cast_e4m3(y, CAST_NAN, SOFT_CAST)
    else:
        return cast_bare(y, SOFT_CAST)


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
    SUB: tl.constexpr, ALIGNED: tl.constexpr,
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
    if ALIGNED:  # 16-element multiples (checked on the host): 16-byte vector loads
        x_off = tl.multiple_of(x_off, 16)
        sx = tl.multiple_of(sx, 16)
    base = x_ptr + (x_off + bi * 128 * sx + bj * 128)
    sx32 = sx.to(tl.int32)  # the host checks 128 * stride < 2**31
    if ALIGNED:
        sx32 = tl.multiple_of(sx32, 16)
    c = tl.arange(0, 128)
    # pass 1, SUB rows at a time (few registers: no spills): each side's amax from fp32 patterns
    bits_a = tl.full([], 0, tl.int32)
    bits_b = tl.full([], 0, tl.int32)
    for r0 in tl.static_range(0, 128, SUB):
        r = r0 + tl.arange(0, SUB)
        offs = r[:, None] * sx32 + c[None, :]
        if EVEN:
            xt = tl.load(base + offs)
        else:
            xt = tl.load(base + offs, mask=(r[:, None] < m_rem) & (c[None, :] < n_rem), other=0.0)
        bt = xt.to(tl.float32).to(tl.int32, bitcast=True) & 0x7FFFFFFF
        bits_a = tl.maximum(bits_a, _amax_bits(bt, A_NAN_TO_NUM))
        if A_NAN_TO_NUM != B_NAN_TO_NUM:
            bits_b = tl.maximum(bits_b, _amax_bits(bt, B_NAN_TO_NUM))
    if A_NAN_TO_NUM == B_NAN_TO_NUM:
        bits_b = bits_a
    partial = (m_rem < 128) | (n_rem < 128)
    if (A_PAD_EDGE or B_PAD_EDGE) and not EVEN:
        last_bits = tl.load(x_ptr + tl.load(row + 6)).to(tl.float32).to(tl.int32, bitcast=True) & 0x7FFFFFFF
    else:
        last_bits = tl.full([], 0, tl.int32)
    amax_a = _side_scale(bits_a, last_bits, partial, A_PAD_EDGE, A_NAN_TO_NUM, EVEN)
    amax_b = _side_scale(bits_b, last_bits, partial, B_PAD_EDGE, B_NAN_TO_NUM, EVEN)
    fa, sa = block_scales(amax_a, A_HAS_FLOOR, A_FLOOR, A_SCALE_FORM, A_POW2, A_ZERO_ONE, A_INF_ONE, A_INF_FMAX,
                     A_QUANT_DIV, A_DIV_RECIP)
    fb, sb = block_scales(amax_b, B_HAS_FLOOR, B_FLOOR, B_SCALE_FORM, B_POW2, B_ZERO_ONE, B_INF_ONE, B_INF_FMAX,
                     B_QUANT_DIV, B_DIV_RECIP)
    o = iout_ptr + blk.to(tl.int64) * 8
    tl.store(o + 2, sa.to(tl.int32, bitcast=True))
    tl.store(o + 3, sb.to(tl.int32, bitcast=True))
    # a block whose largest scaled magnitude is finite and <= 464 on both sides needs no cast fix-up
    # (grouped._block_codes explains why); the others take the full rule
    if A_QUANT_DIV:
        top_a = tl.math.div_rn(amax_a, fa)
    else:
        top_a = amax_a * fa
    if B_QUANT_DIV:
        top_b = tl.math.div_rn(amax_b, fb)
    else:
        top_b = amax_b * fb
    safe = (top_a <= 464.0) & (tl.abs(fa) < float("inf")) & (top_b <= 464.0) & (tl.abs(fb) < float("inf"))
    if FAST_CAST:
        if safe:
            _compare_pass(base, sx32, m_rem, n_rem, fa, sa, fb, sb, o, fout_ptr + blk.to(tl.int64) * 4,
                          A_NAN_TO_NUM, A_CAST_NAN, A_CLAMP, A_QUANT_DIV, B_NAN_TO_NUM, B_CAST_NAN, B_CLAMP,
                          B_QUANT_DIV, EVEN, METRICS, SOFT_CAST, False, SUB)
        else:
            _compare_pass(base, sx32, m_rem, n_rem, fa, sa, fb, sb, o, fout_ptr + blk.to(tl.int64) * 4,
                          A_NAN_TO_NUM, A_CAST_NAN, A_CLAMP, A_QUANT_DIV, B_NAN_TO_NUM, B_CAST_NAN, B_CLAMP,
                          B_QUANT_DIV, EVEN, METRICS, SOFT_CAST, True, SUB)
    else:
        _compare_pass(base, sx32, m_rem, n_rem, fa, sa, fb, sb, o, fout_ptr + blk.to(tl.int64) * 4,
                      A_NAN_TO_NUM, A_CAST_NAN, A_CLAMP, A_QUANT_DIV, B_NAN_TO_NUM, B_CAST_NAN, B_CLAMP,
                      B_QUANT_DIV, EVEN, METRICS, SOFT_CAST, True, SUB)


@triton.jit
def _compare_pass(base, sx32, m_rem, n_rem, fa, sa, fb, sb, o, f,
                  A_NAN_TO_NUM: tl.constexpr, A_CAST_NAN: tl.constexpr, A_CLAMP: tl.constexpr,
                  A_QUANT_DIV: tl.constexpr, B_NAN_TO_NUM: tl.constexpr, B_CAST_NAN: tl.constexpr,
                  B_CLAMP: tl.constexpr, B_QUANT_DIV: tl.constexpr, EVEN: tl.constexpr, METRICS: tl.constexpr,
                  SOFT_CAST: tl.constexpr, FULL: tl.constexpr, SUB: tl.constexpr):
    """Pass 2, SUB rows at a time (the block comes back from L2): both sides' codes, compared."""
    c = tl.arange(0, 128)
    n_diff = tl.full([], 0, tl.int32)
    first = tl.full([], NO_DIFF_C, tl.int32)
    nan_a = tl.full([], 0, tl.int32)
    nan_b = tl.full([], 0, tl.int32)
    steps_max = tl.full([], 0, tl.int32)
    w2 = tl.full([], 0.0, tl.float32)
    ea2 = tl.full([], 0.0, tl.float32)
    eb2 = tl.full([], 0.0, tl.float32)
    eab2 = tl.full([], 0.0, tl.float32)
    for r0 in tl.static_range(0, 128, SUB):
        r = r0 + tl.arange(0, SUB)
        offs = r[:, None] * sx32 + c[None, :]
        inside = (r[:, None] < m_rem) & (c[None, :] < n_rem)
        if EVEN:
            x = tl.load(base + offs).to(tl.float32)
        else:
            x = tl.load(base + offs, mask=inside, other=0.0).to(tl.float32)
        ca = _codes(_nan_to_num(x, A_NAN_TO_NUM), fa, A_CAST_NAN, A_CLAMP, A_QUANT_DIV, SOFT_CAST, FULL)
        cb = _codes(_nan_to_num(x, B_NAN_TO_NUM), fb, B_CAST_NAN, B_CLAMP, B_QUANT_DIV, SOFT_CAST, FULL)
        diff = (ca != cb) & inside
        n_diff += tl.sum(tl.sum(diff.to(tl.int32), axis=1), axis=0)
        lin = r[:, None] * 128 + c[None, :]
        first = tl.minimum(first, tl.min(tl.min(tl.where(diff, lin, NO_DIFF_C), axis=1), axis=0))
        na = ((ca & 0x7F) == 0x7F) & inside
        nb = ((cb & 0x7F) == 0x7F) & inside
        if FULL:  # a safe block has no NaN codes
            nan_a += tl.sum(tl.sum(na.to(tl.int32), axis=1), axis=0)
            nan_b += tl.sum(tl.sum(nb.to(tl.int32), axis=1), axis=0)
        steps = tl.where(diff & ~na & ~nb, tl.abs(_ordered(ca) - _ordered(cb)), 0)
        steps_max = tl.maximum(steps_max, tl.max(tl.max(steps, axis=1), axis=0))
        if METRICS:
            src = tl.where(tl.abs(x) < float("inf"), x, 0.0)
            da = tl.where(inside, _dequant(ca, sa), 0.0)
            db = tl.where(inside, _dequant(cb, sb), 0.0)
            w2 += tl.sum(tl.sum(src * src, axis=1), axis=0)
            ea2 += tl.sum(tl.sum((src - da) * (src - da), axis=1), axis=0)
            eb2 += tl.sum(tl.sum((src - db) * (src - db), axis=1), axis=0)
            eab2 += tl.sum(tl.sum((da - db) * (da - db), axis=1), axis=0)
    tl.store(o, n_diff)
    tl.store(o + 1, first)
    tl.store(o + 4, nan_a)
    tl.store(o + 5, nan_b)
    tl.store(o + 6, steps_max)
    if METRICS:
        tl.store(f, w2)
        tl.store(f + 1, ea2)
        tl.store(f + 2, eb2)
        tl.store(f + 3, eab2)


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
    aligned = x0.data_ptr() % 32 == 0
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
        aligned &= (x.data_ptr() - x0.data_ptr()) % (16 * es) == 0 and x.stride(0) % 16 == 0
    bmap = np.repeat(np.arange(len(tensors), dtype=np.int32), counts)
    return torch.tensor(rows, dtype=torch.int64), torch.from_numpy(bmap), counts, even, aligned


def fused_block_stats(tensors, recipe_a, recipe_b, metrics: bool = True, semantics=None, num_warps: int = 4,
                      fast_cast: bool = False, sub: int = 32, hints: bool = True, even_ok: bool = True):
    """Launch the fused verifier over `tensors` (2-D, one dtype, one device).

    Returns (iout (blocks, 8) int32, fout (blocks, 4) float32, counts: blocks per tensor), on the device.
    """
    ra, rb = get_recipe(recipe_a), get_recipe(recipe_b)
    dev = tensors[0].device
    if len({t.dtype for t in tensors}) != 1:
        raise ValueError("fused verifier needs one input dtype per launch")
    sem = semantics or device_semantics(dev)
    spec_a = {f"A_{k}": v for k, v in spec_constexprs(ra, sem["div_recip"], sem["cast_nan"]).items()}
    spec_b = {f"B_{k}": v for k, v in spec_constexprs(rb, sem["div_recip"], sem["cast_nan"]).items()}
    ttab, bmap, counts, even, aligned = _tables(tensors)
    nblk = int(bmap.numel())
    ttab, bmap = ttab.to(dev), bmap.to(dev)
    iout = torch.empty((nblk, ICOLS), dtype=torch.int32, device=dev)
    fout = torch.zeros((nblk, FCOLS), dtype=torch.float32, device=dev)
    _fused_verify_kernel[(nblk,)](tensors[0], ttab, bmap, iout, fout, nblk, **spec_a, **spec_b, EVEN=even and even_ok,
                                  METRICS=metrics, SOFT_CAST=INTERPRET, FAST_CAST=fast_cast, SUB=sub, ALIGNED=aligned and hints,
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
