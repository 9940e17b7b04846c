"""`expect`: the engine's names, fusing and scale placement; equal to what both refit paths leave behind."""

from __future__ import annotations

import pytest
import torch

from refit_verify.errors import BadInputError
from refit_verify.fp8 import quantize
from refit_verify.layout import Layout, Rank
from refit_verify.live.compare import compare_documents
from refit_verify.live.expect import engine_tensors, expect
from refit_verify.live.fileformat import digest_document
from refit_verify.model import load_config, synthesize_weights
from refit_verify.refit.run import run_refit


@pytest.fixture(scope="module")
def tiny():
    cfg = load_config("tiny-llama", layers=1)
    return cfg, synthesize_weights(cfg, 3)


def test_engine_names_and_fusing(tiny):
    cfg, w = tiny
    e = engine_tensors(w)
    p = "model.layers.0."
    assert {n for n in e if n.startswith(p)} == {p + s for s in (
        "self_attn.qkv_proj.weight", "self_attn.qkv_proj.weight_scale_inv", "self_attn.o_proj.weight",
        "self_attn.o_proj.weight_scale_inv", "mlp.gate_up_proj.weight", "mlp.gate_up_proj.weight_scale_inv",
        "mlp.down_proj.weight", "mlp.down_proj.weight_scale_inv", "input_layernorm.weight",
        "post_attention_layernorm.weight")}
    q = quantize(w[p + "mlp.up_proj.weight"], "vllm_per_block")
    gu, gus = e[p + "mlp.gate_up_proj.weight"], e[p + "mlp.gate_up_proj.weight_scale_inv"]
    n = q.data.shape[0]
    assert torch.equal(gu[n:].view(torch.uint8), q.data.view(torch.uint8))
    assert torch.equal(gus[n // 128:].view(torch.int32), q.scale_inv.view(torch.int32))
    assert e["model.embed_tokens.weight"].dtype == torch.bfloat16


@pytest.mark.parametrize("path", ["before", "after"])
def test_expect_equals_both_refit_paths(tiny, path):
    cfg, w = tiny
    st = run_refit(cfg, w, paths=(path,)).states[path]
    got = digest_document(st.ranks, "vllm_per_block", (128, 128), st.layout, "engine")
    d = compare_documents(expect(w), got)
    assert d.equal, d.to_dict()
    assert d.compared_blocks > 100


def _qkv(rows):
    g = torch.Generator().manual_seed(1)
    return {f"model.layers.0.self_attn.{k}_proj.weight": (torch.randn(r, 128, generator=g) * 0.02).to(torch.bfloat16)
            for k, r in zip("qkv", rows)}


def _bits(t):
    return t.view(torch.int32)


def test_unaligned_shards_follow_vllm_placement():
    w = _qkv((64, 64, 128))
    s = engine_tensors(w)["model.layers.0.self_attn.qkv_proj.weight_scale_inv"]
    q, v = (quantize(w[f"model.layers.0.self_attn.{k}_proj.weight"], "vllm_per_block") for k in "qv")
    # vLLM rounds each shard's start block up: k (row 64) and v (row 128) both land in block 1, v last
    assert s.shape == (2, 1)
    assert torch.equal(_bits(s[0]), _bits(q.scale_inv[0])) and torch.equal(_bits(s[1]), _bits(v.scale_inv[0]))
    with pytest.raises(BadInputError, match="qkv_proj.weight_scale_inv"):
        expect(_qkv((128, 64, 64)))  # v starts at block ceil(192/128) = 2 of 2: vLLM's narrow raises
    w.pop("model.layers.0.self_attn.v_proj.weight")
    with pytest.raises(BadInputError, match="needs 3 shards"):
        engine_tensors(w)


def test_layout_needs_a_placement_and_one_plugs_in(tiny):
    cfg, w = tiny
    with pytest.raises(BadInputError, match="pass config="):
        expect(w, layout=Layout(tp=2))

    def replicate(params, layout):
        return {r: params for r in layout.ranks()}

    doc = expect(w, layout=Layout(tp=2), placement=replicate)
    assert sorted(doc["ranks"]) == [Rank(0).label, Rank(1).label] and doc["layout"]["tp"] == 2


def test_expect_of_the_fp8_before_payload_equals_expect_of_bf16(tiny):
    from refit_verify.refit.exporter import TrainerExporter

    cfg, w = tiny
    sent = dict(TrainerExporter(w, "before", "vllm_per_block"))
    assert any(n.endswith("_scale_inv") for n in sent)
    assert compare_documents(expect(w), expect(sent)).equal


def _refit(engine, weights, drop=()):
    from refit_verify.refit.exporter import TrainerExporter

    ex = TrainerExporter(weights, "before", "vllm_per_block")
    engine.begin_refit(ex.metadata())
    engine.receive([(n, t) for n, t in ex if not any(n.startswith(d) for d in drop)])
    engine.finish_refit()
    st = engine.state()
    return digest_document(st.ranks, "vllm_per_block", (128, 128), st.layout, "engine")


def test_reference_engine_stale_shard_and_skipped_parameter_named(tiny):
    """Through the Engine protocol: a k_proj sent from the previous step, a down_proj never sent."""
    from refit_verify.refit.reference_engine import ReferenceEngine

    cfg, w1 = tiny
    w0 = synthesize_weights(cfg, 4)
    engine = ReferenceEngine(cfg)
    assert compare_documents(expect(w0), _refit(engine, w0)).equal
    k, down = "model.layers.0.self_attn.k_proj.weight", "model.layers.0.mlp.down_proj.weight"
    stale = dict(w1)
    stale[k] = w0[k]
    d = compare_documents(expect(w1), _refit(engine, stale, drop=(down,)))
    got = sorted({(n, b) for _, n, b, _, _ in d.blocks})
    qkv = "model.layers.0.self_attn.qkv_proj.weight"
    # q is rows 0..255, k rows 256..383: block row 2 (2 block columns); down_proj (256 x 768): 2 x 6 blocks
    assert got == sorted([(qkv, 4), (qkv, 5)] + [(down, b) for b in range(12)])
    assert not (d.missing or d.extra or d.shape or d.meta)


def test_bucketed_expectation_waits_for_shards_and_scales(tiny):
    """Buckets split a fused parameter and put a weight's scale in the next bucket: same document."""
    from refit_verify.live.expect import Expectation
    from refit_verify.refit.exporter import TrainerExporter

    cfg, w = tiny
    stream = list(TrainerExporter(w, "before", "vllm_per_block"))
    ex = Expectation()
    for i in range(0, len(stream), 3):  # 3 tensors a bucket: weight and scale often apart
        ex.add(stream[i:i + 3])
        assert not any(n.endswith("k_proj.weight") for n in ex.held) or "model.layers.0.self_attn.qkv_proj.weight" \
            not in ex.ranks.get(Rank(), {})
    assert ex.document() == expect(w)
    with pytest.raises(BadInputError, match="still wait"):
        Expectation().add([(n, t) for n, t in stream if n != "model.layers.0.mlp.down_proj.weight_scale_inv"]).document()
