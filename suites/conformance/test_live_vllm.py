"""Live check against the real vLLM 0.33 model on CPU: the worker extension's digests vs `expect`.

A full `LLM(...)` engine cannot start on this CPU-only host (the CUDA wheel resolves to vLLM's
UnspecifiedPlatform: no executor, no attention backend), so the extension's methods are called on a
worker-like object whose `get_model()` returns the real LlamaForCausalLM that vLLM's `get_model`
built, which is exactly what vLLM's Worker provides to the mixed-in class. The refit paths are the
real ones: `model.load_weights` (+ `process_weights_after_loading`), with the trainer's FP8 or with
NeMo-RL's quantize-on-load patch in front of BF16, and the weight-transfer API's model side
(`initialize_layerwise_reload` / `load_weights` / `finalize_layerwise_reload`, what every
`update_weights` engine runs around its transport).
"""

from __future__ import annotations

import pytest
import torch

from refit_verify.live.compare import compare_documents
from refit_verify.live.expect import expect
from refit_verify.live.vllm import RefitVerifyExtension, engine_document
from refit_verify.model import load_config, synthesize_weights
from refit_verify.refit.exporter import TrainerExporter

R0 = "tp0.ep0.pp0"
L0 = "model.layers.0."


class Worker(RefitVerifyExtension):
    """Stands in for vLLM's Worker, into which worker_extension_cls is mixed."""

    def __init__(self, model):
        self.model = model

    def get_model(self):
        return self.model


@pytest.fixture(scope="module")
def live(V):
    from refit_verify.engine.vllm_refit import build_engine

    cfg = load_config("tiny-llama", layers=1)
    w0, w1 = synthesize_weights(cfg, 1), synthesize_weights(cfg, 0)
    model = build_engine(cfg, w0)
    return {"V": V, "w0": w0, "w1": w1, "worker": Worker(model), "model": model,
            "e0": expect(w0), "e1": expect(w1)}


def _fp8_stream(weights):
    return list(TrainerExporter(weights, "before", "vllm_per_block"))


def _digests(live, **kw):
    # what llm.collective_rpc("refit_verify_digests", kwargs=kw) returns on a one-rank engine
    return engine_document([live["worker"].refit_verify_digests(**kw)])


def _reset(live):
    live["V"].load_weights_into(live["model"], _fp8_stream(live["w0"]), process=True)
    assert compare_documents(live["e0"], _digests(live)).equal


def _load_weights_before(live, stream):
    live["V"].load_weights_into(live["model"], stream, process=False)
    # usable right after load_weights, before post-load processing ...
    mid = compare_documents(live["e1"], _digests(live))
    live["V"].load_weights_into(live["model"], [], process=True)
    return mid


def _patched_after(live, stream):
    from refit_verify.engine.vllm_refit import _patched_batch

    live["V"].load_weights_into(live["model"], _patched_batch(stream, "vllm_per_block"), process=True)


def _update_weights(live, stream):
    from vllm.config import set_current_vllm_config
    from vllm.model_executor.model_loader.reload import finalize_layerwise_reload, initialize_layerwise_reload

    model, V = live["model"], live["V"]
    cfg = V.vllm_config_of(model)
    with set_current_vllm_config(cfg):
        initialize_layerwise_reload(model)  # start_weight_update
        model.load_weights((n, V._as_fp8(t) if n.endswith(".weight") else t) for n, t in stream)  # update_weights
        finalize_layerwise_reload(model, cfg.model_config)  # finish_weight_update


@pytest.mark.parametrize("path", ["load_weights_fp8_before", "load_weights_fp8_after_patched", "update_weights"])
def test_extension_digests_equal_expect(live, path):
    _reset(live)
    if path == "load_weights_fp8_before":
        assert _load_weights_before(live, _fp8_stream(live["w1"])).equal
    elif path == "load_weights_fp8_after_patched":
        _patched_after(live, list(live["w1"].items()))
    else:
        _update_weights(live, _fp8_stream(live["w1"]))
    d = compare_documents(live["e1"], _digests(live))
    assert d.equal, d.to_dict()
    assert d.compared_blocks > 100


