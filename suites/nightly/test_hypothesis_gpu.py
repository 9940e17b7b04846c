"""Property: Triton == reference, bitwise, on any shape and value mix (HYPOTHESIS_PROFILE=nightly)."""

from __future__ import annotations

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, strategies as st  # noqa: E402

from refit_verify.compare import compare_fp8  # noqa: E402
from refit_verify.fp8.kernels import SUPPORTED_RECIPES  # noqa: E402

pytestmark = pytest.mark.triton


@st.composite
def weights(draw):
    m = draw(st.integers(1, 300))
    n = draw(st.integers(1, 300))
    seed = draw(st.integers(0, 2**31 - 1))
    log_scale = draw(st.floats(-40, 30))
    dtype = draw(st.sampled_from([torch.bfloat16, torch.bfloat16, torch.float32, torch.float16]))
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(m, n, generator=g) * (2.0 ** log_scale)
    k = draw(st.integers(0, 4))
    specials = [0.0, float("nan"), float("inf"), -float("inf"), 1e-40, 448.0, 3e38]
    for _ in range(k):
        w[draw(st.integers(0, m - 1)), draw(st.integers(0, n - 1))] = draw(st.sampled_from(specials))
    if draw(st.booleans()):
        w[: draw(st.integers(0, m)), : draw(st.integers(0, n))] = 0.0
    return w.to(dtype)


@given(w=weights(), name=st.sampled_from(SUPPORTED_RECIPES))
def test_triton_matches_reference(w, name):
    from refit_verify.fp8.kernels import quantize_triton
    from refit_verify.fp8.quantize import quantize

    w = w.cuda()
    try:
        a = quantize(w, name)
    except Exception as exc:  # the recipe's own failure must be the kernel's too
        with pytest.raises(type(exc)):
            quantize_triton(w, name)
        return
    b = quantize_triton(w, name)
    r = compare_fp8(a.data, a.scale_inv, b.data, b.scale_inv, (128, 128), name)
    assert r.equal, r.first_mismatch.describe()
