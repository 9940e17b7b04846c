"""W8A8 block-FP8 linear against a first-principles float64 computation (no shared helpers)."""

from __future__ import annotations

import pytest
import torch

from refit_verify.errors import BadInputError
from refit_verify.fp8 import quantize
from refit_verify.model import linear as lin


def _operands(n=384, k=256, m=7, seed=0):
    # n/128 != k/128 so a transposed scale grid cannot pass by symmetry
    g = torch.Generator().manual_seed(seed)
    w = (torch.randn(n, k, generator=g) * torch.exp(torch.randn(n, 1, generator=g))).to(torch.bfloat16)
    x = torch.randn(m, k, generator=g) * torch.linspace(0.01, 30.0, k)  # groups of very different range
    qt = quantize(w, "vllm_per_block", "w")
    return x, qt.data, qt.scale_inv, w


def _reference(x, w_codes, w_scale):
    """vLLM's group quant (FACTS.md §3: amax floor 1e-10, divide, clamp) and the block dequant, in float64."""
    m, k = x.shape
    groups = x.float().reshape(m, k // 128, 128)
    s = groups.abs().amax(-1, keepdim=True).clamp(min=1e-10) / 448.0
    xq = torch.clamp(groups / s, -448.0, 448.0).to(torch.float8_e4m3fn)
    xd = (xq.double() * s.double()).reshape(m, k)
    table = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).double()  # code -> e4m3 value
    wv = table[w_codes.view(torch.uint8).long()]
    n = w_codes.shape[0]
    for i in range(0, n, 128):
        for j in range(0, k, 128):
            wv[i:i + 128, j:j + 128] *= float(w_scale[i // 128, j // 128])
    return xd @ wv.t()


def test_emulated_matches_first_principles():
    x, w, s, _ = _operands()
    got = lin.w8a8_linear(x, w, s, backend="emulated")
    ref = _reference(x, w, s)
    err = (got.double() - ref).abs().max() / ref.abs().max()
    assert err < 1e-6, f"emulated W8A8 differs from the float64 reference by {err:.3g} of max |y|"


def test_emulated_activation_codes_are_vllm_group_quant():
    x, _, _, _ = _operands(m=5)
    a = lin.quantize_act(x)
    s = x.reshape(5, -1, 128).abs().amax(-1).clamp(min=1e-10) / 448.0
    assert torch.equal(a.scale_inv, s), "activation scales are not amax/448 per 1x128 group"
    assert a.data.dtype == torch.float8_e4m3fn and a.data.shape == x.shape


def test_emulated_is_deterministic_and_batch_invariant():
    x, w, s, _ = _operands(m=9)
    y1 = lin.w8a8_linear(x, w, s)
    y2 = lin.w8a8_linear(x.clone(), w, s)
    assert torch.equal(y1, y2)
    # per-token groups: a row's codes and scales must not depend on the other rows of the batch
    one, all_rows = lin.quantize_act(x[3:4]), lin.quantize_act(x)
    assert torch.equal(one.data.view(torch.uint8), all_rows.data[3:4].view(torch.uint8))
    assert torch.equal(one.scale_inv, all_rows.scale_inv[3:4])
    y_one = lin.w8a8_linear(x[3:4], w, s)
    assert torch.allclose(y_one, y1[3:4], rtol=1e-5, atol=1e-5 * float(y1.abs().max()))


def test_w8a8_close_to_bf16_linear():
    x, w, s, _ = _operands()
    wf = quantize(w.float(), "vllm_per_block").data  # unused: keep the bf16 master below
    del wf
    g = torch.Generator().manual_seed(0)
    w_bf16 = (torch.randn(384, 256, generator=g) * torch.exp(torch.randn(384, 1, generator=g))).to(torch.bfloat16)
    y = lin.w8a8_linear(x, w, s)
    ref = x @ w_bf16.float().t()
    rel = (y - ref).norm() / ref.norm()
    # two e4m3 roundings (3 mantissa bits, ~2.6% rel each on randn-like data, FACTS.md §3) add in quadrature
    assert rel < 0.06, f"W8A8 relative error {rel:.4f} vs the BF16 linear"


@pytest.mark.parametrize("bad", ["k_not_128", "no_scale_shape", "bf16_weight"])
def test_typed_errors(bad):
    x, w, s, _ = _operands()
    with pytest.raises(BadInputError):
        if bad == "k_not_128":
            lin.w8a8_linear(x[:, :200], w[:, :200], s)
        elif bad == "no_scale_shape":
            lin.w8a8_linear(x, w, s.t().contiguous())
        else:
            lin.w8a8_linear(x, w.float(), s)


def test_native_backend_refuses_cleanly_without_gpu():
    if torch.cuda.is_available():
        pytest.skip("GPU present: the nightly suite tests the native backend")
    x, w, s, _ = _operands()
    with pytest.raises(BadInputError, match="native FP8 GEMM unavailable"):
        lin.w8a8_linear(x, w, s, backend="native")
