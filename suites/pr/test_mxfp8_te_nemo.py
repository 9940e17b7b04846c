"""MXFP8 as TransformerEngine and NeMo-RL implement it (presets mxfp8_te, mxfp8_nemo_rl): E8M0 bytes and
codes derived by hand for zero, NaN, subnormal and power-of-two boundary groups; `check` against
independent adapters of the real code (numpy float32 for TE's C++ reference); `fit` recovers both; and
where each differs from mxfp8_vllm, one input each."""

import numpy as np
import pytest
import torch

from refit_verify.cases import mx_cases
from refit_verify.check import check_quantizer
from refit_verify.errors import RecipeFailure
from refit_verify.fit import SEARCH_SPACE, fit_quantizer
from refit_verify.fp8 import PRESETS, dequantize, quantize, recipe_diff
from refit_verify.fp8 import format as fmt
from refit_verify.fp8.kernels import UnsupportedRecipe, kernel_spec
from refit_verify.fp8.recipe_io import _choices

R = float(np.float32(1.0 / 448.0))  # TE's max_reciprocal(): rounds UP (0.0022321429569...)
NEXT_BOUNDARY = float(np.nextafter(np.float32(448.0 * 2.0**-20), np.float32(1.0)))  # (1.75 + 2**-23) * 2**-12


def _row(values, k=32):
    x = torch.zeros(1, k, dtype=torch.float32)
    x[0, : len(values)] = torch.tensor(values, dtype=torch.float32)
    return x


# label: (group values, mxfp8_te (byte, first codes), mxfp8_nemo_rl (byte, first codes)), each by hand.
# TE: byte = float_to_e8m0(f32(amax * R)) (exponent field, +1 if any mantissa bit, byte 0 covers
# (0, 2**-127], inf -> 254), amax skipping NaN; code = satfinite_e4m3(x * 2**(127 - byte)).
# NeMo-RL: vLLM's byte = clamp(ceil(log2(max(amax, 2**-126) / 448)) + 127, 0, 254), x / 2**(byte-127),
# then a stored byte 0 becomes 1 (codes untouched).
HAND = {
    # amax 0: TE 0*R = 0 -> byte 0; x * 2**127 = +-0. vLLM: ceil(log2(2**-126/448)) = -134 -> byte 0 -> 1.
    "zero": ([0.0, -0.0], (0, [0x00, 0x80]), (1, [0x00, 0x80])),
    # f32(1e-40) * R = 2.2e-43, a subnormal far below 2**-127 -> byte 0; 1e-40 * 2**127 = 0.0170 = 8.71
    # steps of 2**-9 -> 9 -> 0x09. NeMo-RL: same code 0x09 computed with byte 0, stored as byte 1.
    "subnormal": ([1e-40], (0, [0x09]), (1, [0x09])),
    # 672 * 2**-127 * R = 1.5 * 2**-127 (subnormal, mantissa 0x600000 > 0x400000) -> byte 1 (2**-126);
    # 672 * 2**-1 = 336, halfway between 320 and 352 -> even 320 = 0x7A. vLLM: ceil(-126.4) = -126, same.
    "subnormal_above_2^-127": ([672.0 * 2.0**-127], (1, [0x7A]), (1, [0x7A])),
    # 448 * R = 1 + 4.5e-8, under half an ulp of 1 -> exactly 1.0 -> byte 127; 448 -> 0x7E, 1.0 -> 0x38.
    "exact_448": ([448.0, 1.0], (127, [0x7E, 0x38]), (127, [0x7E, 0x38])),
    # 449 * R > 1 -> byte 128; 224.5 -> 224 (0x76), 0.5 -> 0x30.
    "just_above_448": ([449.0, 1.0], (128, [0x76, 0x30]), (128, [0x76, 0x30])),
    # 448 * 2**-20 * R = 2**-20 exactly (as 448 * R rounds to 1) -> byte 107; code 448 = 0x7E.
    "pow2_boundary": ([448.0 * 2.0**-20], (107, [0x7E]), (107, [0x7E])),
    # one float32 ulp above: TE sees mantissa bits -> byte 108, x * 2**19 = 224 + 2**-16 -> 0x76.
    # vLLM: log2 = -20 + 1.7e-7 rounds to -20 in float32 (ulp 1.9e-6) -> byte 107, 448.00003 -> 0x7E.
    "one_ulp_above_boundary": ([NEXT_BOUNDARY], (108, [0x76]), (107, [0x7E])),
    # TE: NaN skipped, amax 1 -> R = 1.14 * 2**-9 -> byte 119 (2**-8); 1.0 * 2**8 = 256 = 0x78; NaN -> 0x7F.
    # vLLM: amax NaN -> byte 255 and every code NaN.
    "nan": ([1.0, float("nan")], (119, [0x78, 0x7F]), (255, [0x7F, 0x7F])),
    # +inf: TE inf * R = inf -> byte 254; 1.0 * 2**-127 -> 0x00, inf saturates to 448 = 0x7E.
    "inf": ([1.0, float("inf")], (254, [0x00, 0x7E]), (254, [0x00, None])),
}


