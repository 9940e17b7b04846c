"""Expected bytes derived by hand from each recipe's definition (suites/pr/handcalc.py), not by
calling the code under test."""

import math

import pytest
import torch

import handcalc as hc
from refit_verify.fp8 import quantize


def _grid(rows, cols, fn):
    return [[fn(r, c) for c in range(cols)] for r in range(rows)]


def _bf16(x):
    return [[float(torch.tensor(v, dtype=torch.bfloat16)) for v in row] for row in x]


INPUTS = {
    "small_3x5": _bf16(_grid(3, 5, lambda r, c: (r * 5 + c - 7) * 0.013)),
    "unit_row": [[1.0, 0.5, -0.25, 0.0, 3.0]],
    "edge_pad_1x129": _bf16([[1e-4] * 128 + [100.0]]),
    "partial_130x3": _bf16(_grid(130, 3, lambda r, c: math.sin(r * 3 + c) * (0.01 if r < 128 else 2.0))),
    "zero_2x2": [[0.0, 0.0], [0.0, 0.0]],
    "tiny_2x2": _bf16([[1e-38, -1e-38], [0.0, 5e-39]]),
    "outlier_1x200": _bf16([[0.001 * (i % 7) for i in range(199)] + [448.0 * 3]]),
}
ORACLES = {
    "vllm_per_block": lambda x: hc.vllm_per_block(x),
    "vllm_per_block_ue8m0": lambda x: hc.vllm_per_block(x, ue8m0=True),
    "nemo_rl": hc.nemo_rl,
}


@pytest.mark.parametrize("recipe", sorted(ORACLES))
@pytest.mark.parametrize("case", sorted(INPUTS))
def test_codes_and_scales_match_hand_derivation(recipe, case):
    x = INPUTS[case]
    want_codes, want_scales = ORACLES[recipe](x)
    got = quantize(torch.tensor(x, dtype=torch.bfloat16), recipe, name=case)
    codes = got.codes
    for (bi, bj), s in want_scales.items():
        g = float(got.scale_inv[bi, bj])
        assert g == s or (math.isnan(g) and math.isnan(s)), f"{case}: scale of block {(bi, bj)}: {g!r} != {s!r}"
    for (r, c), code in want_codes.items():
        if code == 0x7F:  # NaN's sign bit comes from the host FPU (x86 makes 0*inf negative)
            assert int(codes[r, c]) & 0x7F == 0x7F, f"{case}/{recipe}: element {(r, c)} should be NaN"
            continue
        assert int(codes[r, c]) == code, (
            f"{case}/{recipe}: element {(r, c)} code 0x{int(codes[r, c]):02x} != 0x{code:02x} "
            f"(x={x[r][c]!r}, block scale {float(got.scale_inv[r // 128, c // 128])!r})"
        )


def test_known_literal_bytes():
    """A few bytes written out in full: 448, 224, -112, 0 and the float32 bits of 1/448."""
    got = quantize(torch.tensor([[1.0, 0.5, -0.25, 0.0]], dtype=torch.bfloat16), "vllm_per_block")
    assert got.codes.tolist() == [[0x7E, 0x76, 0xEE, 0x00]]
    assert got.scale_inv.view(torch.int32).item() == 0x3B124925  # float32(1/448)


def test_edge_padding_example_from_reference():
    """(1,129) with 1e-4 then 100: NeMo's edge pad puts 100 into block 0's amax; vLLM doesn't."""
    x = torch.tensor(INPUTS["edge_pad_1x129"], dtype=torch.bfloat16)
    nemo, vllm = quantize(x, "nemo_rl"), quantize(x, "vllm_per_block")
    assert float(nemo.scale_inv[0, 0]) == pytest.approx(100 / 448, rel=1e-2)
    assert (nemo.codes[0, :128] == 0).all(), "every value of block 0 dequantizes to 0 under edge padding"
    assert float(vllm.scale_inv[0, 0]) == pytest.approx(1e-4 / 448, rel=1e-2)
    assert (vllm.codes[0, :128] != 0).all()
