"""The per-block digest of live/digest.py as one Triton kernel: same integers, bit for bit.

Each program digests one 128x128 block of FP8 codes (128 rows of 32 little-endian 32-bit words,
zero words past the tensor's edge): per lane, the sum mod 2**32 of mix(word ^ mix(pos)) plus the
scale term, then mix of the sum. uint32 arithmetic wraps mod 2**32, which is exactly the masked
int64 arithmetic of the torch definition. Used for 1-byte data whose rows are whole words
(columns and row stride multiples of 4) and 4-byte scales; anything else takes the torch path.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from refit_verify.live.digest import LANES, SCALE_SALT


@triton.jit
def _mix(x, C: tl.constexpr):
    x = (x ^ (x >> 16)) * C
    x = (x ^ (x >> 15)) * (C | 1)
    return x ^ (x >> 16)


@triton.jit
def _lane(words, pos, sw, CP: tl.constexpr, CW: tl.constexpr, SALT: tl.constexpr):
    acc = tl.sum(tl.sum(_mix(words ^ _mix(pos, CP), CW), axis=1), axis=0)
    acc = acc + _mix(sw ^ SALT, CW)
    return _mix(acc, CP)


@triton.jit(do_not_specialize=["m", "nw", "stride_w", "nbn"])
def _digest_kernel(w_ptr, s_ptr, out_ptr, m, nw, stride_w, nbn,
                   C0P: tl.constexpr, C0W: tl.constexpr, C1P: tl.constexpr, C1W: tl.constexpr,
                   SALT: tl.constexpr):
    blk = tl.program_id(0)
    bi = blk // nbn
    bj = blk - bi * nbn
    r = tl.arange(0, 128)
    c = tl.arange(0, 32)
    rows = bi * 128 + r
    cols = bj * 32 + c
    ptr = w_ptr + rows[:, None].to(tl.int64) * stride_w + cols[None, :]
    words = tl.load(ptr, mask=(rows[:, None] < m) & (cols[None, :] < nw), other=0).to(tl.uint32, bitcast=True)
    pos = (r[:, None] * 32 + c[None, :]).to(tl.uint32)
    sw = tl.load(s_ptr + blk).to(tl.uint32, bitcast=True)
    l0 = _lane(words, pos, sw, C0P, C0W, SALT)
    l1 = _lane(words, pos, sw, C1P, C1W, SALT)
    tl.store(out_ptr + blk.to(tl.int64) * 2, l0.to(tl.int64) & 0xFFFFFFFF)
    tl.store(out_ptr + blk.to(tl.int64) * 2 + 1, l1.to(tl.int64) & 0xFFFFFFFF)


@triton.jit
def _digest_many_kernel(w_ptr, s_ptr, out_ptr, ttab_ptr, bmap_ptr,
                        C0P: tl.constexpr, C0W: tl.constexpr, C1P: tl.constexpr, C1W: tl.constexpr,
                        SALT: tl.constexpr, ALIGNED: tl.constexpr):
    """One launch over many tensors: ttab rows (word offset, rows, words a row, row stride in words,
    blocks a block-row, first block, scale offset), bmap the tensor of each block."""
    blk = tl.program_id(0)
    row = ttab_ptr + tl.load(bmap_ptr + blk).to(tl.int64) * 8
    w_off = tl.load(row)
    m = tl.load(row + 1)
    nw = tl.load(row + 2)
    sw_ = tl.load(row + 3)
    nbn = tl.load(row + 4)
    local = blk - tl.load(row + 5)
    bi = local // nbn
    bj = local - bi * nbn
    if ALIGNED:  # word offsets and strides multiples of 4: 16-byte loads
        w_off = tl.multiple_of(w_off, 4)
        sw_ = tl.multiple_of(sw_, 4)
        nw = tl.multiple_of(nw, 4)
    r = tl.arange(0, 128)
    c = tl.arange(0, 32)
    base = w_ptr + (w_off + bi * 128 * sw_ + bj * 32)
    s32 = sw_.to(tl.int32)
    if ALIGNED:
        s32 = tl.multiple_of(s32, 4)
    inside = (r[:, None] < m - bi * 128) & (c[None, :] < nw - bj * 32)
    words = tl.load(base + (r[:, None] * s32 + c[None, :]), mask=inside, other=0).to(tl.uint32, bitcast=True)
    pos = (r[:, None] * 32 + c[None, :]).to(tl.uint32)
    sw = tl.load(s_ptr + tl.load(row + 6) + local).to(tl.uint32, bitcast=True)
    l0 = _lane(words, pos, sw, C0P, C0W, SALT)
    l1 = _lane(words, pos, sw, C1P, C1W, SALT)
    tl.store(out_ptr + blk.to(tl.int64) * 2, l0.to(tl.int64) & 0xFFFFFFFF)
    tl.store(out_ptr + blk.to(tl.int64) * 2 + 1, l1.to(tl.int64) & 0xFFFFFFFF)


def block_digests_many(pairs) -> list:
    """[(data, scale)] -> [(blocks, 2) int64 lanes] with one launch; each equal to block_digests.

    Every data tensor must pass `kernel_applies` and be contiguous; all on one device."""
    import numpy as np

    d0, s0 = pairs[0]
    dev = d0.device
    rows, counts, start = [], [], 0
    scales = []
    aligned = d0.data_ptr() % 16 == 0
    for d, s in pairs:
        if not (kernel_applies(d, s, (128, 128)) and d.is_contiguous()):
            raise ValueError(f"digest kernel does not apply to a {tuple(d.shape)} {d.dtype} tensor")
        m, n = d.shape
        nbm, nbn = -(-m // 128), -(-n // 128)
        sc = s.contiguous()
        if sc.numel() != nbm * nbn:
            raise ValueError(f"scale has {sc.numel()} elements, expected {nbm * nbn}")
        scales.append(sc)
        woff, soff = d.data_ptr() - d0.data_ptr(), sc.data_ptr() - scales[0].data_ptr()
        if woff % 4 or soff % 4:
            raise ValueError("digest kernel needs 4-byte aligned tensors")
        rows.append((woff // 4, m, n // 4, n // 4, nbn, start, soff // 4, 0))
        aligned &= woff % 16 == 0 and n % 16 == 0
        counts.append(nbm * nbn)
        start += nbm * nbn
    ttab = torch.tensor(rows, dtype=torch.int64).to(dev)
    bmap = torch.from_numpy(np.repeat(np.arange(len(pairs), dtype=np.int32), counts)).to(dev)
    out = torch.empty((start, 2), dtype=torch.int64, device=dev)
    (c0p, c0w), (c1p, c1w) = LANES
    _digest_many_kernel[(start,)](d0.view(torch.uint8).view(torch.int32),
                                  scales[0].view(torch.int32), out, ttab, bmap,
                                  C0P=c0p, C0W=c0w, C1P=c1p, C1W=c1w, SALT=SCALE_SALT, ALIGNED=aligned,
                                  num_warps=4)
    return list(out.split(counts))


def kernel_applies(data: torch.Tensor, scale: torch.Tensor, block) -> bool:
    return (tuple(block) == (128, 128) and data.dim() == 2 and data.element_size() == 1
            and scale.element_size() == 4 and data.stride(1) == 1 and data.shape[1] % 4 == 0
            and data.stride(0) % 4 == 0 and data.data_ptr() % 4 == 0 and data.numel() > 0)


def block_digests_triton(data: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(blocks, 2) int64 lanes, equal to live.digest.block_digests(data, scale) (all blocks)."""
    m, n = data.shape
    nbm, nbn = -(-m // 128), -(-n // 128)
    if not data.is_contiguous():
        raise ValueError("the digest kernel reads contiguous data; use live.digest.block_digests")
    words = data.view(torch.uint8).view(torch.int32)
    s = scale.contiguous().view(torch.int32).reshape(-1)
    if s.numel() != nbm * nbn:
        raise ValueError(f"scale has {s.numel()} elements, expected {nbm * nbn}")
    out = torch.empty((nbm * nbn, 2), dtype=torch.int64, device=data.device)
    (c0p, c0w), (c1p, c1w) = LANES
    _digest_kernel[(nbm * nbn,)](words, s, out, m, n // 4, n // 4, nbn, C0P=c0p, C0W=c0w, C1P=c1p, C1W=c1w,
                                 SALT=SCALE_SALT, num_warps=4)
    return out
