"""Fused verifier: both recipes' codes compared in registers, no quantized copy ever written.

Up to three launches over one batch of 2-D weights (one dtype, one device), one host sync between
the first and the others (the class counts):

1. **screen** (every 128x128 block, the block held in registers, read once with 16-byte loads):
   the block's amax, both recipes' (factor, scale_inv), and a class for the block:
   EQUAL  - both factors finite, the largest scaled magnitude <= 464 on both sides, same factor bits
            and same scale_inv bits and the same quantize operation: the two sides' codes are
            provably the same (below 464 neither the clamp, the overflow rule nor NaN handling can
            change a code, and the bare RNE conversion of the same product is the same byte), so
            no element work is needed;
   FAST   - the same range guarantee, but the factors or scales differ: compared in pass 2 with
            the bare conversion;
   FULL   - anything else (a partial block, a non-finite value, an overflowing product): compared
            in pass 3 with each recipe's whole rule (edge padding, nan_to_num, clamp, cast rule).
   With metrics it also sums |w|^2 and |w - a|^2 (side A's dequantized codes) for every block.
2. **fast compare** (the FAST blocks, listed by the host): four codes a register (inline PTX, see
   `_diff4`): the count of differing codes and whether any is more than one fp8 step away; with
   metrics |w - b|^2 and |a - b|^2.
3. **full compare** (the FULL blocks): amax with padding/nan_to_num, the scales again, codes by the
   full rule, differing and NaN codes, all four sums.
The compare launches are straight-line code over block lists: a branch or a run-time loop around
their reductions raced under Triton 3.6 on the H200 (docs/GPU_NOTES.md, runs e and g).

Per block the output is one int32 record (ICOLS) and four float32 sums. Everything the comparison
reports beyond counts (the first differing element and its codes, the ulp histogram of blocks with
distances above one step or NaN codes) comes from `FusedLaunch.dump`: both sides' codes of a short
list of blocks, written by the same kernel code. The per-block arithmetic is the quantizer kernels'
own (`triton_block.block_scales`, `cast_e4m3`), so each side's codes are those `quantize_triton`
gives; suites/nightly/test_fused_verify.py (GPU) and suites/pr/test_fused_interpreter.py
(TRITON_INTERPRET=1) check every finding against the two-copy comparison.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import triton
import triton.language as tl

from refit_verify.fp8.kernels.grouped import launch_extra
from refit_verify.fp8.kernels.spec import device_semantics
from refit_verify.fp8.kernels.triton_block import BITS_448_C, INTERPRET, block_scales, cast_e4m3, spec_constexprs
from refit_verify.fp8.presets import get_recipe

TCOLS = 8  # int64 fields per tensor row
# int32 fields per block record
# R_FAR: nonzero when some differing codes of a FAST block are more than one fp8 step apart
R_FA, R_FB, R_SA, R_SB, R_CLASS, R_NDIFF, R_FAR, R_UNUSED, R_NAN_A, R_NAN_B = range(10)
ICOLS = 10
FCOLS = 4  # float32 sums per block: |w|^2, |w-a|^2, |w-b|^2, |a-b|^2
EQUAL, FAST, FULL = 0, 1, 2


@triton.jit
def _geometry(x_ptr, ttab_ptr, bmap_ptr, blk, ALIGNED: tl.constexpr):
    """(block base pointer, 32-bit row stride, rows and columns left, tensor table row) of block blk."""
    t = tl.load(bmap_ptr + blk).to(tl.int64)
    row = ttab_ptr + t * 8
    x_off = tl.load(row)
    sx = tl.load(row + 3)
    nbn = tl.load(row + 4)
    local = blk - tl.load(row + 5)
    bi = local // nbn
    bj = local - bi * nbn
    m_rem = (tl.load(row + 1) - bi * 128).to(tl.int32)
    n_rem = (tl.load(row + 2) - bj * 128).to(tl.int32)
    if ALIGNED:  # 16-element multiples (checked on the host): 16-byte vector loads
        x_off = tl.multiple_of(x_off, 16)
        sx = tl.multiple_of(sx, 16)
    base = x_ptr + (x_off + bi * 128 * sx + bj * 128)
    sx32 = sx.to(tl.int32)  # the host checks 128 * stride < 2**31
    if ALIGNED:
        sx32 = tl.multiple_of(sx32, 16)
    return base, sx32, m_rem, n_rem, row


@triton.jit
def _fp8(y, SOFT_CAST: tl.constexpr):
    """Bare RNE conversion with saturation (exact for finite |y| <= 464), as an fp8 value."""
    if SOFT_CAST:  # the interpreter's fp8 conversion is not RNE: the integer form
        return cast_e4m3(y, False, True).to(tl.float8e4nv, bitcast=True)
    else:
        return y.to(tl.float8e4nv, fp_downcast_rounding="rtne")


@triton.jit
def _scaled(x, factor, QUANT_DIV: tl.constexpr):
    if QUANT_DIV:
        return tl.math.div_rn(x, factor)
    else:
        return x * factor


@triton.jit
def _diff4(ya, yb):
    """Per 4 elements (scaled values of a FAST block, both sides): differing codes + 65536 if any of
    them is more than one fp8 step apart; 0 in the other three outputs of the pack.

    Both sides' 4 codes are packed into one register each by two RNE conversions, so one xor finds
    the differing bytes (a byte is nonzero iff (b & 0x7f) + 0x7f or b sets its top bit: popc counts
    them) and one byte-wise absolute difference sums the distances (one sign on both sides: the
    byte difference is the fp8-step distance)."""
    return tl.inline_asm_elementwise(
        asm="""
        {
        .reg .b16 a01, a23, b01, b23;
        .reg .b32 pa, pb, x, t, s, z;
        cvt.rn.satfinite.e4m3x2.f32 a01, $5, $4;
        cvt.rn.satfinite.e4m3x2.f32 a23, $7, $6;
        cvt.rn.satfinite.e4m3x2.f32 b01, $9, $8;
        cvt.rn.satfinite.e4m3x2.f32 b23, $11, $10;
        mov.b32 pa, {a01, a23};
        mov.b32 pb, {b01, b23};
        mov.b32 z, 0;
        xor.b32 x, pa, pb;
        and.b32 t, x, 0x7f7f7f7f;
        add.u32 t, t, 0x7f7f7f7f;
        or.b32 t, t, x;
        and.b32 t, t, 0x80808080;
        popc.b32 t, t;
        vabsdiff4.u32.u32.u32.add s, pa, pb, z;
        sub.u32 s, s, t;
        min.u32 s, s, 1;
        shl.b32 s, s, 16;
        add.u32 $0, s, t;
        mov.b32 $1, 0;
        mov.b32 $2, 0;
        mov.b32 $3, 0;
        }
        """,
        constraints="=r,=r,=r,=r,f,f,f,f,f,f,f,f", args=[ya, yb], dtype=tl.int32, is_pure=True, pack=4)


@triton.jit
def _sum2(v):
    """Sum of a 2-D tile: over all axes at once (each thread its own elements, then one tree), not
    row sums first (whose 1-D result is re-laid out through shared memory, row by row)."""
    return tl.sum(v)


@triton.jit(do_not_specialize=["n_blocks"])
def _screen_kernel(
    x_ptr, ttab_ptr, bmap_ptr, rec_ptr, fsum_ptr, n_blocks,
    A_PAD_EDGE: tl.constexpr, A_NAN_TO_NUM: tl.constexpr, A_HAS_FLOOR: tl.constexpr, A_FLOOR: tl.constexpr,
    A_SCALE_FORM: tl.constexpr, A_POW2: tl.constexpr, A_ZERO_ONE: tl.constexpr, A_INF_ONE: tl.constexpr,
    A_INF_FMAX: tl.constexpr, A_QUANT_DIV: tl.constexpr, A_CLAMP: tl.constexpr, A_DIV_RECIP: tl.constexpr,
    A_CAST_NAN: tl.constexpr,
    B_PAD_EDGE: tl.constexpr, B_NAN_TO_NUM: tl.constexpr, B_HAS_FLOOR: tl.constexpr, B_FLOOR: tl.constexpr,
    B_SCALE_FORM: tl.constexpr, B_POW2: tl.constexpr, B_ZERO_ONE: tl.constexpr, B_INF_ONE: tl.constexpr,
    B_INF_FMAX: tl.constexpr, B_QUANT_DIV: tl.constexpr, B_CLAMP: tl.constexpr, B_DIV_RECIP: tl.constexpr,
    B_CAST_NAN: tl.constexpr,
    EVEN: tl.constexpr, ALIGNED: tl.constexpr, NATIVE: tl.constexpr, METRICS: tl.constexpr,
    SOFT_CAST: tl.constexpr,
):
    """Pass 1: amax, both sides' scales, the block's class; with metrics |w|^2 and |w - a|^2."""
    blk = tl.program_id(0)
    base, sx32, m_rem, n_rem, row = _geometry(x_ptr, ttab_ptr, bmap_ptr, blk, ALIGNED)
    r = tl.arange(0, 128)
    c = tl.arange(0, 128)
    offs = r[:, None] * sx32 + c[None, :]
    if EVEN:
        x = tl.load(base + offs)
    else:
        x = tl.load(base + offs, mask=(r[:, None] < m_rem) & (c[None, :] < n_rem), other=0.0)
    if NATIVE:  # bf16: the max on the 16-bit patterns, widened exactly by a shift
        b16 = x.to(tl.int16, bitcast=True).to(tl.int32) & 0x7FFF
        abits = tl.max(b16) << 16
    else:
        abits = tl.max(x.to(tl.float32).to(tl.int32, bitcast=True) & 0x7FFFFFFF)
    amax = abits.to(tl.float32, bitcast=True)
    fa, sa = block_scales(amax, A_HAS_FLOOR, A_FLOOR, A_SCALE_FORM, A_POW2, A_ZERO_ONE, A_INF_ONE, A_INF_FMAX,
                          A_QUANT_DIV, A_DIV_RECIP)
    fb, sb = block_scales(amax, B_HAS_FLOOR, B_FLOOR, B_SCALE_FORM, B_POW2, B_ZERO_ONE, B_INF_ONE, B_INF_FMAX,
                          B_QUANT_DIV, B_DIV_RECIP)
    # |y| <= |amax * factor| for every element (rounding is monotone), so <= 464 bounds the block
    safe = (abits < 0x7F800000) & (m_rem >= 128) & (n_rem >= 128)
    safe = safe & (_scaled(amax, fa, A_QUANT_DIV) <= 464.0) & (tl.abs(fa) < float("inf"))
    safe = safe & (_scaled(amax, fb, B_QUANT_DIV) <= 464.0) & (tl.abs(fb) < float("inf"))
    fa_bits = fa.to(tl.int32, bitcast=True)
    fb_bits = fb.to(tl.int32, bitcast=True)
    sa_bits = sa.to(tl.int32, bitcast=True)
    sb_bits = sb.to(tl.int32, bitcast=True)
    same = (fa_bits == fb_bits) & (sa_bits == sb_bits)
    if A_QUANT_DIV == B_QUANT_DIV:
        cls = tl.where(safe, tl.where(same, 0, 1), 2)
    else:  # one side divides, the other multiplies: equal factors prove nothing
        cls = tl.where(safe, 1, 2)
    o = rec_ptr + blk.to(tl.int64) * 10
    tl.store(o, fa_bits)
    tl.store(o + 1, fb_bits)
    tl.store(o + 2, sa_bits)
    tl.store(o + 3, sb_bits)
    tl.store(o + 4, cls)
    tl.store(o + 5, 0)
    tl.store(o + 6, 0)
    tl.store(o + 7, 0)
    tl.store(o + 8, 0)
    tl.store(o + 9, 0)
    if METRICS:  # exact for EQUAL and FAST blocks (finite, no NaN codes); FULL blocks are redone in pass 3
        xf = x.to(tl.float32)
        da = _fp8(_scaled(xf, fa, A_QUANT_DIV), SOFT_CAST).to(tl.float32) * sa
        w2 = _sum2(xf * xf)
        ea2 = _sum2((xf - da) * (xf - da))
        f = fsum_ptr + blk.to(tl.int64) * 4
        tl.store(f, w2)
        tl.store(f + 1, ea2)
        tl.store(f + 2, ea2)
        tl.store(f + 3, 0.0)


@triton.jit
def _nan_to_num(x, NAN_TO_NUM: tl.constexpr):
    if NAN_TO_NUM:
        x = tl.where(x != x, 0.0, x)
        x = tl.where(x == float("inf"), 448.0, tl.where(x == float("-inf"), -448.0, x))
    return x


@triton.jit
def _amax_bits(bits, NAN_TO_NUM: tl.constexpr):
    """Largest sign-cleared fp32 pattern (NaN > inf > finite); under nan_to_num NaN counts as 0 and
    inf as 448, in integer form, so the amax is that of the values the recipe quantizes."""
    if NAN_TO_NUM:
        bits = tl.where(bits > 0x7F800000, 0, tl.where(bits == 0x7F800000, BITS_448_C, bits))
    return tl.max(bits)


@triton.jit
def _side_amax(amax, last_bits, partial, PAD_EDGE: tl.constexpr, NAN_TO_NUM: tl.constexpr):
    """A recipe's block amax (fp32) from its in-tensor amax pattern and NeMo's edge pad value."""
    if PAD_EDGE:
        lb = last_bits
        if NAN_TO_NUM:
            lb = tl.where(lb > 0x7F800000, 0, tl.where(lb == 0x7F800000, BITS_448_C, lb))
        amax = tl.where(partial, tl.maximum(amax, lb), amax)
    return amax.to(tl.float32, bitcast=True)


@triton.jit
def _full_codes(x, factor, CAST_NAN: tl.constexpr, CLAMP: tl.constexpr, QUANT_DIV: tl.constexpr,
                SOFT_CAST: tl.constexpr):
    y = _scaled(x, factor, QUANT_DIV)
    if CLAMP:
        y = tl.where(y != y, y, tl.minimum(tl.maximum(y, -448.0), 448.0))
    return cast_e4m3(y, CAST_NAN, SOFT_CAST).to(tl.int32)


@triton.jit
def _dequant(codes, scale_inv):
    v = codes.to(tl.uint8).to(tl.float8e4nv, bitcast=True).to(tl.float32) * scale_inv
    return tl.where((tl.abs(v) < float("inf")) & ((codes & 0x7F) != 0x7F), v, 0.0)


@triton.jit
def _full_scales(base, sx32, m_rem, n_rem, row, x_ptr,
                 A_PAD_EDGE: tl.constexpr, A_NAN_TO_NUM: tl.constexpr, A_HAS_FLOOR: tl.constexpr,
                 A_FLOOR: tl.constexpr, A_SCALE_FORM: tl.constexpr, A_POW2: tl.constexpr,
                 A_ZERO_ONE: tl.constexpr, A_INF_ONE: tl.constexpr, A_INF_FMAX: tl.constexpr,
                 A_QUANT_DIV: tl.constexpr, A_DIV_RECIP: tl.constexpr,
                 B_PAD_EDGE: tl.constexpr, B_NAN_TO_NUM: tl.constexpr, B_HAS_FLOOR: tl.constexpr,
                 B_FLOOR: tl.constexpr, B_SCALE_FORM: tl.constexpr, B_POW2: tl.constexpr,
                 B_ZERO_ONE: tl.constexpr, B_INF_ONE: tl.constexpr, B_INF_FMAX: tl.constexpr,
                 B_QUANT_DIV: tl.constexpr, B_DIV_RECIP: tl.constexpr, SUB: tl.constexpr):
    """Each side's (factor, scale_inv) by the whole rule: nan_to_num amax, NeMo's edge pad."""
    c = tl.arange(0, 128)
    bits_a = tl.full([], 0, tl.int32)
    bits_b = tl.full([], 0, tl.int32)
    for r0 in tl.static_range(0, 128, SUB):
        r = r0 + tl.arange(0, SUB)
        xt = tl.load(base + (r[:, None] * sx32 + c[None, :]), mask=(r[:, None] < m_rem) & (c[None, :] < n_rem),
                     other=0.0)
        bt = xt.to(tl.float32).to(tl.int32, bitcast=True) & 0x7FFFFFFF
        bits_a = tl.maximum(bits_a, _amax_bits(bt, A_NAN_TO_NUM))
        bits_b = tl.maximum(bits_b, _amax_bits(bt, B_NAN_TO_NUM))
    partial = (m_rem < 128) | (n_rem < 128)
    last_bits = tl.load(x_ptr + tl.load(row + 6)).to(tl.float32).to(tl.int32, bitcast=True) & 0x7FFFFFFF
    amax_a = _side_amax(bits_a, last_bits, partial, A_PAD_EDGE, A_NAN_TO_NUM)
    amax_b = _side_amax(bits_b, last_bits, partial, B_PAD_EDGE, B_NAN_TO_NUM)
    fa, sa = block_scales(amax_a, A_HAS_FLOOR, A_FLOOR, A_SCALE_FORM, A_POW2, A_ZERO_ONE, A_INF_ONE, A_INF_FMAX,
                          A_QUANT_DIV, A_DIV_RECIP)
    fb, sb = block_scales(amax_b, B_HAS_FLOOR, B_FLOOR, B_SCALE_FORM, B_POW2, B_ZERO_ONE, B_INF_ONE, B_INF_FMAX,
                          B_QUANT_DIV, B_DIV_RECIP)
    return fa, sa, fb, sb


@triton.jit(do_not_specialize=["n_blocks"])
def _compare_kernel(
    x_ptr, ttab_ptr, bmap_ptr, rec_ptr, fsum_ptr, blist_ptr, dump_ptr, n_blocks,
    A_PAD_EDGE: tl.constexpr, A_NAN_TO_NUM: tl.constexpr, A_HAS_FLOOR: tl.constexpr, A_FLOOR: tl.constexpr,
    A_SCALE_FORM: tl.constexpr, A_POW2: tl.constexpr, A_ZERO_ONE: tl.constexpr, A_INF_ONE: tl.constexpr,
    A_INF_FMAX: tl.constexpr, A_QUANT_DIV: tl.constexpr, A_CLAMP: tl.constexpr, A_DIV_RECIP: tl.constexpr,
    A_CAST_NAN: tl.constexpr,
    B_PAD_EDGE: tl.constexpr, B_NAN_TO_NUM: tl.constexpr, B_HAS_FLOOR: tl.constexpr, B_FLOOR: tl.constexpr,
    B_SCALE_FORM: tl.constexpr, B_POW2: tl.constexpr, B_ZERO_ONE: tl.constexpr, B_INF_ONE: tl.constexpr,
    B_INF_FMAX: tl.constexpr, B_QUANT_DIV: tl.constexpr, B_CLAMP: tl.constexpr, B_DIV_RECIP: tl.constexpr,
    B_CAST_NAN: tl.constexpr,
    ALIGNED: tl.constexpr, METRICS: tl.constexpr, SOFT_CAST: tl.constexpr, FULL_RULE: tl.constexpr,
    DUMP: tl.constexpr, SUB: tl.constexpr,
):
    """Pass 2 (FULL_RULE=False: FAST blocks) or pass 3 (FULL_RULE=True: FULL blocks) over the blocks
    listed in blist, or with DUMP both sides' codes of the listed blocks into dump[i] (2, 128, 128).

    Straight-line code: no branch or run-time loop around the reductions (that pattern raced under
    Triton 3.6 on the H200, docs/GPU_NOTES.md runs e and g); the host lists each class's blocks."""
    pid = tl.program_id(0)
    blk = tl.load(blist_ptr + pid)
    o = rec_ptr + blk.to(tl.int64) * 10
    _compare_block(x_ptr, ttab_ptr, bmap_ptr, fsum_ptr, dump_ptr, blk, pid, o, A_PAD_EDGE, A_NAN_TO_NUM,
                   A_HAS_FLOOR, A_FLOOR, A_SCALE_FORM, A_POW2, A_ZERO_ONE, A_INF_ONE, A_INF_FMAX, A_QUANT_DIV,
                   A_CLAMP, A_DIV_RECIP, A_CAST_NAN, B_PAD_EDGE, B_NAN_TO_NUM, B_HAS_FLOOR, B_FLOOR,
                   B_SCALE_FORM, B_POW2, B_ZERO_ONE, B_INF_ONE, B_INF_FMAX, B_QUANT_DIV, B_CLAMP,
                   B_DIV_RECIP, B_CAST_NAN, ALIGNED, METRICS, SOFT_CAST, FULL_RULE, DUMP, SUB)


