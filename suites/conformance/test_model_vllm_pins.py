"""The whole tiny LlamaForCausalLM in real vLLM 0.33: get_model, then both refit paths via load_weights.

Pinned vLLM behaviour the reference loader deliberately does not copy:
FP8-after (BF16 sent) is NOT quantized on load: vLLM value-casts the BF16 numbers into the float8
parameter and keeps the previous weight_scale_inv, so the engine holds garbage (relative error ~1).
The reference loader's FP8-after quantizes on load, as NeMo-RL's patched loader does.
"""

from __future__ import annotations

import pytest
import torch

from refit_verify.fp8 import dequantize, quantize
from refit_verify.model.config import load_config
from refit_verify.model.weights import synthesize_weights

CFG = load_config("tiny-llama")


def _fused(cfg, weights, layer, spec):
    return [weights[f"model.layers.{layer}.{s.hf_suffix}.weight"] for s in spec.shards]


def expected_params(cfg, weights, recipe="vllm_per_block") -> dict:
    """vLLM parameter name -> what it must hold after loading `weights` pre-quantized with `recipe`."""
    out = {n: t for n, t in weights.items() if ".layers." not in n or t.dim() == 1}
    for i in range(cfg.num_hidden_layers):
        for spec in cfg.layer_linears():
            qs = [quantize(w, recipe) for w in _fused(cfg, weights, i, spec)]
            p = f"model.layers.{i}.{spec.engine_suffix}"
            out[p + ".weight"] = torch.cat([q.data for q in qs])
            out[p + ".weight_scale_inv"] = torch.cat([q.scale_inv for q in qs])  # all shards block aligned here
    return out


def bits(t):
    return t.contiguous().view({1: torch.uint8, 2: torch.int16, 4: torch.int32}[t.element_size()])


def assert_params_equal(got: dict, want: dict):
    assert set(got) == set(want), (sorted(set(got) ^ set(want)))
    bad = [n for n in want if got[n].shape != want[n].shape or not torch.equal(bits(got[n]), bits(want[n]))]
    assert not bad, f"{len(bad)} parameters differ bitwise, e.g. {bad[:4]}"


@pytest.fixture(scope="module")
def engine(V):
    from refit_verify.engine.vllm_refit import build_engine

    initial = synthesize_weights(CFG, 1)
    return build_engine(CFG, initial), initial


def test_get_model_holds_the_checkpoint_bitwise(V, engine):
    model, initial = engine
    assert_params_equal(V.named_params(model), expected_params(CFG, initial))


def test_fp8_before_refit_lands_bitwise(V, engine):
    model, _ = engine
    new = synthesize_weights(CFG, 2)
    batch = []
    for n, t in new.items():
        if ".layers." in n and t.dim() == 2:
            q = quantize(t, "vllm_per_block", name=n)
            batch += [(n, q.data.view(torch.uint8)), (n + "_scale_inv", q.scale_inv)]  # bytes, as transported
        else:
            batch.append((n, t))
    r = V.load_weights_into(model, batch, process=True)
    assert_params_equal(r["params"], expected_params(CFG, new))


def test_fp8_after_bf16_is_value_cast_not_quantized(V, engine):
    """vLLM 0.33 (plain fp8, block serialized checkpoint) has no online quantization: a finding for
    every FP8-after refit against the real engine (see run_refit_vllm's engine_no_online_quant)."""
    model, _ = engine
    before = V.named_params(model)
    new = synthesize_weights(CFG, 3)
    r = V.load_weights_into(model, list(new.items()))
    p = "model.layers.0.self_attn.o_proj"
    w, sent = r["params"][p + ".weight"], new["model.layers.0.self_attn.o_proj.weight"]
    assert w.dtype == torch.float8_e4m3fn
    assert torch.equal(bits(w), bits(sent.to(torch.float8_e4m3fn))), "BF16 numbers value-cast into the codes"
    assert torch.equal(bits(r["params"][p + ".weight_scale_inv"]), bits(before[p + ".weight_scale_inv"])), \
        "scale left as it was"
    deq = dequantize(w, r["params"][p + ".weight_scale_inv"])
    rel = float((deq - sent.float()).norm() / sent.float().norm())
    assert rel > 0.9, rel
    # the reference FP8-after quantizes on load: what a patched loader would have written
    q = quantize(sent, "vllm_per_block")
    assert float((dequantize(q) - sent.float()).norm() / sent.float().norm()) < 0.05
