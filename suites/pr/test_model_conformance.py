"""Our forward against transformers' reference implementations, same config and weights, float32."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from refit_verify.model import fixtures
from refit_verify.model.llama import LlamaModel
from refit_verify.model.logits import make_prompts
from refit_verify.model.weights import synthesize_weights

transformers = pytest.importorskip(
    "transformers", reason="transformers not installed: `pip install transformers` to run the conformance test")
torch.set_num_threads(1)


def _hf_config(cfg, cls):
    kw = dict(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
              num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
              num_key_value_heads=cfg.num_key_value_heads, head_dim=cfg.head_dim, rms_norm_eps=cfg.rms_norm_eps,
              rope_theta=cfg.rope_theta, tie_word_embeddings=cfg.tie_word_embeddings, max_position_embeddings=256,
              attention_bias=False, hidden_act="silu")
    c = cls(**kw)
    c._attn_implementation = "eager"
    return c


def _reference_logits(cfg, hf, ids, model_cls, config_cls):
    model = model_cls(_hf_config(cfg, config_cls)).float().eval()
    state = {k: v.float() for k, v in hf.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not (cfg.tie_word_embeddings and m == "lm_head.weight")]
    assert not missing and not unexpected, (missing, unexpected)
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


@pytest.mark.parametrize("variant", ["llama", "qwen3_qk_norm"])
def test_logits_match_transformers(variant):
    cfg = fixtures.config()
    if variant == "llama":
        model_cls, config_cls = transformers.LlamaForCausalLM, transformers.LlamaConfig
    else:
        model_cls = getattr(transformers, "Qwen3ForCausalLM", None)
        if model_cls is None:
            pytest.skip(f"transformers {transformers.__version__} has no Qwen3ForCausalLM")
        config_cls = transformers.Qwen3Config
        cfg = dataclasses.replace(cfg, qk_norm=True, rope_theta=1e6, rms_norm_eps=1e-6, name="tiny-qwen3")
    hf = fixtures.hf_weights() if variant == "llama" else synthesize_weights(cfg, 0)
    ids = make_prompts(cfg.vocab_size, 2, 16)
    ref = _reference_logits(cfg, hf, ids, model_cls, config_cls)
    ours = LlamaModel(cfg, {k: v.float() for k, v in hf.items()}).logits(ids)
    err = (ours - ref).abs().max().item()
    # both float32 with the same operation order up to matmul blocking: ~1e-6 of logits of size ~1
    assert err < 1e-4, f"max |logit diff| {err:.3g} vs transformers {transformers.__version__} ({variant})"
