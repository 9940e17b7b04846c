"""Engine-side loader: parameter layout, routing, detection, on-load quantization, post-load checks."""

import pytest
import torch

from refit_verify.fp8 import quantize
from refit_verify.fp8.format import FP32_FILL
from refit_verify.model import load_config, synthesize_weights
from refit_verify.refit.loader import EngineStore, is_batch_prequantized
from refit_verify.refit.postload import deepgemm_requant_applies, post_load_findings, process_weights_after_loading

CFG = load_config("tiny-moe-router")
W = synthesize_weights(CFG, 0)
Q1 = "model.layers.1.self_attn.q_proj.weight"


def test_parameter_layout():
    p = EngineStore(CFG).parameters()
    w, s = p["model.layers.1.self_attn.qkv_proj.weight"], p["model.layers.1.self_attn.qkv_proj.weight_scale_inv"]
    assert w.dtype == torch.float8_e4m3fn and tuple(w.shape) == (512, 256)
    assert s.dtype == torch.float32 and tuple(s.shape) == (4, 2) and bool((s == FP32_FILL).all())
    assert p["model.layers.1.mlp.gate_up_proj.weight"].shape == (1024, 256)
    assert p["model.layers.1.mlp.gate.weight"].dtype == torch.bfloat16  # router
    assert p["model.layers.0.self_attn.qkv_proj.weight"].dtype == torch.bfloat16  # bf16_layers = [0]
    assert "model.layers.0.self_attn.qkv_proj.weight_scale_inv" not in p
    assert p["model.embed_tokens.weight"].dtype == torch.bfloat16


def test_fp8_hf_names_are_the_engine_fp8_set():
    names = EngineStore(CFG).fp8_hf_names()
    assert Q1 in names and "model.layers.1.mlp.gate.weight" not in names
    assert not any(n.startswith("model.layers.0.") for n in names)


def test_exact_store_has_row_scales():
    p = EngineStore(load_config("odd-mimo"), placement="exact").parameters()
    assert p["model.layers.0.self_attn.qkv_proj.weight_scale_inv_rows"].shape == (3392, 2)


def test_detection_rules():
    assert is_batch_prequantized(["a.weight", "a.weight_scale_inv"], None)
    assert not is_batch_prequantized(["a.weight"], None)
    assert is_batch_prequantized(["a.weight"], True)  # decided once from the metadata
    assert not is_batch_prequantized(["a.weight_scale_inv"], False)


def test_quantize_on_load_matches_trainer_quantization():
    st = EngineStore(CFG, recipe="nemo_rl")
    st.load_weights([(Q1, W[Q1])])
    q = quantize(W[Q1], "nemo_rl")
    lin = st.linears["model.layers.1.self_attn.qkv_proj"]
    assert torch.equal(lin.weight[:256].view(torch.uint8), q.data.view(torch.uint8))
    assert torch.equal(lin.weight_scale_inv[:2], q.scale_inv)


def test_unknown_and_orphan_names_become_findings():
    st = EngineStore(CFG)
    st.begin_refit({"x_scale_inv": None})
    st.load_weights([("model.layers.9.nope.weight", torch.zeros(2, 2)),
                     ("model.layers.1.mlp.gate.weight_scale_inv", torch.ones(1, 2))])
    assert [f.hazard for f in st.findings] == ["unknown_name", "unknown_name"]


def test_fp8_into_bf16_router_is_reported():
    st = EngineStore(CFG)
    q = quantize(W["model.layers.1.mlp.gate.weight"], "vllm_per_block")
    st.begin_refit({"model.layers.1.mlp.gate.weight_scale_inv": None})
    st.load_weights([("model.layers.1.mlp.gate.weight", q.data)])
    assert [f.hazard for f in st.findings] == ["fp8_into_bf16"]


def test_bf16_into_fp8_in_prequantized_refit_is_reported():
    st = EngineStore(CFG)
    st.begin_refit({"something_scale_inv": None})
    st.load_weights([(Q1, W[Q1])])
    assert [f.hazard for f in st.findings] == ["bf16_into_fp8"]
    hazards = {f.hazard for f in post_load_findings(st)}
    assert {"missing_scale", "placeholder_scale", "never_loaded"} <= hazards


def test_shape_mismatch_is_a_finding():
    st = EngineStore(CFG)
    st.load_weights([(Q1, W[Q1][:100])])
    assert st.findings[0].hazard == "shape_mismatch" and st.findings[0].tensor == Q1


def test_bad_scales_are_reported():
    st = EngineStore(load_config("tiny-llama"))
    q = quantize(W[Q1], "vllm_per_block")
    s = q.scale_inv.clone()
    s[0, 1] = float("nan")
    s[1, 0] = 0.0
    st.load_weights([(Q1.replace(".1.", ".0."), q.data), (Q1.replace(".1.", ".0.") + "_scale_inv", s)])
    bad = [f for f in post_load_findings(st) if f.hazard == "bad_scale"]
    assert bad and bad[0].block == (0, 1) and bad[0].detail["n"] == 2


def test_shape_validation_without_exemption():
    st = EngineStore(load_config("odd-kv64"), shape_mismatch_exemption=False)
    f = [f for f in st.findings if f.hazard == "shape_validation"]
    assert f and "output_partition_size = 64 is not divisible" in f[0].message
    assert not [f for f in EngineStore(load_config("odd-kv64")).findings if f.hazard == "shape_validation"]


@pytest.mark.parametrize("n,k,dtype,ue8m0,applies", [
    (512, 256, torch.bfloat16, True, True), (512, 256, torch.bfloat16, False, False),
    (576, 7168, torch.bfloat16, True, True), (3392, 128, torch.bfloat16, True, True),
    (300, 256, torch.bfloat16, True, False), (512, 320, torch.bfloat16, True, False),
    (512, 256, torch.float16, True, False),
])
def test_deepgemm_requant_condition(n, k, dtype, ue8m0, applies):
    assert deepgemm_requant_applies(ue8m0, n, k, dtype) is applies


def test_requant_skips_layers_outside_the_condition():
    cfg = load_config("odd-gate-up-320")  # down_proj K=320: K % 128 != 0
    st = EngineStore(cfg, placement="exact")
    recs = {r.tensor: r for r in process_weights_after_loading(st, ue8m0=True)}
    assert not recs["model.layers.0.mlp.down_proj.weight"].applied
    assert recs["model.layers.0.self_attn.qkv_proj.weight"].applied
