"""Trainer exporter: stream layout, metadata, quantizers and FP8 selection policies."""

import pytest
import torch

from refit_verify.errors import BadInputError
from refit_verify.fp8 import quantize
from refit_verify.model import load_config, synthesize_weights
from refit_verify.refit.exporter import TrainerExporter, scale_shape
from refit_verify.refit.loader import EngineStore
from refit_verify.refit.selection import (
    explicit_selection, heuristic_selection, loader_selection, matches_pattern, matches_substring,
)

CFG = load_config("tiny-moe-router")
W = synthesize_weights(CFG, 0)
Q = "model.layers.1.self_attn.q_proj.weight"


def test_before_mode_stream_and_metadata():
    ex = TrainerExporter(W, "before", "vllm_per_block", loader_selection(EngineStore(CFG)))
    meta, items = ex.metadata(), list(ex)
    assert [n for n, _ in items] == list(meta)
    got = dict(items)
    for name, (shape, dtype) in meta.items():
        assert tuple(got[name].shape) == tuple(shape) and got[name].dtype == dtype and got[name].is_contiguous()
    assert got[Q].dtype == torch.float8_e4m3fn
    assert tuple(got[Q + "_scale_inv"].shape) == scale_shape(W[Q].shape) and got[Q + "_scale_inv"].dtype == torch.float32
    names = [n for n, _ in items]
    assert names.index(Q + "_scale_inv") == names.index(Q) + 1  # scale right after its weight
    q = quantize(W[Q], "vllm_per_block")
    assert torch.equal(got[Q].view(torch.uint8), q.data.view(torch.uint8))


def test_after_mode_sends_bf16_as_is():
    ex = TrainerExporter(W, "after", "vllm_per_block")
    items = list(ex)
    assert [n for n, _ in items] == list(W)
    assert all(t.dtype == torch.bfloat16 and torch.equal(t, W[n]) for n, t in items)


def test_payload_roughly_halves_before_transfer():
    sel = loader_selection(EngineStore(load_config("tiny-llama")))
    w = synthesize_weights(load_config("tiny-llama"), 0)
    before = TrainerExporter(w, "before", "vllm_per_block", sel).summary()
    after = TrainerExporter(w, "after", "vllm_per_block", sel).summary()
    linear_bytes = sum(w[n].numel() for n in sel.names) * 2
    assert after.payload_bytes - before.payload_bytes == pytest.approx(linear_bytes / 2, rel=0.01)


def test_user_callable_quantizer_and_nemo_trailing_singleton():
    def nemo_like(w):
        q = quantize(w, "nemo_rl")
        return q.data, q.scale_inv.unsqueeze(-1)  # [Mb, Nb, 1] as NeMo-RL returns

    ex = TrainerExporter(W, "before", nemo_like, explicit_selection([Q]))
    got = dict(ex)
    assert got[Q + "_scale_inv"].shape == scale_shape(W[Q].shape) and ex.quantizer_name == "nemo_like"


def test_user_quantizer_with_wrong_shape_is_named():
    ex = TrainerExporter(W, "before", lambda w: (w.to(torch.float8_e4m3fn), torch.ones(1, 1)), explicit_selection([Q]))
    with pytest.raises(BadInputError, match="q_proj.weight_scale_inv"):
        list(ex)


def test_one_shot_iterator_is_accepted():
    ex = TrainerExporter(iter(W.items()), "before", "vllm_per_block", explicit_selection([Q]))
    assert len(list(ex)) == len(W) + 1


def test_heuristic_catches_router_and_bf16_first_layer():
    engine = EngineStore(CFG).fp8_hf_names()
    chosen = heuristic_selection().select({n: t.shape for n, t in W.items()})
    assert "model.layers.1.mlp.gate.weight" in chosen - engine  # router
    assert "model.layers.0.self_attn.q_proj.weight" in chosen - engine  # layer 0 kept BF16 by the engine
    assert not any(s in n for n in chosen for s in ("norm", "embed", "lm_head"))


def test_options_remove_router_and_first_layer():
    engine = EngineStore(CFG).fp8_hf_names()
    sel = heuristic_selection(keep_first_layers=1, exclude_routers=True)
    assert sel.select({n: t.shape for n, t in W.items()}) == engine


def test_keep_last_layers():
    chosen = heuristic_selection(keep_last_layers=1).select({n: t.shape for n, t in W.items()})
    assert not any(n.startswith("model.layers.1.") for n in chosen) and Q.replace(".1.", ".0.") in chosen


@pytest.mark.parametrize("name,hit", [
    ("model.layers.0.mlp.gate.weight", True),
    ("model.layers.0.mlp.gate_proj.weight", False),
    ("model.layers.0.mlp.gate_up_proj.weight", False),
])
def test_gate_pattern_matches_whole_components(name, hit):
    assert matches_pattern(name, "mlp.gate") is hit
    assert matches_substring(name, "mlp.gate")  # the trap: substring matching swallows all of them


def test_router_patterns_cover_shared_expert_gate():
    sel = heuristic_selection(exclude_routers=True)
    assert not sel.is_fp8("model.layers.0.mlp.shared_expert_gate.weight", (1, 256))
    assert sel.is_fp8("model.layers.0.mlp.gate_up_proj.weight", (512, 256))


def test_substring_ignore_swallows_gate_proj():
    shapes = {n: t.shape for n, t in W.items()}
    by_component = heuristic_selection(ignore=("mlp.gate",)).select(shapes)
    by_substring = heuristic_selection(ignore=("mlp.gate",), ignore_match="substring").select(shapes)
    assert "model.layers.1.mlp.gate_proj.weight" in by_component - by_substring
    assert "model.layers.1.mlp.gate.weight" not in by_component


def test_bad_mode_is_refused():
    with pytest.raises(BadInputError):
        TrainerExporter(W, "sideways")
