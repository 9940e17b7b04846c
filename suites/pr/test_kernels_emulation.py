"""CPU checks of the fast paths: the kernel arithmetic (pure-torch emulation) is the reference's,
the recipe->kernel mapping is right, the streaming verifier sees every kind of difference.
The Triton kernel itself runs here too when triton's interpreter is importable."""

from __future__ import annotations

import importlib.util
import os
import sys

import pytest
import torch

from refit_verify.compare import compare_fp8
from refit_verify.fp8.kernels import SUPPORTED_RECIPES, device_semantics, kernel_spec, quantize_emulated
from refit_verify.fp8.kernels.emulate import cast_e4m3_codes
from refit_verify.fp8.quantize import QuantizedTensor, quantize
from refit_verify.compare.stream import make_quantizer, verify_stream


def _cases():
    g = torch.Generator().manual_seed(3)
    out = [(f"randn{s}", (0.02 * torch.randn(s, generator=g)).bfloat16())
           for s in [(300, 200), (129, 257), (1, 1), (256, 256)]]
    s = (0.02 * torch.randn(256, 390, generator=g)).bfloat16()
    s[0:128, 0:128] = 0
    s[128:, 0:128] *= 1e-36
    s[0:128, 128:256] = (torch.randn(128, 128, generator=g) * 1e4).bfloat16()
    s[5, 300] = float("nan")
    s[200, 300] = float("inf")
    s[255, 389] = 3.0
    out.append(("specials", s))
    e = torch.full((1, 129), 1e-4).bfloat16()
    e[0, 128] = 100.0
    out.append(("edge_pad", e))
    out.append(("fp32", 0.02 * torch.randn(130, 140, generator=g)))
    return out


def test_required_recipes_supported():
    assert {"vllm_per_block", "vllm_per_block_ue8m0", "nemo_rl", "nemo_rl_pow2"} <= set(SUPPORTED_RECIPES)


def test_kernels_package_imports_without_triton():
    assert "refit_verify.fp8.kernels.triton_block" not in sys.modules or importlib.util.find_spec("triton")


@pytest.mark.parametrize("name", SUPPORTED_RECIPES)
def test_emulation_matches_reference(name):
    for label, w in _cases():
        a, b = quantize(w, name), quantize_emulated(w, name)
        r = compare_fp8(a.data, a.scale_inv, b.data, b.scale_inv, (128, 128), label)
        assert r.equal, r.first_mismatch.describe()


def test_emulation_with_cuda_facts_differs_for_vllm_only_in_scale_rounding():
    # the CUDA fact (a*(1/448)) moves vLLM scales by an ulp on CPU inputs; NeMo's 448/a is unaffected
    w = (0.02 * torch.randn(1024, 1024, generator=torch.Generator().manual_seed(5))).bfloat16()
    cuda_facts = {"div_recip": True, "cast_nan": False}
    v = quantize_emulated(w, "vllm_per_block", semantics=cuda_facts)
    ref = quantize(w, "vllm_per_block")
    assert not torch.equal(v.scale_inv.view(torch.int32), ref.scale_inv.view(torch.int32))
    n = quantize_emulated(w, "nemo_rl", semantics=cuda_facts)
    assert torch.equal(n.data.view(torch.uint8), quantize(w, "nemo_rl").data.view(torch.uint8))


def test_emulated_cast_matches_torch():
    y = torch.cat([torch.randn(20000) * 100, torch.randn(20000) * 0.01,
                   torch.tensor([448.0, 449.0, 463.9, 464.0, 500.0, 1e9, float("inf"), -float("inf"),
                                 float("nan"), 0.0, -0.0, 2.0**-10, 3 * 2.0**-11, 1e-40])])
    got = cast_e4m3_codes(y, device_semantics("cpu")["cast_nan"])
    assert torch.equal(got, y.to(torch.float8_e4m3fn).view(torch.uint8))


def test_unsupported_recipe_named():
    from refit_verify.fp8.kernels import UnsupportedRecipe

    with pytest.raises(UnsupportedRecipe, match="vllm_act_group"):
        kernel_spec("vllm_act_group", False, False)


# ---- streaming verifier: each kind of difference is seen ----

def _stream(n=3, shape=(256, 256)):
    g = torch.Generator().manual_seed(11)
    return [(f"model.layers.{i}.mlp.down_proj.weight", (0.02 * torch.randn(shape, generator=g)).bfloat16())
            for i in range(n)]


def _tamper(when, edit):
    base = make_quantizer("nemo_rl")

    def q(w, name):
        qt = base(w, name)
        if when(name):
            data, scale = qt.data.clone(), qt.scale_inv.clone()
            edit(data.view(torch.uint8), scale)
            return QuantizedTensor(data, scale, qt.recipe)
        return qt

    return q


def test_verifier_equal_for_identical_paths():
    r = verify_stream(_stream(), make_quantizer("nemo_rl"), make_quantizer("nemo_rl", "emulated"))
    assert r.equal and r.n_fp8 == 3


def test_verifier_sees_signed_zero():
    def edit(codes, scale):
        codes[0, 0] = 0x80 if int(codes[0, 0]) == 0 else codes[0, 0]
        codes[0, 1] = 0x00 if int(codes[0, 1]) == 0x80 else 0x80 if int(codes[0, 1]) == 0 else codes[0, 1]

    stream = _stream()
    stream[0][1][0, :2] = 0.0
    r = verify_stream(stream, make_quantizer("nemo_rl"), _tamper(lambda n: "layers.0." in n, edit))
    assert not r.equal and r.mismatched[0].first_element == (0, 0)


def test_verifier_sees_scale_only_difference():
    def edit(codes, scale):
        scale.view(torch.int32)[1, 1] += 1

    r = verify_stream(_stream(), make_quantizer("nemo_rl"), _tamper(lambda n: "layers.1." in n, edit))
    assert not r.equal and r.n_scale_mismatch == 1 and r.mismatched[0].first_block == (1, 1)


def test_verifier_checks_last_tensor():
    def edit(codes, scale):
        codes[-1, -1] ^= 1

    r = verify_stream(_stream(), make_quantizer("nemo_rl"), _tamper(lambda n: "layers.2." in n, edit))
    assert not r.equal and r.mismatched[0].tensor.startswith("model.layers.2.")
    assert r.mismatched[0].max_code_ulp >= 1


def test_verifier_pins_nemo_vs_vllm():
    r = verify_stream(_stream(2, (512, 512)), make_quantizer("nemo_rl"), make_quantizer("vllm_per_block"))
    assert r.n_scale_mismatch > 0
    assert all(v.max_code_ulp <= 1 for v in r.mismatched)


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1" or importlib.util.find_spec("triton") is None,
                    reason="Triton kernel on CPU needs triton installed and TRITON_INTERPRET=1")
@pytest.mark.parametrize("name", SUPPORTED_RECIPES)
def test_triton_kernel_in_interpreter(name):
    from refit_verify.fp8.kernels import quantize_triton

    for label, w in _cases():
        if w.dtype == torch.bfloat16 and label == "specials":
            w = w.float()  # the interpreter converts bf16 subnormals wrongly (its bug, not ours)
        a, b = quantize(w, name), quantize_triton(w, name)
        r = compare_fp8(a.data, a.scale_inv, b.data, b.scale_inv, (128, 128), label)
        assert r.equal, r.first_mismatch.describe()
