"""MXFP8 (1x32 groups along K, E8M0 scales): bytes derived by hand for zero, NaN, subnormal and
power-of-two boundary groups; check against an adapter of vLLM's torch path; fit recovers it."""

import pytest
import torch

from refit_verify.cases import mx_cases
from refit_verify.check import check_quantizer
from refit_verify.errors import RecipeFailure
from refit_verify.fit import fit_quantizer
from refit_verify.fp8 import dequantize, quantize
from refit_verify.fp8 import format as fmt


def _row(values):
    x = torch.zeros(1, 32, dtype=torch.float32)
    x[0, : len(values)] = torch.tensor(values, dtype=torch.float32)
    return x


# (group values, E8M0 byte, first codes), each derived by hand:
#   byte = clamp(ceil(log2(max(amax, 2**-126) / 448)) + 127, 0, 254); code = e4m3(x / 2**(byte-127))
HAND = {
    "zero": ([0.0, -0.0], 0, [0x00, 0x80]),  # amax -> 2**-126: ceil(-134.8) + 127 < 0 -> byte 0, 0 / 2**-127
    "subnormal": ([1e-40], 0, [0x09]),  # f32(1e-40) * 2**127 = 0.017014 = 8.71 * 2**-9 (e4m3 step here) -> 0x09
    "exact_448": ([448.0, 1.0], 127, [0x7E, 0x38]),  # 448 / 448 = 1 = 2**0: byte 127, codes 448 and 1.0
    "just_above_448": ([449.0, 1.0], 128, [0x76, 0x30]),  # 449/448 > 1 -> 2**1: 224.5 -> 224 (0x76), 0.5
    "pow2_boundary": ([448.0 * 2.0**-20], 107, [0x7E]),  # 448*2**-20 / 448 = 2**-20 exactly: byte 107
    "nan": ([1.0, float("nan")], 0xFF, [0x7F, 0x7F]),  # NaN amax: NaN scale (E8M0 0xFF), x / NaN = NaN
}


@pytest.mark.parametrize("label", sorted(HAND))
def test_mx_groups_match_hand_derivation(label):
    values, byte, first = HAND[label]
    q = quantize(_row(values), "mxfp8_vllm", name=label)
    assert fmt.e8m0_bytes(q.scale_inv).tolist() == [[byte]]
    got = q.codes[0, : len(first)].tolist()
    if label == "nan":  # NaN's sign bit comes from the host FPU
        got = [c & 0x7F for c in got]
    assert got == first, (label, [hex(c) for c in got])


def test_e8m0_bytes_round_trip_and_dequantize():
    q = quantize((torch.randn(4, 64) * 0.02), "mxfp8_vllm")
    b = fmt.e8m0_bytes(q.scale_inv)
    assert b.dtype == torch.uint8 and b.shape == (4, 2)
    assert torch.equal(fmt.e8m0_to_scale(b), q.scale_inv)
    assert torch.equal(dequantize(q), dequantize(q.data, fmt.e8m0_to_scale(b), (1, 32)))


def test_k_must_be_a_multiple_of_32():
    with pytest.raises(RecipeFailure, match="multiple of the block"):
        quantize(torch.randn(4, 33), "mxfp8_vllm")


def vllm_mxfp8_torch(x):
    """vLLM's MXFP8 torch path restated: per 32 along K, amax clamped to fp32 tiny, biased exponent
    ceil(log2(amax/448)) + 127 clamped to [0, 254] as uint8, x / exp2(byte - 127), no clamp."""
    assert x.shape[-1] % 32 == 0
    m, k = x.shape
    g = x.to(torch.float32).view(m, k // 32, 32)
    amax = g.abs().amax(dim=-1).clamp(min=torch.finfo(torch.float32).tiny)
    biased = (torch.ceil(torch.log2(amax / 448.0)) + 127.0).clamp(0, 254)
    q = (g / torch.exp2(biased - 127.0).unsqueeze(-1)).view(m, k).to(torch.float8_e4m3fn)
    return q, torch.exp2(biased - 127.0)


def test_check_passes_against_vllms_mxfp8_torch_path_on_the_mx_case_set():
    result = check_quantizer(vllm_mxfp8_torch, "mxfp8_vllm")
    assert {c.case for c in result.cases} == {c.name for c in mx_cases(0)}
    assert result.ok, [(c.case, c.reason) for c in result.failures()]


def test_fit_recovers_mxfp8_and_names_a_dropped_exponent_clamp():
    res = fit_quantizer(vllm_mxfp8_torch, mx=True)
    assert res.exact and res.nearest == "mxfp8_vllm" and not res.diff()

    def unclamped(x):  # the exponent not clamped to >= -127: zero and tiny groups get 2**-134
        m, k = x.shape
        g = x.to(torch.float32).view(m, k // 32, 32)
        amax = g.abs().amax(dim=-1).clamp(min=torch.finfo(torch.float32).tiny)
        s = torch.pow(2.0, torch.ceil(torch.log2(amax / 448.0)))
        return (g / s.unsqueeze(-1)).view(m, k).to(torch.float8_e4m3fn), s
    res = fit_quantizer(unclamped, mx=True)
    assert res.exact and res.diff() == {"pow2": ("mx_e8m0", "float_ceil")}, res.diff()
