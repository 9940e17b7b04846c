"""Per-block digests: same bytes same digests; one changed byte or scale bit changes exactly that block."""

import pytest
import torch

from refit_verify.cases import case_seed
from refit_verify.fp8.quantize import quantize
from refit_verify.live.digest import block_digests, lanes_hex, sample_indices, tensor_digest


def _qt(shape=(300, 260), seed=0):
    g = torch.Generator().manual_seed(case_seed(seed, "live_digest"))
    w = (torch.randn(shape, generator=g) * 0.02).to(torch.bfloat16)
    return quantize(w, "vllm_per_block")


def _changed(a, b):
    return [i for i, (x, y) in enumerate(zip(lanes_hex(a), lanes_hex(b))) if x != y]


def test_same_bytes_same_digests():
    q = _qt()
    a = block_digests(q.data, q.scale_inv)
    b = block_digests(q.data.clone(), q.scale_inv.clone())
    assert a.shape == (3 * 3, 2)
    assert lanes_hex(a) == lanes_hex(b)
    assert len(set(lanes_hex(a))) == 9
    assert tensor_digest(a, q.data.shape, "float8_e4m3fn") == tensor_digest(b, q.data.shape, "float8_e4m3fn")


def test_one_byte_changes_exactly_its_block():
    q = _qt()
    base = block_digests(q.data, q.scale_inv)
    for r, c in [(0, 0), (130, 5), (299, 259), (257, 129)]:
        u = q.data.view(torch.uint8).clone()
        u[r, c] ^= 1
        got = block_digests(u.view(torch.float8_e4m3fn), q.scale_inv)
        assert _changed(base, got) == [(r // 128) * 3 + c // 128]


def test_one_scale_bit_changes_exactly_its_block():
    q = _qt()
    base = block_digests(q.data, q.scale_inv)
    for bit in (0, 23, 31):
        s = q.scale_inv.clone().view(torch.int32)
        s[1, 2] ^= 1 << bit
        got = block_digests(q.data, s.view(torch.float32))
        assert _changed(base, got) == [1 * 3 + 2]
    td = tensor_digest(base, q.data.shape, "float8_e4m3fn")
    assert td != tensor_digest(got, q.data.shape, "float8_e4m3fn")


def test_mxfp8_groups_with_e8m0_scale():
    g = torch.Generator().manual_seed(case_seed(0, "mx"))
    data = torch.randint(0, 256, (4, 96), generator=g, dtype=torch.uint8)
    scale = torch.randint(100, 140, (4, 3), generator=g, dtype=torch.uint8)
    base = block_digests(data, scale, (1, 32))
    assert base.shape == (12, 2)
    s2 = scale.clone()
    s2[2, 1] ^= 1
    assert _changed(base, block_digests(data, s2, (1, 32))) == [2 * 3 + 1]
    d2 = data.clone()
    d2[3, 95] ^= 0x80
    assert _changed(base, block_digests(d2, scale, (1, 32))) == [3 * 3 + 2]


def test_sampled_selection_deterministic_and_matches_full():
    q = _qt((700, 600))
    n = 6 * 5
    i1 = sample_indices(n, 7, seed=11, name="w", rank_label="tp0.ep0.pp0")
    i2 = sample_indices(n, 7, seed=11, name="w", rank_label="tp0.ep0.pp0")
    assert i1.tolist() == i2.tolist() and len(set(i1.tolist())) == 7
    assert sample_indices(n, 7, seed=12, name="w", rank_label="tp0.ep0.pp0").tolist() != i1.tolist()
    full = lanes_hex(block_digests(q.data, q.scale_inv))
    part = lanes_hex(block_digests(q.data, q.scale_inv, indices=i1))
    assert part == [full[i] for i in i1.tolist()]


def test_swapped_words_change_the_block():
    q = _qt()
    u = q.data.view(torch.uint8).clone()
    u[3, 4:8] = u[3, 0:4] ^ 1  # make the two 4-byte words differ
    base = block_digests(u.view(torch.float8_e4m3fn), q.scale_inv)
    u[3, 0:8] = torch.cat([u[3, 4:8], u[3, 0:4]])
    assert _changed(base, block_digests(u.view(torch.float8_e4m3fn), q.scale_inv)) == [0]


def _definition(data, scale, block):
    """The digest as docs/DIGEST.md defines it, block by block in block order (the slow spelling)."""
    from refit_verify.live.digest import LANES, _M32, SCALE_SALT, _block_words, _mix, _scale_words

    words, _ = _block_words(data, block)
    sw = _scale_words(scale).reshape(-1)
    pos = torch.arange(words.shape[1], dtype=torch.int64)
    lanes = [_mix((_mix(words ^ _mix(pos, cp), cw).sum(1) + _mix(sw ^ SCALE_SALT, cw)) & _M32, cp)
             for cp, cw in LANES]
    return lanes_hex(torch.stack(lanes, 1))


@pytest.mark.parametrize("chunk", [1 << 16, 1 << 10, 300])
def test_tiled_fast_path_equals_definition(monkeypatch, chunk):
    import refit_verify.live.digest as D

    monkeypatch.setattr(D, "CHUNK_WORDS", chunk)  # small tiles: several per block row, partial edges
    q = _qt((300, 700))
    full = _definition(q.data, q.scale_inv, (128, 128))
    assert lanes_hex(block_digests(q.data, q.scale_inv)) == full
    picks = [17, 0, 5, 12]  # the partial corner block, the first, a partial edge of each kind
    assert lanes_hex(block_digests(q.data, q.scale_inv, indices=torch.tensor(picks))) == [full[i] for i in picks]
    g = torch.Generator().manual_seed(case_seed(0, "raw"))
    raw = torch.randint(0, 256, (1, 5 * 4096 + 6), generator=g, dtype=torch.uint8)
    zero = torch.zeros(6, dtype=torch.uint8)
    assert lanes_hex(block_digests(raw, zero, (1, 4096))) == _definition(raw, zero, (1, 4096))
    mx = torch.randint(0, 256, (5, 96), generator=g, dtype=torch.uint8)
    e8 = torch.randint(100, 140, (5, 3), generator=g, dtype=torch.uint8)
    assert lanes_hex(block_digests(mx, e8, (1, 32))) == _definition(mx, e8, (1, 32))