@triton.jit
def _compare_block(
    x_ptr, ttab_ptr, bmap_ptr, fsum_ptr, dump_ptr, blk, pid, o,
    A_PAD_EDGE: tl.constexpr, A_NAN_TO_NUM: tl.constexpr, A_HAS_FLOOR: tl.constexpr, A_FLOOR: tl.constexpr,
    A_SCALE_FORM: tl.constexpr, A_POW2: tl.constexpr, A_ZERO_ONE: tl.constexpr, A_INF_ONE: tl.constexpr,
    A_INF_FMAX: tl.constexpr, A_QUANT_DIV: tl.constexpr, A_CLAMP: tl.constexpr, A_DIV_RECIP: tl.constexpr,
    A_CAST_NAN: tl.constexpr,
    B_PAD_EDGE: tl.constexpr, B_NAN_TO_NUM: tl.constexpr, B_HAS_FLOOR: tl.constexpr, B_FLOOR: tl.constexpr,
    B_SCALE_FORM: tl.constexpr, B_POW2: tl.constexpr, B_ZERO_ONE: tl.constexpr, B_INF_ONE: tl.constexpr,
    B_INF_FMAX: tl.constexpr, B_QUANT_DIV: tl.constexpr, B_CLAMP: tl.constexpr, B_DIV_RECIP: tl.constexpr,
    B_CAST_NAN: tl.constexpr,
    ALIGNED: tl.constexpr, METRICS: tl.constexpr, SOFT_CAST: tl.constexpr, FULL_RULE: tl.constexpr,
    DUMP: tl.constexpr, SUB: tl.constexpr,
):
    base, sx32, m_rem, n_rem, row = _geometry(x_ptr, ttab_ptr, bmap_ptr, blk, ALIGNED)
    if FULL_RULE:
        fa, sa, fb, sb = _full_scales(base, sx32, m_rem, n_rem, row, x_ptr, A_PAD_EDGE, A_NAN_TO_NUM,
                                      A_HAS_FLOOR, A_FLOOR, A_SCALE_FORM, A_POW2, A_ZERO_ONE, A_INF_ONE,
                                      A_INF_FMAX, A_QUANT_DIV, A_DIV_RECIP, B_PAD_EDGE, B_NAN_TO_NUM,
                                      B_HAS_FLOOR, B_FLOOR, B_SCALE_FORM, B_POW2, B_ZERO_ONE, B_INF_ONE,
                                      B_INF_FMAX, B_QUANT_DIV, B_DIV_RECIP, SUB)
    else:
        fa = tl.load(o).to(tl.float32, bitcast=True)
        fb = tl.load(o + 1).to(tl.float32, bitcast=True)
        sa = tl.load(o + 2).to(tl.float32, bitcast=True)
        sb = tl.load(o + 3).to(tl.float32, bitcast=True)
    _compare_tiles(base, sx32, m_rem, n_rem, fa, sa, fb, sb, o, fsum_ptr + blk.to(tl.int64) * 4,
                   dump_ptr + pid.to(tl.int64) * 32768, A_NAN_TO_NUM, A_CAST_NAN, A_CLAMP, A_QUANT_DIV,
                   B_NAN_TO_NUM, B_CAST_NAN, B_CLAMP, B_QUANT_DIV, METRICS, SOFT_CAST, FULL_RULE, DUMP, SUB)


