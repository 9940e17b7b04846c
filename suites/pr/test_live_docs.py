"""docs/LIVE.md's Python examples run as written: the RL-loop snippet (section 3) against the
reference engine through the worker extension's methods, and the sharded `expect` call (section 2)."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from refit_verify.live.vllm import RefitVerifyExtension
from refit_verify.model import synthesize_weights
from refit_verify.model.config import from_dict
from refit_verify.refit.exporter import TrainerExporter
from refit_verify.refit.reference_engine import ReferenceEngine

DOC = Path(__file__).resolve().parents[2] / "docs" / "LIVE.md"
HF = {"model_type": "llama", "hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 1,
      "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 128, "vocab_size": 1024}


def _snippet(marker: str) -> str:
    blocks = [b for b in re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S) if marker in b]
    assert len(blocks) == 1, f"docs/LIVE.md: one python block with {marker!r} expected, found {len(blocks)}"
    return blocks[0]


class _Llm:
    """vLLM's LLM as the snippet uses it: collective_rpc runs the extension's method on each worker."""

    def __init__(self, engine):
        self.engine = engine

    def collective_rpc(self, method, kwargs=None):
        self.engine.finish_refit()
        params = self.engine.state().params()
        worker = type("Worker", (RefitVerifyExtension,), {})()
        worker.get_model = lambda: SimpleNamespace(named_parameters=lambda: iter(params.items()))
        return [getattr(worker, method)(**(kwargs or {}))]


def _loop_namespace(stale: str = ""):
    cfg = from_dict(HF, "doc-llama")
    w = synthesize_weights(cfg, 0)
    engine = ReferenceEngine(cfg)
    payload = TrainerExporter(w, "before", "vllm_per_block")
    engine.begin_refit(payload.metadata())
    sent = list(payload)
    buckets = [dict(sent[i:i + 4]) for i in range(0, len(sent), 4)]

    def send(bucket):  # the transport; `stale` models a tensor the engine kept from before
        engine.receive([(n, t) for n, t in bucket.items() if n != stale])
    return {"step": 7, "engine_tp": 1, "hf_config": HF, "hf_named_buckets": buckets, "send": send,
            "llm": _Llm(engine)}


@pytest.mark.parametrize("sampled", [False, True])
def test_rl_loop_snippet_runs_and_passes_a_correct_refit(sampled):
    code = _snippet("Expectation(")
    if not sampled:
        code = code.replace('sample = {"k": 4, "seed": step}', "sample = None")
    ns = _loop_namespace()
    try:
        exec(code, ns)
    except RuntimeError as exc:  # the snippet's own failure: a correct refit must pass
        pytest.fail(f"docs/LIVE.md loop flagged a correct refit: {str(exc)[:300]}")
    assert ns["diff"].equal and ns["diff"].compared_blocks > (100 if not sampled else 0)


def test_rl_loop_snippet_raises_naming_a_tensor_never_sent():
    ns = _loop_namespace(stale="model.layers.0.mlp.down_proj.weight")
    with pytest.raises(RuntimeError, match="refit step 7: engine differs.*down_proj"):
        exec(_snippet("Expectation("), ns)


def test_sharded_expect_snippet_runs():
    cfg = from_dict(HF, "doc-llama")
    ns = {"hf_named_tensors": synthesize_weights(cfg, 0), "hf_model": SimpleNamespace(config=HF)}
    exec(_snippet("Layout(tp=2), config=hf_model.config"), ns)
    assert sorted(ns["expected"]["ranks"]) == ["tp0.ep0.pp0", "tp1.ep0.pp0"]