def _blocks(d):
    return sorted({(r, n, b) for r, n, b, _, _ in d.blocks})


def test_altered_scale_block_named(live):
    _reset(live)
    _load_weights_before(live, _fp8_stream(live["w1"]))
    name = L0 + "self_attn.qkv_proj.weight"
    p = dict(live["model"].named_parameters())[name + "_scale_inv"]
    with torch.no_grad():
        p[2, 1] *= 2
    d = compare_documents(live["e1"], _digests(live))
    assert _blocks(d) == [(R0, name, 2 * 2 + 1)] and not (d.missing or d.extra or d.shape or d.meta)


def test_stale_tensor_named(live):
    """k_proj sent from the previous step's weights: only the fused qkv blocks holding k rows differ."""
    _reset(live)
    sent = dict(live["w1"])
    k = L0 + "self_attn.k_proj.weight"
    sent[k] = live["w0"][k]
    _load_weights_before(live, _fp8_stream(sent))
    d = compare_documents(live["e1"], _digests(live))
    # q is 256 rows, k the next 128: block row 2 of qkv_proj (2 block columns)
    assert _blocks(d) == [(R0, L0 + "self_attn.qkv_proj.weight", b) for b in (4, 5)]


def test_skipped_parameter_named(live):
    """down_proj never sent (nor its scale): it keeps the previous weights, every block of it differs."""
    _reset(live)
    down = L0 + "mlp.down_proj.weight"
    sent = [(n, t) for n, t in _fp8_stream(live["w1"]) if not n.startswith(down)]
    _load_weights_before(live, sent)
    d = compare_documents(live["e1"], _digests(live))
    assert {n for _, n, _ in _blocks(d)} == {down}
    assert len(d.blocks) == 2 * 6  # 256 x 768: 2 x 6 blocks


def test_sampled_digests_and_dump(live, tmp_path):
    from refit_verify.live.dump import iter_dump
    from refit_verify.live.fileformat import digest_document

    _reset(live)
    _load_weights_before(live, _fp8_stream(live["w1"]))
    sample = {"k": 2, "seed": 5}
    d = compare_documents(expect(live["w1"], sample=sample), _digests(live, sample=sample))
    assert d.equal and d.compared_blocks <= 2 * len(live["e1"]["ranks"][R0])
    path = live["worker"].refit_verify_dump(str(tmp_path))
    assert path.endswith(f"{R0}.safetensors")
    layout, ranks = iter_dump(tmp_path)
    doc = digest_document(ranks, "vllm_per_block", (128, 128), layout, "engine")
    assert compare_documents(live["e1"], doc).equal


@pytest.mark.parametrize("tp,dp,pcp", [(1, 2, 1), (2, 2, 1), (2, 2, 2)])
def test_live_rank_gives_each_worker_vllms_experts(V, monkeypatch, tp, dp, pcp):
    """vllm_rank's label, through the sharded reference's expert placement, is vLLM's own FusedMoE
    expert rank and size (FusedMoEParallelConfig.make run on faked parallel groups)."""
    from types import SimpleNamespace

    from vllm.model_executor.layers.fused_moe import config as moe_config

    from refit_verify.live.vllm import parallel_rank
    from refit_verify.refit.sharded_engine import moe_parallel

    pc = SimpleNamespace(enable_expert_parallel=True, all2all_backend="allgather_reducescatter", enable_eplb=False)
    for d in range(dp):
        for c in range(pcp):
            for t in range(tp):
                monkeypatch.setattr(moe_config, "get_tensor_model_parallel_rank", lambda t=t: t)
                monkeypatch.setattr(moe_config, "get_dp_group", lambda d=d: SimpleNamespace(rank_in_group=d))
                monkeypatch.setattr(moe_config, "get_pcp_group", lambda c=c: SimpleNamespace(rank_in_group=c))
                real = moe_config.FusedMoEParallelConfig.make(tp, pcp, dp, 1, pc)
                rank, layout = parallel_rank((t, tp), (0, 1), (d, dp), (c, pcp), expert_parallel=True)
                assert moe_parallel(layout, rank) == (real.tp_size, real.tp_rank, real.ep_size, real.ep_rank)
