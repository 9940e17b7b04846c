"""The Llama forward from HF names and from engine (fused, FP8) parameters."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from refit_verify.errors import BadInputError
from refit_verify.fp8 import dequantize, quantize
from refit_verify.model import fixtures
from refit_verify.model.llama import LlamaModel
from refit_verify.model.logits import compare_logits, make_prompts
from refit_verify.model.weights import build_engine_params, synthesize_weights

torch.set_num_threads(1)  # 2-core CI under xdist -n 2: more threads only contend


def _prompts(cfg, n=2, t=12):
    return make_prompts(cfg.vocab_size, n, t, seed=0)


def test_engine_bf16_fused_equals_hf_forward():
    # fused q|k|v and gate|up rows, kept BF16, must reproduce the HF-named forward: this pins the
    # fused split order and the row layout the refit pipeline writes
    cfg, hf = fixtures.config(), fixtures.hf_weights()
    eng = build_engine_params(cfg, hf, fp8_layers=())
    assert eng["model.layers.0.self_attn.qkv_proj.weight"].dtype == torch.bfloat16
    ids = _prompts(cfg)
    a, b = LlamaModel(cfg, hf).logits(ids), LlamaModel(cfg, eng).logits(ids)
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5), float((a - b).abs().max())


def test_engine_params_are_per_shard_quantized_and_row_stacked():
    cfg, hf = fixtures.config(), fixtures.hf_weights()
    eng = fixtures.engine_params()
    p = "model.layers.1."
    shards = [quantize(hf[p + f"self_attn.{s}_proj.weight"], "vllm_per_block") for s in "qkv"]
    fused = eng[p + "self_attn.qkv_proj.weight"]
    scale = eng[p + "self_attn.qkv_proj.weight_scale_inv"]
    assert fused.dtype == torch.float8_e4m3fn and scale.dtype == torch.float32
    assert tuple(scale.shape) == (-(-fused.shape[0] // 128), -(-fused.shape[1] // 128))
    want = torch.cat([dequantize(q) for q in shards], 0)
    got = dequantize(fused, scale, (128, 128))
    assert torch.equal(got, want), "fused engine weight does not dequantize to the stacked shards"
    assert eng["lm_head.weight"].dtype == torch.bfloat16 and "lm_head.weight_scale_inv" not in eng


def test_fp8_forward_close_to_bf16_and_deterministic():
    cfg = fixtures.config()
    ids = _prompts(cfg)
    ref = LlamaModel(cfg, fixtures.hf_weights()).logits(ids)
    m = LlamaModel(cfg, fixtures.engine_params())
    a, b = m.logits(ids), m.logits(ids)
    assert torch.equal(a, b)
    d = compare_logits(ref, a)
    # measured on tiny-llama: cosine 0.989, kl_mean 1.1e-3 (W8A8 noise compounds over 2 layers of a
    # synthetic model); a broken scale or split gives cosine < 0.5
    assert d.cosine > 0.97 and d.kl_mean < 0.01, d.to_dict()


def test_bf16_engine_layers_run_as_bf16_linears():
    cfg = dataclasses.replace(fixtures.config(), bf16_layers=(0,))
    eng = build_engine_params(cfg, fixtures.hf_weights())
    assert eng["model.layers.0.mlp.down_proj.weight"].dtype == torch.bfloat16
    assert "model.layers.0.mlp.down_proj.weight_scale_inv" not in eng
    assert eng["model.layers.1.mlp.down_proj.weight"].dtype == torch.float8_e4m3fn
    LlamaModel(cfg, eng).logits(_prompts(cfg, 1, 4))


def _small(**kw):
    base = dict(name="t", hidden_size=256, intermediate_size=256, num_hidden_layers=1, num_attention_heads=4,
                num_key_value_heads=2, head_dim=64, vocab_size=64)
    base.update(kw)
    from refit_verify.model.config import ModelConfig
    return ModelConfig(**base)


@pytest.mark.parametrize("kw", [dict(qk_norm=True), dict(v_head_dim=32, num_key_value_heads=4, head_dim=32),
                                dict(num_key_value_heads=1), dict(tie_word_embeddings=True)])
def test_variants_run_from_both_namings(kw):
    cfg = _small(**kw)
    hf = synthesize_weights(cfg, 1)
    ids = _prompts(cfg, 2, 6)
    a = LlamaModel(cfg, hf).logits(ids)
    b = LlamaModel(cfg, build_engine_params(cfg, hf, fp8_layers=())).logits(ids)
    assert a.shape == (2, 6, cfg.vocab_size) and torch.isfinite(a).all()
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)


def test_causal_prefix_invariance():
    # logits at position t depend only on tokens <= t
    cfg = fixtures.config()
    m = LlamaModel(cfg, fixtures.engine_params())
    ids = _prompts(cfg, 1, 10)
    full, prefix = m.logits(ids), m.logits(ids[:, :6])
    assert torch.allclose(full[:, :6], prefix, rtol=1e-5, atol=1e-5)


def test_typed_errors():
    cfg, hf = fixtures.config(), fixtures.hf_weights()
    eng = dict(fixtures.engine_params())
    del eng["model.layers.0.mlp.down_proj.weight_scale_inv"]
    with pytest.raises(BadInputError, match="down_proj"):
        LlamaModel(cfg, eng)
    bad = {k: v for k, v in hf.items() if k != "model.norm.weight"}
    with pytest.raises(BadInputError, match="model.norm.weight"):
        LlamaModel(cfg, bad)
    with pytest.raises(BadInputError, match="input_ids"):
        LlamaModel(cfg, hf).logits(torch.tensor([[cfg.vocab_size]]))


def test_non_block_aligned_shards_refused():
    cfg = _small(num_key_value_heads=1, head_dim=64)  # k = v = 64 rows: q|k boundary fine, k|v not
    with pytest.raises(BadInputError, match="multiple of 128"):
        build_engine_params(cfg, synthesize_weights(cfg, 0))


def test_exact_placement_rows_dequantize_with_their_own_shard():
    """odd-kv64: k/v blocks straddle shards; the exact store's per-row scales give each shard its own."""
    from refit_verify.fp8 import dequantize, quantize
    from refit_verify.model.config import load_config
    from refit_verify.model.llama import LlamaModel
    from refit_verify.model.weights import synthesize_weights
    from refit_verify.refit.run import run_refit

    cfg = load_config("odd-kv64", layers=1)
    w = synthesize_weights(cfg, 0)
    r = run_refit(cfg, w, placement="exact", paths=("before",))
    qkv = LlamaModel(cfg, r.stores["before"].parameters()).layers[0].qkv[0]
    p = "model.layers.0.self_attn."
    expected = torch.cat([dequantize(quantize(w[p + f"{s}_proj.weight"], "vllm_per_block")) for s in "qkv"])
    assert torch.equal(qkv.w_dequant, expected), "a row of the fused qkv is dequantized with another shard's scale"


def test_kv_cache_decoding_matches_full_forward():
    """Prefix then one token at a time through the cache == one forward over the whole sequence."""
    from refit_verify.model.llama import KVCache

    cfg = fixtures.config()
    for params in (fixtures.hf_weights(), fixtures.engine_params()):
        m = LlamaModel(cfg, params)
        ids = _prompts(cfg, 2, 9)
        full = m.logits(ids)
        cache = KVCache()
        parts = [m.logits(ids[:, :5], cache)] + [m.logits(ids[:, t:t + 1], cache) for t in range(5, 9)]
        assert cache.length == 9
        torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-4, atol=1e-4)