@triton.jit
def _compare_tiles(base, sx32, m_rem, n_rem, fa, sa, fb, sb, o, f, d_ptr,
                   A_NAN_TO_NUM: tl.constexpr, A_CAST_NAN: tl.constexpr, A_CLAMP: tl.constexpr,
                   A_QUANT_DIV: tl.constexpr, B_NAN_TO_NUM: tl.constexpr, B_CAST_NAN: tl.constexpr,
                   B_CLAMP: tl.constexpr, B_QUANT_DIV: tl.constexpr, METRICS: tl.constexpr,
                   SOFT_CAST: tl.constexpr, FULL_RULE: tl.constexpr, DUMP: tl.constexpr, SUB: tl.constexpr):
    """SUB rows at a time: both sides' codes, compared (or dumped)."""
    c = tl.arange(0, 128)
    packed = tl.full([], 0, tl.int32)  # differing codes + 65536 * (elements or packs) more than a step apart
    nan_a = tl.full([], 0, tl.int32)
    nan_b = tl.full([], 0, tl.int32)
    w2 = tl.full([], 0.0, tl.float32)
    ea2 = tl.full([], 0.0, tl.float32)
    eb2 = tl.full([], 0.0, tl.float32)
    eab2 = tl.full([], 0.0, tl.float32)
    for r0 in tl.static_range(0, 128, SUB):
        r = r0 + tl.arange(0, SUB)
        offs = r[:, None] * sx32 + c[None, :]
        if FULL_RULE:
            inside = (r[:, None] < m_rem) & (c[None, :] < n_rem)
            x = tl.load(base + offs, mask=inside, other=0.0).to(tl.float32)
            ca = _full_codes(_nan_to_num(x, A_NAN_TO_NUM), fa, A_CAST_NAN, A_CLAMP, A_QUANT_DIV, SOFT_CAST)
            cb = _full_codes(_nan_to_num(x, B_NAN_TO_NUM), fb, B_CAST_NAN, B_CLAMP, B_QUANT_DIV, SOFT_CAST)
        else:  # a FAST block: full, finite, every scaled value <= 464 on both sides
            x = tl.load(base + offs).to(tl.float32)
            if DUMP or SOFT_CAST or METRICS:
                qa = _fp8(_scaled(x, fa, A_QUANT_DIV), SOFT_CAST)
                qb = _fp8(_scaled(x, fb, B_QUANT_DIV), SOFT_CAST)
                ca = qa.to(tl.uint8, bitcast=True).to(tl.int32)
                cb = qb.to(tl.uint8, bitcast=True).to(tl.int32)
        if DUMP:
            lin = r[:, None] * 128 + c[None, :]
            tl.store(d_ptr + lin, ca.to(tl.uint8))
            tl.store(d_ptr + 16384 + lin, cb.to(tl.uint8))
        elif FULL_RULE:
            diff = (ca != cb) & inside
            packed += _sum2(diff.to(tl.int32))
            nan_a += _sum2((((ca & 0x7F) == 0x7F) & inside).to(tl.int32))
            nan_b += _sum2((((cb & 0x7F) == 0x7F) & inside).to(tl.int32))
            if METRICS:
                src = tl.where(tl.abs(x) < float("inf"), x, 0.0)
                da = tl.where(inside, _dequant(ca, sa), 0.0)
                db = tl.where(inside, _dequant(cb, sb), 0.0)
                w2 += _sum2(src * src)
                ea2 += _sum2((src - da) * (src - da))
                eb2 += _sum2((src - db) * (src - db))
                eab2 += _sum2((da - db) * (da - db))
        else:
            # one sign for both sides (a positive factor keeps x's sign), so the fp8-step distance
            # is the difference of the codes as integers
            if SOFT_CAST:
                d = tl.abs(ca - cb)
                packed += _sum2(tl.where(d != 0, 1, 0) + tl.where(d > 1, 65536, 0))
            else:
                packed += _sum2(_diff4(_scaled(x, fa, A_QUANT_DIV), _scaled(x, fb, B_QUANT_DIV)))
            if METRICS:
                da = qa.to(tl.float32) * sa
                db = qb.to(tl.float32) * sb
                eb2 += _sum2((x - db) * (x - db))
                eab2 += _sum2((da - db) * (da - db))
    if not DUMP:
        tl.store(o + 5, packed & 0xFFFF)
        if FULL_RULE:
            tl.store(o + 2, sa.to(tl.int32, bitcast=True))
            tl.store(o + 3, sb.to(tl.int32, bitcast=True))
            tl.store(o + 8, nan_a)
            tl.store(o + 9, nan_b)
            if METRICS:
                tl.store(f, w2)
                tl.store(f + 1, ea2)
                tl.store(f + 2, eb2)
                tl.store(f + 3, eab2)
        else:
            tl.store(o + 6, packed >> 16)
            if METRICS:
                tl.store(f + 2, eb2)
                tl.store(f + 3, eab2)


