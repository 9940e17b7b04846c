"""An independent oracle: the recipes recomputed element by element in plain Python.

float32 arithmetic is emulated with float64 + rounding to float32 after each operation; for
+, -, *, / that double rounding is exact (53 >= 2*24 + 2). fp8 codes come from the e4m3fn
definition (value table + round-half-to-even), not from torch's cast.
"""

from __future__ import annotations

import math
import struct

MAX = 448.0


def f32(x: float) -> float:
    if math.isnan(x):
        return x
    if abs(x) > 3.4028235677973366e38:
        return math.copysign(math.inf, x)
    return struct.unpack("f", struct.pack("f", x))[0]


def _e4m3_table():
    vals = []
    for code in range(0x7F):  # 0x7F is NaN
        e, m = code >> 3, code & 7
        v = (m / 8) * 2.0**-6 if e == 0 else (1 + m / 8) * 2.0 ** (e - 7)
        vals.append((v, code))
    return vals


_TABLE = _e4m3_table()


def rdiv(num: float, a: float) -> float:
    """`num / tensor` in torch is `tensor.reciprocal() * num` (Tensor.__rtruediv__): two roundings,
    so 448 / 3 gives 149.33334 where a correctly rounded division gives 149.33333."""
    return f32(f32(1.0 / a) * num) if a != 0 else math.inf


def e4m3_code(v: float, saturate: bool = True) -> int:
    """Round-to-nearest-even onto e4m3fn; out of range saturates (torch >= 2.13 CPU) or is NaN."""
    if math.isnan(v):
        return 0x7F
    sign = 0x80 if math.copysign(1.0, v) < 0 else 0
    a = abs(v)
    if a > MAX:
        # values that round to <= 448 under RNE (< 464) become 448 in every torch version
        if a < 464.0 or saturate:
            return sign | 0x7E
        return 0x7F
    best = min(_TABLE, key=lambda vc: (abs(vc[0] - a), vc[1] & 1))
    return sign | best[1]


def blocks(x, bm, bn, pad):
    """Yield (bi, bj, [(r, c, value)]) over padded blocks; pad value for out-of-range positions."""
    m, n = len(x), len(x[0])
    for bi in range(math.ceil(m / bm)):
        for bj in range(math.ceil(n / bn)):
            items = []
            for r in range(bi * bm, bi * bm + bm):
                for c in range(bj * bn, bj * bn + bn):
                    inside = r < m and c < n
                    items.append((r, c, x[r][c] if inside else pad, inside))
            yield bi, bj, items


def vllm_per_block(x, ue8m0=False, bm=128, bn=128):
    codes, scales = {}, {}
    for bi, bj, items in blocks(x, bm, bn, 0.0):
        a = max(abs(v) for _, _, v, _ in items)
        a = max(a, f32(1e-4))
        sf = f32(a / MAX)
        if ue8m0:
            sf = 2.0 ** math.ceil(math.log2(sf))
        inv = rdiv(1.0, sf)
        scales[bi, bj] = sf
        for r, c, v, inside in items:
            if inside:
                codes[r, c] = e4m3_code(f32(v * inv))
    return codes, scales


def nemo_rl(x, bm=128, bn=128):
    m, n = len(x), len(x[0])
    pad = x[-1][-1] if (m % bm or n % bn) else 0.0
    codes, scales = {}, {}
    for bi, bj, items in blocks(x, bm, bn, pad):
        a = max(abs(v) for _, _, v, _ in items)
        s = rdiv(MAX, a)
        if a == 0 or a == math.inf:
            s = 1.0
        scales[bi, bj] = f32(1.0 / s)
        for r, c, v, inside in items:
            if inside:
                y = min(max(f32(v * s), -MAX), MAX)
                codes[r, c] = e4m3_code(y)
    return codes, scales


