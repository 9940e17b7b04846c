"""What the real vLLM 0.33 loader does with block-FP8 shards, pinned (FACTS.md §4).

These need only vLLM; test_loader_conformance.py holds the reference loader against the same runs.
Shards are quantized with the reference `vllm_per_block` recipe, itself bit-exact with vLLM's
quantizer (test_quantizer_conformance.py).
"""

from __future__ import annotations

import pytest
import torch

from refit_verify.fp8 import quantize
from refit_verify.fp8.format import FP32_FILL

# name -> (layer kind, shard sizes, K, head_size, vLLM outcome, misplaced inclusive row ranges)
LAYERS = {
    "qkv_256_128_128": ("qkv", [256, 128, 128], 256, None, "ok", []),
    "qkv_kv64_256_64_64": ("qkv", [256, 64, 64], 256, 64, "RuntimeError: start (3) + length (1) exceeds dimension "
                           "size (3).", None),
    "qkv_384_192_128": ("qkv", [384, 192, 128], 256, 96, "ok", [(576, 639)]),
    "qkv_mimo_3072_192_128": ("qkv", [3072, 192, 128], 128, 192, "ok", [(3264, 3327)]),
    "gate_up_512_512": ("merged", [512, 512], 128, None, "ok", []),
    "gate_up_320_320": ("merged", [320, 320], 256, None, "RuntimeError: start (3) + length (3) exceeds dimension "
                        "size (5).", None),
    "fused_1536_576": ("merged", [1536, 576], 128, None, "ok", []),
    "down_256x512": ("row", [256], 512, None, "ok", []),
    "row_300x200": ("row", [300], 200, None, "ok", []),
}
SHARD_IDS = {"qkv": ["q", "k", "v"], "merged": [0, 1, 2, 3], "row": [None]}


def make_shards(name, kind, sizes, K, seed=0):
    g = torch.Generator().manual_seed(seed + sum(map(ord, name)))
    out = []
    for i, (sid, n) in enumerate(zip(SHARD_IDS[kind], sizes)):
        # each shard at its own magnitude, as trained q/k/v are: a borrowed scale then shows
        w = (torch.randn(n, K, generator=g) * 0.05 / 4**i).bfloat16()
        q = quantize(w, "vllm_per_block", name=f"{name}.{sid}")
        out.append((sid, w, q.data, q.scale_inv))
    return out


def vllm_load(V, name):
    kind, sizes, K, hs, _, _ = LAYERS[name]
    layer = V.build_linear(kind, sizes, K, head_size=hs)
    shards = make_shards(name, kind, sizes, K)
    # fp8 as uint8 bytes, as a packed transport delivers them: the driver must bit-copy, not value-cast
    return V.load_shards(layer, [(sid, q.view(torch.uint8), s) for sid, _, q, s in shards]), shards


def row_scales(scale, n, block=128):
    return scale.repeat_interleave(block, 0)[:n]


def misplaced_rows(scale, shards, block=128):
    """Inclusive row ranges whose effective (block-expanded) scale is not their own shard's."""
    rows, off, bad = [], 0, []
    for _, w, _, s in shards:
        rows.append(row_scales(s, w.shape[0], block))
    expected = torch.cat(rows)
    eff = row_scales(scale, expected.shape[0], block)
    differs = (eff.view(torch.int32) != expected.view(torch.int32)).any(1)
    idx = differs.nonzero().flatten().tolist()
    for r in idx:
        if bad and bad[-1][1] == r - 1:
            bad[-1] = (bad[-1][0], r)
        else:
            bad.append((r, r))
    return bad


@pytest.mark.parametrize("name", list(LAYERS))
def test_vllm_layer_load_outcome(V, name):
    r, shards = vllm_load(V, name)
    outcome, wrong = LAYERS[name][4], LAYERS[name][5]
    if outcome != "ok":
        assert r["status"] == "raised" and r["exception"]["text"] == outcome, r["exception"]
        assert r["exception"]["param"] == "weight_scale_inv"
        return
    assert r["status"] == "ok", r["exception"]
    w = r["loaded"]["weight"]
    assert torch.equal(w.view(torch.uint8), torch.cat([q for _, _, q, _ in shards]).view(torch.uint8)), \
        "vLLM places weight rows exactly"
    s = r["loaded"]["weight_scale_inv"]
    assert not (s == FP32_FILL).any(), "every scale entry written"
    assert misplaced_rows(s, shards) == wrong


def test_vllm_misscale_costs_accuracy(V):
    """The 3072/192/128 mis-scale is silent but not harmless: v rows 0..63 use k's scale block."""
    r, shards = vllm_load(V, "qkv_mimo_3072_192_128")
    w, s = r["loaded"]["weight"], r["loaded"]["weight_scale_inv"]
    deq = w.float() * row_scales(s, w.shape[0])
    src = torch.cat([x.float() for _, x, _, _ in shards])
    rel = lambda a, b: float((a - b).norm() / b.norm())  # noqa: E731
    bad, good = rel(deq[3264:3328], src[3264:3328]), rel(deq[3328:], src[3328:])
    assert good < 0.05 < bad, (bad, good)


def test_vllm_processing_keeps_loaded_bytes_on_cpu(V):
    """process_weights_after_loading (Triton block kernel's strategy, no DeepGEMM here) leaves the
    loaded weight and scale bytes as they were: the reference loader has no post-processing either."""
    r, _ = vllm_load(V, "qkv_256_128_128")
    for p in ("weight", "weight_scale_inv"):
        a, b = r["loaded"][p], r["processed"][p]
        assert a.shape == b.shape and torch.equal(a.view(torch.uint8), b.contiguous().view(torch.uint8)), p
