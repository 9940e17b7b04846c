"""MoE configs: HF config.json keys of Qwen3-MoE and DeepSeek-V3 read into layers, names and shapes."""

import json

import pytest

from refit_verify.errors import BadInputError
from refit_verify.model import load_config
from refit_verify.model.config import from_dict


def test_qwen3_30b_a3b_keys():
    cfg = load_config("qwen3-30b-a3b")
    m = cfg.moe
    assert (m.style, m.num_experts, m.moe_intermediate_size, m.experts_per_tok) == ("qwen3_moe", 128, 768, 8)
    assert all(cfg.is_moe_layer(i) for i in range(cfg.num_hidden_layers))


def test_deepseek_v3_first_dense_layers_and_shared_expert():
    cfg = load_config("deepseek-v3")
    assert [cfg.is_moe_layer(i) for i in range(5)] == [False, False, False, True, True]
    assert cfg.moe.n_shared_experts == 1 and cfg.moe.shared_intermediate == 2048
    shapes = load_config("deepseek-v3", layers=4).hf_shapes()
    assert shapes["model.layers.2.mlp.gate_proj.weight"] == (18432, 7168)
    assert "model.layers.2.mlp.experts.0.gate_proj.weight" not in shapes
    assert shapes["model.layers.3.mlp.experts.255.down_proj.weight"] == (7168, 2048)
    assert shapes["model.layers.3.mlp.shared_experts.up_proj.weight"] == (2048, 7168)
    assert shapes["model.layers.3.mlp.gate.e_score_correction_bias"] == (256,)


def test_qwen3_mlp_only_layers_and_sparse_step():
    raw = {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "vocab_size": 64,
           "num_experts": 2, "moe_intermediate_size": 128, "decoder_sparse_step": 2, "mlp_only_layers": [3]}
    cfg = from_dict(raw)
    # vLLM qwen3_moe.py: sparse iff layer not in mlp_only_layers and (layer + 1) % step == 0
    assert [cfg.is_moe_layer(i) for i in range(4)] == [False, True, False, False]


def test_tiny_qwen3_moe_hf_names():
    cfg = load_config("tiny-qwen3-moe")
    shapes = cfg.hf_shapes()
    for e in range(4):
        assert shapes[f"model.layers.1.mlp.experts.{e}.gate_proj.weight"] == (256, 256)
        assert shapes[f"model.layers.1.mlp.experts.{e}.down_proj.weight"] == (256, 256)
    assert shapes["model.layers.0.mlp.gate.weight"] == (4, 256)
    assert "model.layers.0.mlp.gate_proj.weight" not in shapes


def test_fused_moe_engine_shapes_scale_rows_per_shard():
    # fp8.py: w13 scale rows are w13_num_shards * ceil(I_part / 128), not ceil(2 * I_part / 128)
    cfg = from_dict({"hidden_size": 256, "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 64,
                     "num_experts": 4, "moe_intermediate_size": 192})
    s = cfg.moe_engine_shapes(0, local_experts=2, tp=1)
    assert s["model.layers.0.mlp.experts.w13_weight"] == (2, 384, 256)
    assert s["model.layers.0.mlp.experts.w13_weight_scale_inv"] == (2, 4, 2)
    assert s["model.layers.0.mlp.experts.w2_weight_scale_inv"] == (2, 2, 2)


def test_config_by_path(tmp_path):
    p = tmp_path / "config.json"
    p.write_text(json.dumps({"hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
                             "vocab_size": 64, "n_routed_experts": 8, "moe_intermediate_size": 128,
                             "first_k_dense_replace": 1}))
    cfg = load_config(str(p))
    assert cfg.moe.style == "deepseek_v3" and cfg.intermediate_size == 128  # absent key: dense MLP sized like one expert
    assert not cfg.is_moe_layer(0) and cfg.is_moe_layer(1)


def test_unknown_config_is_typed_error():
    with pytest.raises(BadInputError, match="no-such-config"):
        load_config("no-such-config")
