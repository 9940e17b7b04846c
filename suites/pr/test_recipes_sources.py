"""The RL frameworks' presets (docs/RECIPES.md): hand-derived bytes, independent adapters of the real
code, the aliases (implementations that are exactly an existing preset), where each differs from
vllm_per_block, and the reference-only fields refused by the fused kernel."""

import math
import os
import struct

import pytest
import torch

import handcalc as hc
from real_adapters import ADAPTERS
from refit_verify.cases import default_cases
from refit_verify.check import check_quantizer
from refit_verify.errors import BadInputError, RecipeFailure
from refit_verify.fp8 import PRESETS, Recipe, get_recipe, quantize
from refit_verify.fp8.kernels import UnsupportedRecipe, kernel_spec, quantize_emulated
from refit_verify.fp8.presets import ALIASES

NEW_PRESETS = ["nemo_rl_pow2_nan_to_num", "verl_torch", "verl_vllm_fp8_utils", "slime_update", "slime_convert",
               "areal", "torchao_float8tensor", "compressed_tensors"]


def _bf16(rows):
    return [[float(torch.tensor(v, dtype=torch.bfloat16)) for v in row] for row in rows]


def _patched(shape, patch):
    """Zeros with a hand-picked patch at the top-left corner (keeps the oracle fast)."""
    x = [[0.0] * shape[1] for _ in range(shape[0])]
    for r, row in enumerate(patch):
        for c, v in enumerate(row):
            x[r][c] = v
    return _bf16(x)


_PATCH = [[(r * 5 + c - 7) * 0.013 for c in range(5)] for r in range(3)] + [[-0.0, 1e-38, -3.0, 0.1, 7.0]]
INPUTS = {
    "small_3x5": _bf16([[(r * 5 + c - 7) * 0.013 for c in range(5)] for r in range(3)]),
    "edge_pad_1x129": _bf16([[1e-4] * 128 + [100.0]]),
    "zero_2x2": [[0.0, 0.0], [0.0, 0.0]],
    "tiny_2x2": _bf16([[1e-38, -1e-38], [0.0, 5e-39]]),
    "outlier_1x200": _bf16([[0.001 * (i % 7) for i in range(199)] + [448.0 * 3]]),
    "patch_128x256": _patched((128, 256), _PATCH),  # block (0,1) is all zero
    "tiny_patch_128x128": _patched((128, 128), [[1e-38, -2e-38, 3e-39]]),
    "nan_patch_128x128": _patched((128, 128), [[0.5, float("nan"), -0.25]]),
}


@pytest.mark.parametrize("preset", NEW_PRESETS)
@pytest.mark.parametrize("case", sorted(INPUTS))
def test_codes_and_scales_match_hand_derivation(preset, case):
    x, r = INPUTS[case], PRESETS[preset]
    hc_codes = _memo_code(hc.e4m3_code)
    try:
        with _patch_code(hc_codes):
            want_codes, want_scales = hc.by_recipe(x, r)
    except ValueError:  # the implementation asserts divisible shapes: the reference fails too
        with pytest.raises(RecipeFailure):
            quantize(torch.tensor(x, dtype=torch.bfloat16), preset, name=case)
        return
    got = quantize(torch.tensor(x, dtype=torch.bfloat16), preset, name=case)
    for (bi, bj), s in want_scales.items():
        g = float(got.scale_inv[bi, bj])
        assert g == s or (math.isnan(g) and math.isnan(s)), f"{case}/{preset}: scale of block {(bi, bj)}: {g!r} != {s!r}"
    codes = got.codes
    for (rr, cc), code in want_codes.items():
        if code == 0x7F:  # NaN's sign bit comes from the host FPU
            assert int(codes[rr, cc]) & 0x7F == 0x7F, f"{case}/{preset}: element {(rr, cc)} should be NaN"
            continue
        assert int(codes[rr, cc]) == code, (f"{case}/{preset}: element {(rr, cc)} code 0x{int(codes[rr, cc]):02x} "
                                           f"!= 0x{code:02x} (x={x[rr][cc]!r})")


def _memo_code(fn):
    """e4m3_code memoized by the value's bits (0.0 == -0.0 as dict keys, not as codes)."""
    cache = {}

    def code(v, *args):
        key = (struct.pack("d", v), args)
        if key not in cache:
            cache[key] = fn(v, *args)
        return cache[key]
    return code


class _patch_code:
    """Memoize the oracle's e4m3 rounding while a test runs (mostly-zero inputs repeat values)."""

    def __init__(self, fn):
        self.fn = fn

    def __enter__(self):
        self.saved = hc.e4m3_code
        hc.e4m3_code = self.fn

    def __exit__(self, *exc):
        hc.e4m3_code = self.saved


def test_literal_bytes_written_out():
    row = torch.tensor([[1.0, 0.5, -0.25, 0.0]], dtype=torch.bfloat16)
    areal = quantize(row, "areal")
    assert areal.codes.tolist() == [[0x7E, 0x76, 0xEE, 0x00]]
    assert areal.scale_inv.view(torch.int32).item() == 0x3B120000  # float32(1/448) = 0x3B124925 cut to bf16
    zero = quantize(torch.zeros(2, 2, dtype=torch.bfloat16), "slime_convert")
    assert zero.scale_inv.item() == 0.0 and bool(((zero.codes & 0x7F) == 0x7F).all())  # 0 / 0 = NaN codes
    neg_zero = torch.zeros(128, 128, dtype=torch.bfloat16)
    neg_zero[0, 0], neg_zero[0, 1] = 1.0, -0.0
    assert quantize(neg_zero, "torchao_float8tensor").codes[0, :2].tolist() == [0x7E, 0x80]
    assert quantize(neg_zero, "compressed_tensors").codes[0, :2].tolist() == [0x7E, 0x00]  # -0 + 0 = +0
    # bf16(1.0 / 448) = 2**-9 * 1.140625 -> 0x3B120000 as the torchao/compressed-tensors scale
    assert quantize(neg_zero, "compressed_tensors").scale_inv.view(torch.int32).item() == 0x3B120000


