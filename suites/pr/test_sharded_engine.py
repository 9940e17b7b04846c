"""Sharded reference engine (tp/ep/pp) against vLLM 0.33's sharding rules, and the refit ledger."""

import pytest
import torch

from refit_verify.fp8 import quantize
from refit_verify.layout import Layout, Rank
from refit_verify.model.config import from_dict, load_config
from refit_verify.model.weights import synthesize_weights
from refit_verify.refit.placement_sharded import QkvPartition, expert_range, pp_layer_range, qkv_partition
from refit_verify.refit.sharded_run import run_sharded_refit

SMALL = {"hidden_size": 256, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 2,
         "num_key_value_heads": 2, "head_dim": 128, "vocab_size": 128}


def small(**kw):
    return from_dict(dict(SMALL, **kw), default_name=kw.pop("name", "small"))


@pytest.fixture(scope="module")
def deepseek_tp2_ep2():
    return run_sharded_refit("tiny-deepseek-v3", Layout(tp=2, ep=2))


def test_rules_pinned_from_vllm_source():
    # QKVParallelLinear: kv heads replicated when tp exceeds them; get_pp_indices; determine_expert_map
    assert qkv_partition(4, 2, 2) == QkvPartition(2, 1, 1)
    assert qkv_partition(8, 2, 4) == QkvPartition(2, 1, 2)
    assert qkv_partition(8, 1, 8).shard_rank("k", 7) == 0 and qkv_partition(8, 1, 8).shard_rank("q", 7) == 7
    assert [pp_layer_range(5, p, 3) for p in range(3)] == [(0, 2), (2, 4), (4, 5)]
    assert [pp_layer_range(4, p, 2) for p in range(2)] == [(0, 2), (2, 4)]
    assert [expert_range(5, 3, r) for r in range(3)] == [(0, 2), (2, 2), (4, 1)]


def test_moe_tp2_ep2_bitwise_on_every_rank(deepseek_tp2_ep2):
    # tiny-qwen3-moe at tp=2, ep=2 runs through the job: suites/pr/test_sharded_job.py
    r = deepseek_tp2_ep2
    assert r.hazards() == set(), [f.describe() for f in r.findings]
    assert r.bitwise_equal
    assert {c.rank for c in r.comparisons} == {x.label for x in Layout(2, 2).ranks()}
    for row in r.paths["before"].ledger:
        assert row["never"] == 0 and row["twice_or_more"] == 0 and row["written_once"] == row["parts"]


def test_ep_places_whole_experts_linearly(deepseek_tp2_ep2):
    # ep=2 over tp=2: four EP ranks (flat index ep * tp + tp_index), one whole expert each, not tp-sliced;
    # layer 0 is dense (first_k_dense_replace = 1) and holds no experts
    state = deepseek_tp2_ep2.states["before"]
    w = synthesize_weights(load_config("tiny-deepseek-v3"), 0)
    for rank in Layout(2, 2).ranks():
        e = rank.ep * 2 + rank.tp
        assert "model.layers.0.mlp.experts.w13_weight" not in state.params(rank)
        w13 = state.params(rank)["model.layers.1.mlp.experts.w13_weight"]
        assert tuple(w13.shape) == (1, 512, 256)
        q = quantize(w[f"model.layers.1.mlp.experts.{e}.up_proj.weight"], "vllm_per_block")
        assert torch.equal(w13[0, 256:].view(torch.uint8), q.data.view(torch.uint8))
        s13 = state.params(rank)["model.layers.1.mlp.experts.w13_weight_scale_inv"]
        assert torch.equal(s13[0, 2:], q.scale_inv)


