"""Native (torch/cuBLAS, sm90) block-FP8 GEMM against the emulated one, on the same FP8 operands.

Both backends consume identical codes and scales (vLLM 1x128 activation groups, 128x128 weight
blocks), so their difference is only accumulation: the tensor cores sum each 128-long K block of
e4m3 products with reduced precision (DeepSeek-V3 reports ~14 mantissa bits on Hopper) and the
epilogue applies the two scales in float32. Bound, per output element:
    |native - exact| <= 2^-10 * sum_k |a_k * w_k|          (float32 output)
    |native - exact| <= 2^-8  * sum_k |a_k * w_k|          (bf16 output fallback: + 2^-9 rounding)
where `exact` is the float64 product of the dequantized operands. A wrong scale layout, a
transposed grid or misread bytes give errors of order 1 in the same units, far above the bound.
Aggregate: DeepGEMM's calc_diff (its FP8 GEMM gate vs BF16 is 1e-3); against the same operands we
require < 1e-5. Run: pytest suites/nightly/test_native_gemm.py -s (figures are printed).
"""

from __future__ import annotations

import pytest
import torch

from refit_verify.compare.metrics import calc_diff
from refit_verify.fp8 import quantize
from refit_verify.model import linear as lin
from refit_verify.model.native import native_available, native_gemm, native_layout

OK, WHY = native_available()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not OK, reason=WHY)]

# (M, N, K): prefill/decode M, FACTS.md §7 shapes; K/128 = 10 needs cuBLAS's pad-to-4 of scale
# columns, N = 576 a partial last weight block-row, M = 7 padded rows
SHAPES = [(128, 512, 256), (7, 4096, 4096), (256, 1024, 4096), (64, 14336, 4096), (128, 4096, 14336),
          (33, 576, 7168), (384, 128, 1280)]


def _operands(m, n, k, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    w = torch.randn(n, k, generator=g, device="cuda") * 0.02
    w[:, torch.randperm(k, generator=g, device="cuda")[: max(1, k // 512)]] *= 8  # outlier input channels
    x = torch.randn(m, k, generator=g, device="cuda")
    x[:, :4] *= 30  # outlier activation channels
    qt = quantize(w.to(torch.bfloat16), "vllm_per_block", "w")
    a = lin.quantize_act(x.to(torch.bfloat16), "vllm_act_group", "x")
    return a, qt.data, qt.scale_inv


def figures(m, n, k) -> dict:
    a, w, s = _operands(m, n, k)
    xd = lin.dequantize_act(a).double()
    wd = lin.dequantize_weight(w, s).double()
    exact = xd @ wd.t()
    magnitude = xd.abs() @ wd.abs().t()  # sum_k |a_k w_k|: the scale of each dot product
    native = native_gemm(a.data, a.scale_inv, w, s).double()
    torch.backends.cuda.matmul.allow_tf32 = False  # TF32 would make the emulated side the noisy one
    emulated = lin.emulated_gemm(a, w, s).double()
    norm_err = ((native - exact).abs() / magnitude.clamp(min=1e-30)).max().item()
    return {
        "shape": (m, n, k),
        "layout": native_layout().to_dict() if native_layout() else None,
        "native_vs_exact_norm_max": norm_err,
        "native_vs_exact_calc_diff": calc_diff(native, exact),
        "native_vs_emulated_max_abs": (native - emulated).abs().max().item(),
        "native_vs_emulated_rel_l2": ((native - emulated).norm() / emulated.norm()).item(),
        "emulated_fp32_vs_exact_norm_max": ((emulated - exact).abs() / magnitude.clamp(min=1e-30)).max().item(),
        "deterministic": torch.equal(native_gemm(a.data, a.scale_inv, w, s).double(), native),
    }


@pytest.mark.parametrize("m,n,k", SHAPES, ids=[f"{m}x{n}x{k}" for m, n, k in SHAPES])
def test_native_within_bound_of_emulated(m, n, k):
    f = figures(m, n, k)
    print(f"\n{f}")
    bf16_out = f["layout"] and f["layout"]["out_dtype"] == "bfloat16"
    # Hopper's FP8 tensor cores keep a reduced-precision accumulator inside each K chunk, so the
    # native result sits ~2^-10 from exact per element (H100, torch 2.11: up to 1.13e-3 at K=256,
    # <= 3e-4 for K >= 1280), far above the emulated fp32 path (< 5e-7). 2^-9 bounds what was measured.
    bound = 2.0**-8 if bf16_out else 2.0**-9
    assert f["native_vs_exact_norm_max"] <= bound, f"per-element error above {bound:.3g}: {f}"
    assert f["native_vs_exact_calc_diff"] < (1e-4 if bf16_out else 1e-5), f
    assert f["deterministic"], f"native GEMM not run-to-run deterministic: {f}"


def test_native_model_logits_match_emulated():
    from refit_verify.model import fixtures
    from refit_verify.model.llama import LlamaModel
    from refit_verify.model.logits import compare_logits, make_prompts

    cfg, eng = fixtures.config(), fixtures.engine_params()
    ids = make_prompts(cfg.vocab_size, 4, 24)
    emu = LlamaModel(cfg, eng, backend="emulated", device="cuda").logits(ids).cpu()
    nat = LlamaModel(cfg, eng, backend="native", device="cuda").logits(ids).cpu()
    d = compare_logits(emu, nat)
    print(f"\nnative vs emulated logits (tiny-llama, cuda): {d.to_dict()}")
    # Measured on H100 (torch 2.11): cosine 0.99887, kl_max 3.9e-4, top-1 0.86 on the flat synthetic
    # logits; that is about 10x below the W8A8 noise itself (BF16 vs FP8: cosine 0.989, kl_max 3.2e-3)
    # but larger than the per-GEMM error predicts; the bound pins the measured level, not an ideal.
    assert d.cosine > 0.998 and d.kl_max < 1e-3, d.to_dict()
