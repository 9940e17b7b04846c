"""Per-block 64-bit digests of quantized weights, identical on CPU and CUDA.

All arithmetic is on int64 tensors whose values never leave [0, 2**63): every multiply is a 32-bit word
times a constant below 2**27, so no product overflows and no backend's wraparound behaviour matters.
Each block digest is two independent 32-bit lanes. A lane is the sum (mod 2**32) over the block's
32-bit words of mix(word XOR position-salt), plus one term for the block's scale bits; mix is a
bijection on 32 bits, so changing any single word or the scale always changes the lane.
The digest runs on the tensor's own device; only the (blocks, 2) lane table leaves it.
"""

from __future__ import annotations

import zlib

import torch

from refit_verify.errors import BadInputError

DIGEST_VERSION = 1
_M32 = 0xFFFFFFFF
# Odd multipliers (bijective mod 2**32), each below 2**27 so word * constant < 2**59.
_LANES = ((0x45D9F3B, 0x2C1B3C6), (0x3335B37, 0x119DE1F))
_SCALE_SALT = 0x5CA1E000


def _mix(x: torch.Tensor, c: int) -> torch.Tensor:
    """A 32-bit bijection (xorshift-multiply twice); x holds values in [0, 2**32)."""
    x = ((x ^ (x >> 16)) * c) & _M32
    x = ((x ^ (x >> 15)) * (c | 1)) & _M32
    return x ^ (x >> 16)


def _bytes(t: torch.Tensor) -> torch.Tensor:
    """The tensor's bytes as uint8 with the last dim widened by the element size (no copy when contiguous)."""
    t = t.contiguous()
    if t.dtype == torch.uint8:
        return t
    return t.view(torch.uint8)


def _scale_words(scale: torch.Tensor) -> torch.Tensor:
    """One int64 word in [0, 2**32) per scale element: float32 bits, or the E8M0/uint8 code."""
    if scale.element_size() == 4:
        return scale.contiguous().view(torch.int32).to(torch.int64) & _M32
    if scale.element_size() == 1:
        return _bytes(scale).to(torch.int64)
    raise BadInputError(f"scale dtype {scale.dtype} not supported (float32 bits or 1-byte E8M0 codes)")


def _block_words(data: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    """(blocks, words_per_block) int64 words, blocks in row-major block order, edges zero-padded."""
    if data.dim() != 2:
        raise BadInputError(f"digest needs a 2-D weight, got shape {tuple(data.shape)}")
    bm, bn = block
    b = _bytes(data)
    width = bn * data.element_size()
    m, n = b.shape
    gm, gn = -(-m // bm), -(-n // width)
    wpad = -(-width // 4) * 4
    if (gm * bm, gn * wpad) != (m, n) or wpad != width:
        p = torch.zeros(gm * bm, gn, wpad, dtype=torch.uint8, device=b.device)
        full = torch.zeros(gm * bm, gn * width, dtype=torch.uint8, device=b.device)
        full[:m, :n] = b
        p[:, :, :width] = full.view(gm * bm, gn, width)
        b = p.view(gm * bm, gn * wpad)
    words = b.view(torch.int32).to(torch.int64) & _M32
    wn = wpad // 4
    return words.view(gm, bm, gn, wn).permute(0, 2, 1, 3).reshape(gm * gn, bm * wn), (gm, gn)


def _kernel_ok(data, scale, block) -> bool:
    try:
        from refit_verify.live.digest_triton import kernel_applies
    except ImportError:  # no triton: the torch path below runs on the GPU too
        return False
    return kernel_applies(data, scale, block) and data.is_contiguous()


def block_digests(data: torch.Tensor, scale: torch.Tensor, block: tuple[int, int] = (128, 128),
                  indices: torch.Tensor | None = None) -> torch.Tensor:
    """(blocks, 2) int64 lanes in [0, 2**32) on data's device; rows in row-major block order,
    or only the blocks at `indices` (flat row-major block indices) in that order."""
    if data.is_cuda and indices is None and _kernel_ok(data, scale, block):
        from refit_verify.live.digest_triton import block_digests_triton

        return block_digests_triton(data, scale)  # the same integers (suites/nightly/test_digest_gpu.py)
    words, (gm, gn) = _block_words(data, block)
    sw = _scale_words(scale).reshape(-1)
    if sw.numel() != gm * gn:
        raise BadInputError(f"scale has {sw.numel()} elements, weight {tuple(data.shape)} has "
                            f"{gm * gn} blocks of {block}")
    if indices is not None:
        indices = indices.to(words.device)
        words, sw = words.index_select(0, indices), sw.index_select(0, indices)
    pos = torch.arange(words.shape[1], dtype=torch.int64, device=words.device)
    lanes = []
    for c_pos, c_word in _LANES:
        salt = _mix(pos, c_pos)
        acc = (_mix(words ^ salt, c_word).sum(dim=1) + _mix(sw ^ _SCALE_SALT, c_word)) & _M32
        lanes.append(_mix(acc, c_pos))
    return torch.stack(lanes, dim=1)


def tensor_digest(lanes: torch.Tensor, shape, dtype: str) -> str:
    """Digest of a whole tensor: its block lanes (in order) folded with its shape and dtype."""
    idx = torch.arange(lanes.shape[0], dtype=torch.int64, device=lanes.device)
    head = zlib.crc32(f"{tuple(shape)}|{dtype}".encode())
    out = []
    for i, (c_pos, c_word) in enumerate(_LANES):
        acc = (_mix(lanes[:, i] ^ _mix(idx, c_pos), c_word).sum() + head) & _M32
        out.append(int(_mix(acc.reshape(1), c_pos).item()))
    return f"{out[0]:08x}{out[1]:08x}"


def lanes_hex(lanes: torch.Tensor) -> list[str]:
    pairs = lanes.cpu().tolist()
    return [f"{a:08x}{b:08x}" for a, b in pairs]


def sample_indices(n_blocks: int, k: int, seed: int, name: str, rank_label: str) -> torch.Tensor:
    """K block indices (sorted) chosen from a seed both sides share, the tensor name and its rank."""
    if k >= n_blocks:
        return torch.arange(n_blocks, dtype=torch.int64)
    s = (seed * 1_000_003 + zlib.crc32(f"{rank_label}/{name}".encode())) % (2**63)
    g = torch.Generator().manual_seed(s)
    return torch.randperm(n_blocks, generator=g)[:k].sort().values