def bf16(x: float) -> float:
    """Round a float32 value to bfloat16, nearest-even on the dropped 16 bits."""
    if math.isnan(x) or math.isinf(x):
        return x
    bits = struct.unpack("I", struct.pack("f", f32(x)))[0]
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return struct.unpack("f", struct.pack("I", bits))[0]


def _nan_to_num(v):
    if math.isnan(v):
        return 0.0
    return math.copysign(MAX, v) if math.isinf(v) else v


def _block_amax(values):
    if any(math.isnan(v) for v in values):
        return math.nan
    return max(abs(v) for v in values)


def _descale(a, r, in_bf16):
    if r.amax_floor is not None:
        a = max(a, f32(r.amax_floor)) if not math.isnan(a) else a
    sf = f32(a / MAX)
    if r.scale_compute_dtype == "input" and in_bf16:
        sf = bf16(sf)
    if r.scale_min is not None and not math.isnan(sf):
        sf = max(sf, r.scale_min)
    if r.pow2 == "float_ceil":
        sf = 2.0 ** math.ceil(math.log2(sf))
    return sf


def _multiplier(a, r):
    """Scale forms: s from the amax, fix-ups in the recipe's order."""
    if r.pow2 == "nemo_e8m0":
        if a == math.inf:
            e = 254
        else:
            e = min(max(math.ceil(math.log2(f32(a / MAX))), -127), 127) + 127 if a > 0 else 0
        return 1.0 if e == 0 else 2.0 ** (127 - e)
    if r.scale_form == "scale_div":
        s = f32(MAX / a) if a != 0 else math.inf
    else:
        s = rdiv(MAX, a)
    if r.zero_amax_scale_one and a == 0:
        s = 1.0
    if r.inf_scale == "one" and a == math.inf:
        s = 1.0
    return s


def _element(v, factor, r, in_bf16):
    if r.scale_form != "descale" or r.quantize_op == "mul_scale":
        y = f32(v * factor)
    elif r.quantize_op == "div":
        y = f32(v / factor) if factor != 0 else (math.nan if v == 0 or math.isnan(v) else math.copysign(math.inf, v))
    else:
        y = f32(v * rdiv(1.0, factor))
    if r.quantize_dtype == "input" and in_bf16:
        y = bf16(y)
    if r.add_zero_point and not math.isnan(y):
        y = y + 0.0
    if r.clamp and not math.isnan(y):
        y = min(max(y, -MAX), MAX)
    return e4m3_code(y)


def by_recipe(x, r, in_bf16=True):
    """Any 128x128 weight recipe used by the RL-framework presets, element by element.

    `x` holds values already representable in the input dtype (bfloat16 when in_bf16).
    Covers: zero/none/edge padding, amax floor, descale (with input-dtype rounding, scale_min,
    float UE8M0), scale / scale_div / nemo_e8m0 forms with their fix-ups, nan_to_num, the three
    quantize ops, input-dtype rounding of x*s, the zero-point add, clamp, bf16 scale storage.
    """
    m, n = len(x), len(x[0])
    bm, bn = r.block
    if r.padding == "none" and (m % bm or n % bn):
        raise ValueError("shape is not a multiple of the block")
    pad = x[-1][-1] if r.padding == "edge" and (m % bm or n % bn) else 0.0
    codes, scales = {}, {}
    for bi, bj, items in blocks(x, bm, bn, pad):
        if r.nan_policy == "zero":
            items = [(rr, cc, _nan_to_num(v), ins) for rr, cc, v, ins in items]
        a = _block_amax([v for _, _, v, _ in items])
        if r.scale_form == "descale":
            factor = _descale(a, r, in_bf16)
            scale_inv = factor
        else:
            factor = _multiplier(a, r)
            scale_inv = f32(1.0 / factor) if factor != 0 else math.inf
        scales[bi, bj] = bf16(scale_inv) if r.scale_dtype == "bfloat16" else scale_inv
        for rr, cc, v, inside in items:
            if inside:
                codes[rr, cc] = _element(v, factor, r, in_bf16)
    return codes, scales