def fused_supported(recipe) -> bool:
    from refit_verify.fp8.kernels.spec import UnsupportedRecipe, kernel_spec

    try:
        kernel_spec(recipe, False, False)
        return True
    except UnsupportedRecipe:
        return False


def _tables(tensors):
    """(per-tensor int64 table, block counts, EVEN, ALIGNED) on the CPU."""
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
    return torch.tensor(rows, dtype=torch.int64), counts, even, aligned


class FusedLaunch:
    """One batch's launches and device buffers: `run()` fills `rec` (blocks, ICOLS) int32 and
    `fsum` (blocks, FCOLS) float32; `dump(blocks)` gives both sides' codes of some blocks."""

    def __init__(self, tensors, recipe_a, recipe_b, metrics: bool = True, semantics=None, num_warps: int = 4,
                 sub: int = 32, compare_warps: int = 4, hints: bool = True):
        ra, rb = get_recipe(recipe_a), get_recipe(recipe_b)
        dev = tensors[0].device
        if len({t.dtype for t in tensors}) != 1:
            raise ValueError("fused verifier needs one input dtype per launch")
        sem = semantics or device_semantics(dev)
        self.spec = {**{f"A_{k}": v for k, v in spec_constexprs(ra, sem["div_recip"], sem["cast_nan"]).items()},
                     **{f"B_{k}": v for k, v in spec_constexprs(rb, sem["div_recip"], sem["cast_nan"]).items()}}
        ttab, self.counts, self.even, aligned = _tables(tensors)
        self.tensors, self.metrics, self.sub = tensors, metrics, sub
        self.nblk = int(sum(self.counts))
        self.ttab = ttab.to(dev, non_blocking=True)
        cnt = torch.tensor(self.counts, dtype=torch.int64).to(dev, non_blocking=True)
        self.bmap = torch.repeat_interleave(torch.arange(len(tensors), device=dev, dtype=torch.int32), cnt,
                                            output_size=self.nblk)
        self.rec = torch.empty((self.nblk, ICOLS), dtype=torch.int32, device=dev)
        self.fsum = torch.zeros((self.nblk, FCOLS), dtype=torch.float32, device=dev)
        self.aligned = aligned and hints
        self.warps = (num_warps, compare_warps)
        self.native = tensors[0].dtype == torch.bfloat16

    def _compare(self, full_rule: bool, blist, dump=None):
        n = int(blist.numel())
        if not n:
            return
        _compare_kernel[(n,)](
            self.tensors[0], self.ttab, self.bmap, self.rec, self.fsum, blist, dump if dump is not None else self.rec,
            n, **self.spec, ALIGNED=self.aligned, METRICS=self.metrics, SOFT_CAST=INTERPRET, FULL_RULE=full_rule,
            DUMP=dump is not None, SUB=self.sub, num_warps=self.warps[1], **launch_extra())

    def screen(self) -> None:
        _screen_kernel[(self.nblk,)](self.tensors[0], self.ttab, self.bmap, self.rec, self.fsum, self.nblk,
                                     **self.spec, EVEN=self.even, ALIGNED=self.aligned, NATIVE=self.native,
                                     METRICS=self.metrics, SOFT_CAST=INTERPRET, num_warps=self.warps[0],
                                     **launch_extra())

    def lists(self):
        """(FAST blocks, FULL blocks) as int32 device tensors: one small copy to the host (the counts)."""
        cls = self.rec[:, R_CLASS]
        order = torch.argsort(cls, stable=True).int()
        n_eq, n_fast, n_full = torch.bincount(cls, minlength=3).tolist()
        return order[n_eq:n_eq + n_fast], order[n_eq + n_fast:]

    def run(self) -> "FusedLaunch":
        self.screen()
        self.fast_list, self.full_list = self.lists()
        self._compare(False, self.fast_list)
        self._compare(True, self.full_list)
        return self

    def dump(self, blocks, full_rule: bool) -> torch.Tensor:
        """(len(blocks), 2, 128, 128) uint8 codes of both sides (outside a partial block: garbage)."""
        dev = self.rec.device
        blist = torch.as_tensor(np.asarray(blocks, dtype=np.int32)).to(dev)
        out = torch.empty((len(blocks), 2, 128, 128), dtype=torch.uint8, device=dev)
        self._compare(full_rule, blist, out)
        return out


def fused_block_stats(tensors, recipe_a, recipe_b, metrics: bool = True, **launch) -> FusedLaunch:
    """Launch the fused verifier over `tensors` (2-D, one dtype, one device); see FusedLaunch."""
    return FusedLaunch(tensors, recipe_a, recipe_b, metrics, **launch).run()
