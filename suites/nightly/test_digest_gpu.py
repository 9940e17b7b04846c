"""The GPU digest kernel gives the CPU definition's integers bit for bit (live/digest.py)."""

from __future__ import annotations

import pytest
import torch

from refit_verify.live.digest import block_digests
from refit_verify.live.digest_triton import block_digests_many, block_digests_triton

pytestmark = pytest.mark.triton


@pytest.mark.parametrize("shape", [(256, 384), (130, 200), (1, 132), (300, 4), (4096, 14336), (1000, 1028)])
def test_gpu_digest_equals_cpu(shape, dev):
    g = torch.Generator().manual_seed(shape[0] * 7 + shape[1])
    m, n = shape
    d = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8).view(torch.float8_e4m3fn)
    s = torch.randn(((m + 127) // 128, (n + 127) // 128), generator=g)
    want = block_digests(d, s)
    got = block_digests_triton(d.to(dev), s.to(dev)).cpu()
    assert torch.equal(got, want)
    assert torch.equal(block_digests(d.to(dev), s.to(dev)).cpu(), want)  # the dispatching entry point


def test_gpu_digest_sees_one_byte(dev):
    d = torch.zeros((256, 256), dtype=torch.uint8)
    s = torch.ones((2, 2))
    a = block_digests_triton(d.to(dev).view(torch.float8_e4m3fn), s.to(dev)).cpu()
    d[200, 17] = 1
    b = block_digests_triton(d.to(dev).view(torch.float8_e4m3fn), s.to(dev)).cpu()
    assert (a != b).any(dim=1).tolist() == [False, False, True, False]


def test_gpu_digest_one_launch_equals_cpu(dev):
    g = torch.Generator().manual_seed(5)
    pairs = []
    for m, n in [(256, 384), (130, 200), (1, 132), (300, 4), (1024, 4096)]:
        d = torch.randint(0, 256, (m, n), generator=g, dtype=torch.uint8).view(torch.float8_e4m3fn)
        pairs.append((d, torch.randn(((m + 127) // 128, (n + 127) // 128), generator=g)))
    got = block_digests_many([(d.to(dev), s.to(dev)) for d, s in pairs])
    for (d, s), o in zip(pairs, got):
        assert torch.equal(o.cpu(), block_digests(d, s))
