"""Comparison primitives: first mismatch located exactly; metrics on known inputs."""

import math

import pytest
import torch

from refit_verify.compare import (assert_fp8_equal, calc_diff, compare_fp8, cosine, nan_accounting, rel_l2,
                                  scale_stats, sqnr_db)
from refit_verify.errors import Fp8MismatchError
from refit_verify.fp8 import quantize


@pytest.fixture
def pair():
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(300, 520, generator=g) * 0.02).bfloat16()
    q = quantize(x, "vllm_per_block")
    return q.data.clone(), q.scale_inv.clone()


def test_identical_is_equal(pair):
    d, s = pair
    r = compare_fp8(d, s, d.clone(), s.clone(), name="w")
    assert r.equal and r.first_mismatch is None and r.n_code_mismatch == 0


def test_first_code_mismatch_names_tensor_block_element_codes_and_scales(pair):
    d, s = pair
    b = d.view(torch.uint8).clone()
    b[200, 300] ^= 0x01  # one ulp, in block (1, 2)
    b[290, 510] ^= 0x02  # later block: must not be reported first
    with pytest.raises(Fp8MismatchError) as exc:
        assert_fp8_equal(d, s, b.view(torch.float8_e4m3fn), s, name="q_proj")
    mm = exc.value.mismatch
    assert (mm.tensor, mm.kind, mm.block, mm.element) == ("q_proj", "code", (1, 2), (200, 300))
    assert mm.a_code == int(d.view(torch.uint8)[200, 300]) and mm.b_code == int(b[200, 300])
    assert mm.a_scale == float(s[1, 2]) == mm.b_scale
    msg = str(exc.value)
    assert "q_proj" in msg and "(1, 2)" in msg and "(200, 300)" in msg
    r = compare_fp8(d, s, b.view(torch.float8_e4m3fn), s)
    assert r.n_code_mismatch == 2 and r.block_mismatch_counts[1, 2] == 1 and r.block_mismatch_counts[2, 3] == 1
    assert r.ulp_histogram == {1: 1, 2: 1} or sum(r.ulp_histogram.values()) == 2


def test_scale_only_mismatch_is_reported_as_scale(pair):
    d, s = pair
    s2 = s.clone()
    s2[2, 1] = torch.nextafter(s2[2, 1], torch.tensor(1.0))
    r = compare_fp8(d, s, d, s2, name="w")
    assert not r.equal and r.codes_equal and r.first_mismatch.kind == "scale" and r.first_mismatch.block == (2, 1)


def test_nan_codes_compare_as_bytes_not_floats():
    a = torch.tensor([[0x7F, 0x00, 0x80]], dtype=torch.uint8)
    s = torch.ones(1, 1)
    assert compare_fp8(a, s, a.clone(), s).equal  # NaN == NaN bytewise
    b = torch.tensor([[0x7F, 0x80, 0x80]], dtype=torch.uint8)  # +0 vs -0 differ as bytes
    r = compare_fp8(a, s, b, s)
    assert r.n_code_mismatch == 1 and r.first_mismatch.element == (0, 1)
    assert r.nan_codes == (1, 1)


def test_shape_mismatch_is_a_result_not_a_crash(pair):
    d, s = pair
    r = compare_fp8(d, s, d[:-1], s, name="w")
    assert not r.equal and r.first_mismatch.kind == "shape" and "w" in r.first_mismatch.describe()


def test_trailing_singleton_scale_dimension_accepted(pair):
    d, s = pair
    assert compare_fp8(d, s.unsqueeze(-1), d, s).equal


def test_metrics_on_known_values():
    x = torch.tensor([3.0, 4.0])
    y = torch.tensor([3.0, 4.0]) + torch.tensor([0.3, 0.4])
    assert sqnr_db(x, x) == math.inf
    assert sqnr_db(x, y) == pytest.approx(20.0)
    assert rel_l2(x, y) == pytest.approx(0.1)
    assert cosine(x, y) == pytest.approx(1.0)
    assert calc_diff(x, x) == 0.0
    assert calc_diff(x, -x) == pytest.approx(2.0)
    assert nan_accounting(torch.tensor([1.0, math.nan, math.inf])) == {"nan": 1, "inf": 1, "total": 3}


def test_scale_stats_counts_ulps():
    a = torch.tensor([1.0, 2.0, 3.0])
    b = a.clone()
    b[1] = torch.nextafter(b[1], torch.tensor(9.0))
    st = scale_stats(a, b)
    assert st["n_differ"] == 1 and st["ulp_max"] == 1 and st["ulp_hist"] == {0: 2, 1: 1}
