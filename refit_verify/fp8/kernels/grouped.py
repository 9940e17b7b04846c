"""Grouped block quantizer: one Triton launch quantizes a list of 2-D tensors.

The work is a device-side table, one row per 128x128 block: element offset of the block's first
input element (relative to the first input tensor), byte offset of its first FP8 code (relative to
the output buffer), index of its scale (relative to the scale buffer), valid rows and columns, the
two row strides, and the offset of the tensor's last element (NeMo edge padding). Tensors are
separate allocations; offsets between them are differences of device addresses, so inputs must
all have one dtype and outputs may be one packed transport buffer or any caller buffers.

The per-block arithmetic is the per-tensor kernel's own (`triton_block.block_scales`, `cast_e4m3`),
so the bytes are the same; suites/nightly/test_grouped_exact.py checks them against the reference.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from refit_verify.fp8.kernels.spec import device_semantics
from refit_verify.fp8.kernels.triton_block import block_scales, cast_e4m3, spec_constexprs
from refit_verify.fp8.presets import get_recipe
from refit_verify.fp8.quantize import QuantizedTensor, validate_input

COLS = 8  # int64 fields per table row


@triton.jit
def _grouped_kernel(
    x_ptr, q_ptr, s_ptr, tab_ptr,
    PAD_EDGE: tl.constexpr, NAN_TO_NUM: tl.constexpr, HAS_FLOOR: tl.constexpr, FLOOR: tl.constexpr,
    SCALE_FORM: tl.constexpr, POW2: tl.constexpr, ZERO_ONE: tl.constexpr, INF_ONE: tl.constexpr,
    INF_FMAX: tl.constexpr, QUANT_DIV: tl.constexpr, CLAMP: tl.constexpr, DIV_RECIP: tl.constexpr,
    CAST_NAN: tl.constexpr, EVEN: tl.constexpr, ALIGNED: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
):
    row = tab_ptr + tl.program_id(0).to(tl.int64) * 8
    x_off = tl.load(row)
    q_off = tl.load(row + 1)
    s_off = tl.load(row + 2)
    m_rem = tl.load(row + 3)
    n_rem = tl.load(row + 4)
    sx = tl.load(row + 5)
    sq = tl.load(row + 6)
    if ALIGNED:  # every offset and stride a multiple of 16: the compiler may emit 16-byte accesses
        x_off = tl.multiple_of(x_off, 16)
        q_off = tl.multiple_of(q_off, 16)
        sx = tl.multiple_of(sx, 16)
        sq = tl.multiple_of(sq, 16)
    r = tl.arange(0, BM).to(tl.int64)
    c = tl.arange(0, BN)
    xo = x_off + r[:, None] * sx + c[None, :]
    if EVEN:
        x = tl.load(x_ptr + xo).to(tl.float32)
    else:
        inside = (r[:, None] < m_rem) & (c[None, :] < n_rem)
        x = tl.load(x_ptr + xo, mask=inside, other=0.0).to(tl.float32)
        if PAD_EDGE:
            last = tl.load(x_ptr + tl.load(row + 7)).to(tl.float32)
            x = tl.where(inside, x, last)
    if NAN_TO_NUM:
        x = tl.where(x != x, 0.0, x)
        x = tl.where(x == float("inf"), 448.0, tl.where(x == float("-inf"), -448.0, x))
    amax = tl.max(tl.max(x.to(tl.int32, bitcast=True) & 0x7FFFFFFF, axis=1), axis=0).to(tl.float32, bitcast=True)
    factor, scale_inv = block_scales(amax, HAS_FLOOR, FLOOR, SCALE_FORM, POW2, ZERO_ONE, INF_ONE, INF_FMAX,
                                QUANT_DIV, DIV_RECIP)
    if QUANT_DIV:
        y = tl.math.div_rn(x, factor)
    else:
        y = x * factor
    if CLAMP:
        y = tl.where(y != y, y, tl.minimum(tl.maximum(y, -448.0), 448.0))
    codes = cast_e4m3(y, CAST_NAN, False)
    qo = q_off + r[:, None] * sq + c[None, :]
    if EVEN:
        tl.store(q_ptr + qo, codes)
    else:
        tl.store(q_ptr + qo, codes, mask=inside)
    tl.store(s_ptr + s_off, scale_inv)


def _table(xs, datas, scales) -> tuple[torch.Tensor, bool]:
    x0, q0, s0 = xs[0], datas[0].view(torch.uint8), scales[0]
    es = x0.element_size()
    rows, even = [], True
    aligned = x0.data_ptr() % 32 == 0 and q0.data_ptr() % 16 == 0
    for x, d, s in zip(xs, datas, scales):
        m, n = x.shape
        even &= m % 128 == 0 and n % 128 == 0
        aligned &= (x.data_ptr() % 32 == 0 and d.data_ptr() % 16 == 0 and x.stride(0) % 16 == 0
                    and d.stride(0) % 16 == 0)
        xb = (x.data_ptr() - x0.data_ptr()) // es
        qb = d.data_ptr() - q0.data_ptr()
        sb = (s.data_ptr() - s0.data_ptr()) // 4
        last = xb + (m - 1) * x.stride(0) + (n - 1)
        nbn = math.ceil(n / 128)
        for bi in range(math.ceil(m / 128)):
            for bj in range(nbn):
                rows.append((xb + bi * 128 * x.stride(0) + bj * 128, qb + bi * 128 * d.stride(0) + bj * 128,
                             sb + bi * s.stride(0) + bj, m - bi * 128, n - bj * 128, x.stride(0), d.stride(0), last))
    return torch.tensor(rows, dtype=torch.int64).to(x0.device), even, aligned


class GroupedQuantizer:
    """Quantize a fixed list of tensors (same shapes and addresses each call) with one launch.

    The table is built once; `out` is a list of (data, scale_inv) buffers, or None for one packed
    uint8 transport buffer (codes, each tensor 16-byte aligned) and one packed fp32 scale buffer.
    Calling it again after the inputs' storage moved is a bug: build a new one.
    """

    def __init__(self, tensors, recipe="vllm_per_block", names=None, out=None, semantics=None, num_warps=4):
        self.recipe = get_recipe(recipe)
        names = names or [f"tensor[{i}]" for i in range(len(tensors))]
        dtypes = {t.dtype for t in tensors}
        for t, nm in zip(tensors, names):
            validate_input(t, nm)
            if t.stride(1) != 1:
                raise ValueError(f"{nm}: grouped quantizer needs unit column stride")
        if len(dtypes) != 1:
            raise ValueError(f"grouped quantizer needs one input dtype, got {sorted(map(str, dtypes))}")
        sem = semantics or device_semantics(tensors[0].device)
        self.spec = spec_constexprs(self.recipe, sem["div_recip"], sem["cast_nan"])
        self.tensors = list(tensors)
        self.out = out or self._packed(tensors)
        self.table, self.even, self.aligned = _table(self.tensors, [d for d, _ in self.out], [s for _, s in self.out])
        self.num_warps = num_warps

    def _packed(self, tensors):
        dev = tensors[0].device
        sizes = [(-(-t.numel() // 16) * 16) for t in tensors]
        nsc = [math.ceil(t.shape[0] / 128) * math.ceil(t.shape[1] / 128) for t in tensors]
        self.codes = torch.empty(sum(sizes), dtype=torch.uint8, device=dev)
        self.scales = torch.empty(sum(nsc), dtype=torch.float32, device=dev)
        out, qo, so = [], 0, 0
        for t, sz, k in zip(tensors, sizes, nsc):
            m, n = t.shape
            d = self.codes[qo:qo + m * n].view(torch.float8_e4m3fn).view(m, n)
            s = self.scales[so:so + k].view(math.ceil(m / 128), math.ceil(n / 128))
            out.append((d, s))
            qo, so = qo + sz, so + k
        return out

    def __call__(self) -> list[QuantizedTensor]:
        extra = {"enable_fp_fusion": False, "enable_reflect_ftz": False}
        _grouped_kernel[(self.table.shape[0],)](
            self.tensors[0], self.out[0][0].view(torch.uint8), self.out[0][1], self.table,
            **self.spec, EVEN=self.even, ALIGNED=self.aligned, BM=128, BN=128, num_warps=self.num_warps, **extra)
        return [QuantizedTensor(data=d, scale_inv=s, recipe=self.recipe) for d, s in self.out]


def quantize_grouped(tensors, recipe="vllm_per_block", names=None, out=None, **kw) -> list[QuantizedTensor]:
    """One launch over `tensors`; same bytes as `quantize` on each (see GroupedQuantizer)."""
    return GroupedQuantizer(tensors, recipe, names, out, **kw)()