# The PR gate runs the cases that separate the presets; REFIT_VERIFY_SLOW=1 runs the whole case set.
_GATE_CASES = {"randn_127x129", "block_zero_256x256", "block_tiny_256x256", "posinf_in_block_256x256"}


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_check_passes_against_an_independent_adapter_of_the_real_code(name):
    cases = default_cases(0)
    if not os.environ.get("REFIT_VERIFY_SLOW"):
        cases = [c for c in cases if c.name in _GATE_CASES]
        assert len(cases) == len(_GATE_CASES)
    result = check_quantizer(ADAPTERS[name], name, cases)
    assert result.ok, [(c.case, c.reason) for c in result.failures()]


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_aliases_resolve_to_the_preset_they_equal(alias):
    target, source = ALIASES[alias]
    assert get_recipe(alias) is PRESETS[target] and source
    assert alias not in PRESETS


# One input per preset where it differs from vllm_per_block (docs/RECIPES.md carries the same table).
def _randn(shape=(256, 384), dtype=torch.bfloat16, scale=0.02, seed=0):
    return (torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale).to(dtype)


def _with(x, at, value):
    x = x.clone()
    x[at] = value
    return x


def _zero_block(x):
    x = x.clone()
    x[:128, 128:256] = 0
    return x


DIFFERS = {
    "nemo_rl_pow2_nan_to_num": (lambda: _with(_randn(), (5, 200), float("nan")), "codes",
                                "NaN zeroed: block (0,1) finite where vLLM writes NaN"),
    "verl_torch": (lambda: _zero_block(_randn()), "scale", "zero block: scale_inv 1 vs 1e-4/448"),
    "verl_vllm_fp8_utils": (lambda: _randn((129, 257)), "raises", "asserts divisible shapes"),
    "slime_update": (lambda: _randn(scale=1e-7), "scale", "amax below 1e-4: floor 1e-10 keeps amax/448"),
    "slime_convert": (lambda: _zero_block(_randn()), "codes", "zero block: scale 0, codes 0/0 = NaN"),
    "areal": (lambda: _randn(), "scale", "scale_inv rounded to bfloat16"),
    "torchao_float8tensor": (lambda: _randn(), "scale", "amax/448 rounded to bf16; x / scale"),
    "compressed_tensors": (lambda: _with(_randn(), (0, 0), -0.0), "codes", "-0.0 becomes +0.0 (zero point)"),
    "sglang_ue8m0": (lambda: _randn(), "scale", "UE8M0 power-of-two scales"),
    "verl_triton": (lambda: _randn(scale=1e-7), "scale", "as slime_update"),
}


@pytest.mark.parametrize("name", sorted(DIFFERS))
def test_each_preset_differs_from_vllm_per_block_where_the_table_says(name):
    make, what, _ = DIFFERS[name]
    x = make()
    ref = quantize(x, "vllm_per_block")
    if what == "raises":
        with pytest.raises(RecipeFailure):
            quantize(x, name)
        return
    got = quantize(x, name)
    if what == "scale":
        assert not torch.equal(got.scale_inv.view(torch.int32), ref.scale_inv.view(torch.int32))
    else:
        assert not torch.equal(got.codes, ref.codes)


def test_verl_torch_rounds_once_where_verl_v07_rounds_twice():
    x = _randn((128, 128), torch.float32, scale=1.0, seed=3)
    differs = [k for k in range(64) if not torch.equal(quantize(x * (1 + k / 64), "verl_torch").scale_inv,
                                                        quantize(x * (1 + k / 64), "verl_vllm_fp8_utils").scale_inv)]
    assert differs, "torch.div(448, a) and 448 / a never differed: the two verl presets would be one"


def test_areal_sends_slime_codes_with_bf16_scales():
    x = _randn()
    a, s = quantize(x, "areal"), quantize(x, "slime_update")
    assert torch.equal(a.codes, s.codes)
    assert torch.equal(a.scale_inv, s.scale_inv.to(torch.bfloat16).float())


@pytest.mark.parametrize("field,value", [("scale_compute_dtype", "input"), ("quantize_dtype", "input"),
                                         ("add_zero_point", True), ("scale_dtype", "bfloat16")])
def test_kernel_spec_and_emulator_refuse_reference_only_fields(field, value):
    r = get_recipe("vllm_per_block").replace(name="probe", **{field: value})
    with pytest.raises(UnsupportedRecipe, match=field):
        kernel_spec(r, False, False)
    with pytest.raises(UnsupportedRecipe, match=field):
        quantize_emulated(torch.randn(128, 128), r)


@pytest.mark.parametrize("field,value", [("scale_compute_dtype", "input"), ("quantize_dtype", "input"),
                                         ("add_zero_point", True), ("scale_dtype", "bfloat16")])
def test_each_new_field_changes_the_reference(field, value):
    x = _with(_randn(), (0, 0), -0.0)
    base = get_recipe("vllm_per_block").replace(name="base", quantize_op="div")
    a, b = quantize(x, base), quantize(x, base.replace(name="probe", **{field: value}))
    assert not (torch.equal(a.codes, b.codes) and torch.equal(a.scale_inv, b.scale_inv)), field


def test_input_dtype_scale_is_refused_for_scale_forms():
    with pytest.raises(BadInputError, match="scale_compute_dtype"):
        Recipe(name="bad", scale_form="scale", scale_compute_dtype="input")
