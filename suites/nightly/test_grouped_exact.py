"""The grouped quantizer (one launch over many tensors) is bit-exact with the reference on the GPU."""

from __future__ import annotations

import pytest
import torch

from refit_verify.fp8.kernels import SUPPORTED_RECIPES
from refit_verify.fp8.quantize import quantize

pytestmark = pytest.mark.triton
SHAPES = [(256, 384), (130, 200), (1, 129), (384, 128), (257, 1000)]


def _inputs(dev, seed):
    g = torch.Generator().manual_seed(seed)
    ts = [(torch.randn(s, generator=g) * torch.rand(s, generator=g).pow(8) * 3).to(torch.bfloat16) for s in SHAPES]
    ts[1][0, 0] = float("nan")
    ts[2][0, 5] = float("inf")
    ts[3][:128, :] = 0
    ts[4][200, 999] = 1e4
    ts[4][-1, -1] = -300.0  # NeMo pads partial blocks with x[-1, -1]: it sets their amax
    return [t.to(dev) for t in ts]


@pytest.mark.parametrize("name", SUPPORTED_RECIPES)
def test_grouped_matches_reference(name, dev):
    from refit_verify.fp8.kernels.grouped import quantize_grouped

    xs = _inputs(dev, 15)
    got = quantize_grouped(xs, name)
    for i, (x, q) in enumerate(zip(xs, got)):
        ref = quantize(x, name)
        assert torch.equal(q.data.view(torch.uint8).cpu(), ref.data.contiguous().view(torch.uint8).cpu()), (name, i)
        assert torch.equal(q.scale_inv.view(torch.int32).cpu(), ref.scale_inv.contiguous().view(torch.int32).cpu()), (name, i)


def test_grouped_into_caller_buffers(dev):
    from refit_verify.fp8.kernels.grouped import quantize_grouped

    xs = _inputs(dev, 16)
    out = [(torch.full(x.shape, 0x55, dtype=torch.uint8, device=dev).view(torch.float8_e4m3fn),
            torch.full(((x.shape[0] + 127) // 128, (x.shape[1] + 127) // 128), -1.0, device=dev)) for x in xs]
    quantize_grouped(xs, "vllm_per_block", out=out)
    for x, (d, s) in zip(xs, out):
        ref = quantize(x, "vllm_per_block")
        assert torch.equal(d.view(torch.uint8).cpu(), ref.data.contiguous().view(torch.uint8).cpu())
        assert torch.equal(s.view(torch.int32).cpu(), ref.scale_inv.view(torch.int32).cpu())
