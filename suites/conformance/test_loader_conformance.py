"""The reference loader (refit_verify.refit, placement "vllm") against the real vLLM 0.33 loader.

Same shards into vLLM's QKVParallelLinear / MergedColumnParallelLinear / RowParallelLinear and into
the reference EngineLinear, every parameter compared bitwise, raises compared by message and by the
partial state they leave. Then whole-model refits: run_refit (reference) vs run_refit_vllm (real
loader) on the tiny Llama, FP8-before bitwise, FP8-after reported.
"""

from __future__ import annotations

import pytest
import torch

from test_loader_vllm_pins import LAYERS, SHARD_IDS, make_shards, misplaced_rows, vllm_load

refit = pytest.importorskip("refit_verify.refit.loader", reason="reference loader (branch refit) not merged yet")

from refit_verify.errors import ShardPlacementError  # noqa: E402
from refit_verify.model.config import LinearSpec, ShardSpec, load_config  # noqa: E402
from refit_verify.refit import postload  # noqa: E402
from refit_verify.refit.loader import EngineLinear, vllm_shape_exempt  # noqa: E402


def bits(t):
    return t.contiguous().view({1: torch.uint8, 2: torch.int16, 4: torch.int32}[t.element_size()])


def same(a, b):
    return a.shape == b.shape and torch.equal(bits(a), bits(b))


def reference_load(name):
    kind, sizes, K, _, _, _ = LAYERS[name]
    ids = SHARD_IDS[kind][: len(sizes)]
    spec = LinearSpec("proj", tuple(ShardSpec(f"{sid}_proj", sid, n) for sid, n in zip(ids, sizes)), K)
    lin = EngineLinear.create(f"layer.{name}", spec, True, "vllm")
    shards = make_shards(name, kind, sizes, K)
    err = None
    for i, (sid, _, q, s) in enumerate(shards):
        try:
            lin.load_weight(i, q, f"{sid}.weight")
            lin.load_scale(i, s, f"{sid}.weight_scale_inv")
        except ShardPlacementError as exc:
            err = (exc, sid)
            break
    return lin, spec, err, shards


@pytest.mark.parametrize("name", list(LAYERS))
def test_reference_layer_matches_vllm_bitwise(V, name):
    r, _ = vllm_load(V, name)
    lin, spec, err, shards = reference_load(name)
    assert r["allow_fp8_block_shape_mismatch"] == vllm_shape_exempt(spec, 128), "create-time shape check exemption"
    if r["status"] == "raised":
        e = r["exception"]
        assert err is not None, f"vLLM raises {e['text']} on shard {e['shard_id']!r}; the reference loads silently"
        exc, sid = err
        assert (f"{exc.cause_type}: {exc.cause_message}", sid) == (e["text"], e["shard_id"])
        state = r["partial"]
    else:
        assert err is None, err
        state = r["loaded"]
        for p in ("weight", "weight_scale_inv"):  # vLLM's CPU processing keeps the bytes (pinned)
            assert same(r["processed"][p], getattr(lin, p)), f"{name}.{p} after process_weights_after_loading"
    assert same(state["weight"], lin.weight), f"{name}.weight"
    assert same(state["weight_scale_inv"], lin.weight_scale_inv), f"{name}.weight_scale_inv"


@pytest.mark.parametrize("name", [n for n, v in LAYERS.items() if v[4] == "ok"])
def test_reference_reports_vllm_misscaled_rows(V, name):
    """The reference's scale_misplaced finding names exactly the rows vLLM mis-scales."""
    r, shards = vllm_load(V, name)
    lin, _, _, _ = reference_load(name)
    assert postload.misplaced_rows(lin) == misplaced_rows(r["loaded"]["weight_scale_inv"], shards) == LAYERS[name][5]


# ------------------------------------------------------------------ whole model, both refit paths

CFG = load_config("tiny-llama", layers=1)


@pytest.fixture(scope="module")
def runs(V):
    from refit_verify.engine.vllm_refit import run_refit_vllm
    from refit_verify.refit.run import run_refit

    return {"ref": run_refit(CFG, seed=5), "vllm": run_refit_vllm(CFG, seed=5),
            "vllm_patched": run_refit_vllm(CFG, seed=5, paths=("after",), patched_loader=True)}


def test_real_engine_has_the_reference_parameter_set(runs):
    names = set(runs["vllm"].states["before"].params())
    assert names == set(runs["ref"].states["before"].params())


def test_fp8_before_real_vllm_equals_reference_bitwise(runs):
    from refit_verify.refit.run import compare_states

    ref, got = runs["ref"].states["before"], runs["vllm"].states["before"]
    bad = [c.tensor for c in compare_states(ref, got) if not c.equal]
    assert not bad, bad
    assert not [f for f in runs["vllm"].findings if f.path == "before" and f.severity == "error"]


def test_fp8_after_real_vllm_is_reported_not_quantized(runs):
    """Finding, not a bug in the harness: vLLM 0.33 has no online quantization for block FP8."""
    res = runs["vllm"]
    found = res.findings_of("engine_no_online_quant", "after")
    fp8 = [p for p, lin in res.stores["after"].linears.items() if lin.fp8]
    assert sorted(f.tensor for f in found) == sorted(p + ".weight" for p in fp8)
    assert all(f.detail["rel_l2"] > 0.9 for f in found), [f.detail["rel_l2"] for f in found]
    assert not res.bitwise_equal and res.findings_of("bitwise_mismatch")
    assert runs["ref"].bitwise_equal, "the reference loader's FP8-after quantizes on load"


def test_patched_loader_after_equals_reference_after(runs):
    from refit_verify.refit.run import compare_states

    bad = [c.tensor for c in compare_states(runs["ref"].states["after"], runs["vllm_patched"].states["after"])
           if not c.equal]
    assert not bad, bad


def test_result_shape_matches_run_refit(runs):
    a, b = runs["ref"].to_dict(), runs["vllm"].to_dict()
    assert set(a) == set(b) and set(a["paths"]) == set(b["paths"])
    assert set(a["paths"]["before"]) == set(b["paths"]["before"])