def _bytes_and_codes(preset, values):
    q = quantize(_row(values), preset, name="hand")
    return fmt.e8m0_bytes(q.scale_inv).tolist()[0][0], q.codes[0, : len(values)].tolist()


@pytest.mark.parametrize("preset,col", [("mxfp8_te", 1), ("mxfp8_nemo_rl", 2)])
@pytest.mark.parametrize("label", sorted(HAND))
def test_groups_match_hand_derivation(preset, col, label):
    values = HAND[label][0]
    byte, codes = HAND[label][col]
    got_byte, got = _bytes_and_codes(preset, values)
    assert got_byte == byte, (preset, label, got_byte)
    for want, c in zip(codes, got):
        if want is None:  # inf / 2**127 under vLLM's unclamped cast: torch's own overflow rule decides
            continue
        if want == 0x7F:  # a NaN's sign bit comes from the host FPU
            c &= 0x7F
        assert c == want, (preset, label, [hex(v) for v in got])


def test_te_quantizes_a_partial_last_group_where_vllm_raises():
    x = torch.zeros(1, 33)
    x[0, 32] = 3.0  # a group of one element: 3 * R = 1.71 * 2**-8 -> byte 120 (2**-7), 3 * 128 = 384 = 0x7C
    q = quantize(x, "mxfp8_te")
    assert fmt.e8m0_bytes(q.scale_inv).tolist() == [[0, 120]] and q.codes[0, 32].item() == 0x7C
    with pytest.raises(RecipeFailure, match="multiple of the block"):
        quantize(x, "mxfp8_vllm")


# --- independent adapters of the real code -------------------------------------------------------