def test_tp_slices_codes_and_scales_as_vllm():
    cfg = small(num_hidden_layers=1)
    r = run_sharded_refit(cfg, Layout(tp=2), paths=("before",))
    w = synthesize_weights(cfg, 0)
    q = quantize(w["model.layers.0.self_attn.o_proj.weight"], "vllm_per_block")
    rank1 = r.states["before"].params(Rank(tp=1))
    assert torch.equal(rank1["model.layers.0.self_attn.o_proj.weight"].view(torch.uint8),
                       q.data[:, 128:].view(torch.uint8))  # row parallel: K sliced
    assert torch.equal(rank1["model.layers.0.self_attn.o_proj.weight_scale_inv"], q.scale_inv[:, 1:2])
    k = quantize(w["model.layers.0.self_attn.k_proj.weight"], "vllm_per_block")
    qkv = rank1["model.layers.0.self_attn.qkv_proj.weight"]
    assert tuple(qkv.shape) == (384, 256)
    assert torch.equal(qkv[128:256].view(torch.uint8), k.data[128:].view(torch.uint8))


def test_kv64_per_rank_reports_placement_hazard_naming_tensor_and_rank():
    r = run_sharded_refit("odd-kv64", Layout(tp=2))
    raised = r.findings_of("placement_raised")
    assert {(f.tensor, f.rank) for f in raised if f.path == "before"} == {
        ("model.layers.0.self_attn.v_proj.weight_scale_inv", "tp0.ep0.pp0"),
        ("model.layers.0.self_attn.v_proj.weight_scale_inv", "tp1.ep0.pp0")}
    assert "exceeds dimension size" in raised[0].message


def test_pp2_stage_local_names_collide():
    r = run_sharded_refit(small(), Layout(pp=2), stage_names="local")
    assert "name_collision" in r.hazards()
    twice = {(f.tensor, f.rank) for f in r.findings_of("written_twice") if f.path == "before"}
    assert ("model.layers.0.self_attn.qkv_proj.weight", "tp0.ep0.pp0") in twice
    never = {(f.tensor, f.rank) for f in r.findings_of("never_loaded") if f.path == "before"}
    assert ("model.layers.1.mlp.down_proj.weight_scale_inv", "tp0.ep0.pp1") in never
    assert r.bitwise_equal  # both paths agree on the wrong tensor: only the ledger sees it


def test_pp2_global_names_clean():
    r = run_sharded_refit(small(), Layout(pp=2))
    assert r.hazards() == set() and r.bitwise_equal


def test_quantize_before_or_after_gather_on_a_192_row_partition():
    # gate/up of 192 over tp=2: 96 rows per rank. Gathered-then-quantized scales are narrowed by vLLM
    # at rank * ceil(96/128) blocks: silently the wrong block for rank 1; per-shard scales fit the narrow.
    cfg = small(num_hidden_layers=1, intermediate_size=192)
    gathered = run_sharded_refit(cfg, Layout(tp=2), trainer_quant="after_gather")
    sharded = run_sharded_refit(cfg, Layout(tp=2), trainer_quant="before_gather")
    mis = {(f.tensor, f.rank, f.shard) for f in gathered.findings_of("scale_misplaced") if f.path == "before"}
    assert ("model.layers.0.mlp.gate_up_proj.weight_scale_inv", "tp1.ep0.pp0", 0) in mis
    assert not gathered.bitwise_equal and sharded.bitwise_equal
    assert "shape_validation" in sharded.hazards()  # down_proj K = 96 per rank: vLLM refuses to build


def test_never_loaded_expert_scale_stays_one():
    cfg = load_config("tiny-qwen3-moe", layers=1)
    w = synthesize_weights(cfg, 0)
    del w["model.layers.0.mlp.experts.3.down_proj.weight"]
    r = run_sharded_refit(cfg, Layout(ep=2), weights=w, paths=("before",))
    f = [f for f in r.findings_of("never_loaded") if f.tensor.endswith("w2_weight_scale_inv")]
    assert f and f[0].rank == "tp0.ep1.pp0" and "stays 1.0" in f[0].message
    assert bool((r.states["before"].params(Rank(ep=1))["model.layers.0.mlp.experts.w2_weight_scale_inv"][1] == 1).all())