def te_mxfp8_reference(x):
    """TE's compute_ref + float_to_e8m0 + exp2f_rcp restated in numpy float32 (rowwise, CAST_ONLY)."""
    a = x.float().numpy()
    m, k = a.shape
    kp = -(-k // 32) * 32
    g = np.zeros((m, kp), np.float32)
    g[:, :k] = a
    g = g.reshape(m, kp // 32, 32)
    mag = np.abs(g)
    amax = np.where(np.isnan(mag), np.float32(0), mag).max(axis=-1)  # std::max(amax, NaN) keeps amax
    v = (amax * np.float32(1.0 / 448.0)).astype(np.float32)
    bits = v.view(np.uint32)
    exp, man = (bits >> 23) & 0xFF, bits & 0x7FFFFF
    byte = exp + (((man > 0) & (exp != 0xFE) & ~((exp == 0) & (man <= 0x400000)))).astype(np.uint32)
    byte = np.where(np.isinf(v), 0xFE, np.where(np.isnan(v), 0xFF, byte)).astype(np.uint32)
    rcp_bits = np.where(byte == 255, 0x7FFFFFFF, np.where(byte == 254, 0x00400000, (254 - byte) << 23))
    rcp = rcp_bits.astype(np.uint32).view(np.float32)
    y = np.clip(g * rcp[..., None], -448.0, 448.0)  # satfinite; NaN stays NaN through np.clip
    q = torch.from_numpy(y.reshape(m, kp)[:, :k].copy()).to(torch.float8_e4m3fn)
    # numpy's float32 exp2 is not exact at 2**127 (0x7f000001): build the power of two with ldexp
    scale = np.ldexp(np.float32(1.0), byte.astype(np.int32) - 127).astype(np.float32)
    return q, torch.from_numpy(np.where(byte == 255, np.float32("nan"), scale).astype(np.float32))


def vllm_mxfp8_codes_and_exponents(x):
    """vLLM's torch MXFP8 path restated: (codes, biased E8M0 exponent per 1x32 group, as float32)."""
    m, k = x.shape
    assert k % 32 == 0
    g = x.to(torch.float32).view(m, k // 32, 32)
    amax = g.abs().amax(dim=-1).clamp(min=torch.finfo(torch.float32).tiny)
    biased = (torch.ceil(torch.log2(amax / 448.0)) + 127.0).clamp(0, 254)
    q = (g / torch.exp2(biased - 127.0).unsqueeze(-1)).view(m, k).to(torch.float8_e4m3fn)
    return q, biased


def nemo_rl_mxfp8_refit(x):
    """NeMo-RL quantize_mxfp8_weight restated: vLLM's torch MXFP8 path, then scale byte 0 -> 1."""
    q, biased = vllm_mxfp8_codes_and_exponents(x)
    stored = torch.where(biased == 0, torch.ones_like(biased), biased)
    return q, torch.exp2(stored - 127.0)


ADAPTERS = {"mxfp8_te": te_mxfp8_reference, "mxfp8_nemo_rl": nemo_rl_mxfp8_refit}


@pytest.mark.parametrize("preset", sorted(ADAPTERS))
def test_check_passes_against_an_independent_adapter_on_the_mx_case_set(preset):
    result = check_quantizer(ADAPTERS[preset], preset)
    assert {c.case for c in result.cases} == {c.name for c in mx_cases(0)}
    assert result.ok, [(c.case, c.reason) for c in result.failures()]


@pytest.mark.parametrize("preset", sorted(ADAPTERS))
def test_check_against_mxfp8_vllm_fails_on_the_groups_case(preset):
    result = check_quantizer(ADAPTERS[preset], "mxfp8_vllm")
    assert not result.ok and "mx_groups_f32_12x64" in {c.case for c in result.failures()}


@pytest.mark.parametrize("preset", sorted(ADAPTERS))
def test_fit_recovers_each_mx_preset(preset):
    res = fit_quantizer(ADAPTERS[preset], mx=True)
    assert res.exact, res.misses
    # div vs mul_reciprocal by a power of two are the same bytes: only a byte-visible field may remain
    leftover = {k: v for k, v in recipe_diff(PRESETS[preset], res.recipe).items() if k != "quantize_op"}
    assert res.nearest == preset and not leftover, (res.nearest, res.diff())


def test_fit_names_nemo_rls_byte_rewrite_as_a_diff_from_vllm():
    res = fit_quantizer(nemo_rl_mxfp8_refit, mx=True, presets=["mxfp8_vllm"])
    assert res.exact and res.diff() == {"e8m0_byte0_to_1": (False, True)}, res.diff()


# --- cross-preset facts, one input each ---------------------------------------------------------

def test_nemo_rl_codes_equal_vllm_everywhere_and_scales_only_where_vllm_stores_byte_0():
    for case in mx_cases(0):
        x = case.tensor()
        if x.shape[1] % 32:
            continue
        v, n = quantize(x, "mxfp8_vllm"), quantize(x, "mxfp8_nemo_rl")
        assert torch.equal(v.codes, n.codes), case.name
        bv, bn = fmt.e8m0_bytes(v.scale_inv), fmt.e8m0_bytes(n.scale_inv)
        assert torch.equal(torch.where(bv == 0, torch.ones_like(bv), bv), bn), case.name


def test_nemo_rl_doubles_a_tiny_nonzero_group_on_dequantize():
    x = _row([1e-40])
    v, n = dequantize(quantize(x, "mxfp8_vllm")), dequantize(quantize(x, "mxfp8_nemo_rl"))
    assert v[0, 0].item() > 0 and n[0, 0].item() == 2 * v[0, 0].item()


@pytest.mark.parametrize("label", ["nan", "one_ulp_above_boundary"])
def test_te_differs_from_vllm_on_one_input(label):
    values = HAND[label][0]
    assert _bytes_and_codes("mxfp8_te", values) != _bytes_and_codes("mxfp8_vllm", values)


def test_the_mx_case_set_separates_the_three_mx_presets():
    x = [c for c in mx_cases(0) if c.name == "mx_groups_f32_12x64"][0].tensor()
    outs = {p: quantize(x, p) for p in ("mxfp8_vllm", "mxfp8_te", "mxfp8_nemo_rl")}
    keys = {p: (q.codes.tolist(), fmt.e8m0_bytes(q.scale_inv).tolist()) for p, q in outs.items()}
    assert len({repr(v) for v in keys.values()}) == 3


# --- the new fields: refused by the fused kernel, searched by fit ------------------------------

@pytest.mark.parametrize("field,value", [("scale_form", "descale_rcp"), ("pow2", "te_e8m0"),
                                         ("nan_policy", "ignore_in_amax"), ("e8m0_byte0_to_1", True)])
def test_kernel_spec_refuses_the_mx_fields_by_name(field, value):
    r = PRESETS["vllm_per_block"].replace(name="probe", **{field: value})
    with pytest.raises(UnsupportedRecipe, match=field):
        kernel_spec(r, False, False)


def test_fit_searches_every_choice_of_every_field():
    for field, values in SEARCH_SPACE.items():
        choices = _choices(field)
        if choices is not None:
            assert set(choices) == set(values), (field, set(choices) - set(values))


# --- scales handed back as E8M0 bytes, as the real MXFP8 quantizers return them --------------------

def vllm_mxfp8_bytes(x):
    """vLLM's torch path returning its uint8 scale bytes (a NaN amax casts to a platform-defined byte)."""
    q, biased = vllm_mxfp8_codes_and_exponents(x)
    return q, biased.to(torch.uint8)


def test_check_and_fit_read_uint8_scales_as_e8m0_bytes():
    no_nan = [c for c in mx_cases(0) if not c.name.startswith("mx_groups")]
    assert check_quantizer(vllm_mxfp8_bytes, "mxfp8_vllm", cases=no_nan).ok
    as_e8m0 = lambda x: (lambda q, b: (q, b.view(torch.float8_e8m0fnu)))(*vllm_mxfp8_bytes(x))  # noqa: E731
    assert check_quantizer(as_e8m0, "mxfp8_vllm", cases=no_nan).ok
    res = fit_quantizer(vllm_mxfp8_bytes, no_nan, mx=True)
    assert res.exact and res.nearest == "mxfp8_vllm" and not res.diff(), res.diff()


def test_a_nan_group_stored_as_a_platform_byte_is_reported():
    groups = [c for c in mx_cases(0) if c.name == "mx_groups_f32_12x64"]
    result = check_quantizer(vllm_mxfp8_bytes, "mxfp8_vllm", cases=groups)
    assert not result.ok and "scale" in result.cases[0].reason


def test_uint8_scales_are_refused_for_a_block_fp8_recipe():
    def bytes_for_block(w):
        q = quantize(w, "vllm_per_block")
        return q.data, fmt.e8m0_bytes(q.scale_inv)
    result = check_quantizer(bytes_for_block, "vllm_per_block", cases=[c for c in mx_cases(0)][:1])
    assert not result.ok and "float32" in result.cases[0].reason


def test_fit_names_the_one_field_of_an_altered_te_quantizer():
    def te_nan_poisons(x):  # TE's reference with torch.amax (NaN wins) instead of std::max
        q, s = te_mxfp8_reference(x)
        m, k = x.shape
        kp = -(-k // 32) * 32
        g = torch.zeros(m, kp)
        g[:, :k] = x.float()
        nan_group = torch.isnan(g.view(m, kp // 32, 32)).any(-1)
        q = q.view(torch.uint8).clone()
        q[nan_group.repeat_interleave(32, -1)[:, :k]] = 0x7F
        return q.view(torch.float8_e4m3fn), torch.where(nan_group, torch.full_like(s, float("nan")), s)
    res = fit_quantizer(te_nan_poisons, mx=True, presets=["mxfp8_te", "mxfp8_vllm"])
    assert res.exact and res.nearest == "mxfp8_te", (res.misses, res.diff())
    assert res.diff() == {"nan_policy": ("ignore_in_amax", "propagate")}, res.diff()
