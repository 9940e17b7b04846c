"""The fused Triton quantizer is bit-exact with the reference on the same GPU.

Layered: the scale helper over every bf16 amax (exhaustive), the cast helper over a dense fp32
sample, whole kernels on fixed shapes and specials for every launch variant, then hypothesis.
"""

from __future__ import annotations

import pytest
import torch

from refit_verify.compare import compare_fp8
from refit_verify.fp8.kernels import SUPPORTED_RECIPES, device_semantics, quantize_triton
from refit_verify.fp8.presets import get_recipe
from refit_verify.fp8.quantize import scales_for_amax, quantize

pytestmark = pytest.mark.triton
REQUIRED = ["vllm_per_block", "vllm_per_block_ue8m0", "nemo_rl", "nemo_rl_pow2"]
VARIANTS = [dict(num_warps=8, sub_m=128), dict(num_warps=4, sub_m=128), dict(num_warps=8, sub_m=32),
            dict(num_warps=8, sub_m=128, soft_cast=True), dict(num_warps=16, sub_m=128)]


def _all_bf16_amax(dev):
    a = torch.arange(0, 0x7F81, dtype=torch.int32).to(torch.int16).view(torch.bfloat16).float()
    extra = torch.tensor([float("nan"), 1e-4, 448.0, 7 * 2.0**-20], dtype=torch.float32)
    return torch.cat([a, extra]).to(dev)


def test_required_recipes_supported():
    assert set(REQUIRED) <= set(SUPPORTED_RECIPES)


@pytest.mark.parametrize("name", SUPPORTED_RECIPES)
def test_scale_helper_exhaustive_bf16_amax(name, dev, record):
    from refit_verify.fp8.kernels.triton_block import probe_scales

    r = get_recipe(name)
    a = _all_bf16_amax(dev)
    aa = a.clamp(min=r.amax_floor) if r.amax_floor is not None else a
    f_ref, s_ref = scales_for_amax(aa.view(-1, 1, 1, 1), r)
    f, s = probe_scales(a, r)
    bad = (f.view(torch.int32) != f_ref.view(-1).view(torch.int32)) | (
        s.view(torch.int32) != s_ref.view(-1).view(torch.int32))
    record(f"scale_helper/{name}", {"n": a.numel(), "mismatch": int(bad.sum()), "first_amax": a[bad][:8].tolist()})
    assert not bad.any(), f"{name}: {int(bad.sum())} amax values give other scales, e.g. {a[bad][:8].tolist()}"


def test_fp32_subnormal_amax_pow2_helpers(dev, record):
    """Denormal descale values: the nemo pow2 exponent and vLLM log2 with ftz off."""
    from refit_verify.fp8.kernels.triton_block import probe_scales

    bits = torch.cat([torch.arange(1, 1 << 23, 997, dtype=torch.int32), torch.arange(0x3F800000, 0x3F800000 + 4096, dtype=torch.int32),
                      torch.arange(0x00400000 - 64, 0x00400000 + 64, dtype=torch.int32)])
    a = bits.view(torch.float32).to(dev)
    out = {}
    for name in ("nemo_rl_pow2", "vllm_per_block_ue8m0", "deepgemm"):
        r = get_recipe(name)
        aa = a.clamp(min=r.amax_floor) if r.amax_floor is not None else a
        f_ref, s_ref = scales_for_amax(aa.view(-1, 1, 1, 1), r)
        f, s = probe_scales(a, r)
        bad = (f.view(torch.int32) != f_ref.view(-1).view(torch.int32)) | (s.view(torch.int32) != s_ref.view(-1).view(torch.int32))
        out[name] = {"n": a.numel(), "mismatch": int(bad.sum()), "first": a[bad][:4].tolist()}
    record("scale_helper/denormal_and_near_pow2", out)
    assert all(v["mismatch"] == 0 for v in out.values()), out


@pytest.mark.parametrize("soft", [False, True])
def test_cast_helper_dense(soft, dev, record):
    from refit_verify.fp8.kernels.triton_block import probe_cast

    # every fp32 exponent from 2^-20 to 2^10 with 2^15 mantissa patterns, signs, and specials
    hi = torch.arange(0x35800000 >> 8, 0x44800000 >> 8, 37, dtype=torch.int64)
    bits = (hi.view(-1, 1) << 8) | torch.tensor([0, 1, 0x7F, 0x80, 0xFF], dtype=torch.int64)
    y = bits.flatten().to(torch.int32).view(torch.float32)
    y = torch.cat([y, -y, torch.tensor([448.0, 463.99, 464.0, 1e9, float("inf"), -float("inf"), float("nan"),
                                        0.0, -0.0, 2.0**-10, 3 * 2.0**-11, 1e-40, -1e-40])]).to(dev)
    q = probe_cast(y, device_semantics(dev)["cast_nan"], soft)
    ref = y.to(torch.float8_e4m3fn).view(torch.uint8)
    bad = q != ref
    record(f"cast_helper/soft={soft}", {"n": y.numel(), "mismatch": int(bad.sum()), "first": y[bad][:8].tolist()})
    assert not bad.any(), f"{int(bad.sum())} casts differ, e.g. {y[bad][:8].tolist()}"


def _cases(dev):
    g = torch.Generator().manual_seed(7)
    out = []
    for shape in [(4096, 4096), (1024, 4096), (300, 200), (129, 257), (1, 1), (1, 129), (128, 1), (576, 7168), (255, 3884)]:
        out.append((f"randn{shape}", (0.02 * torch.randn(shape, generator=g)).bfloat16()))
    s = (0.02 * torch.randn(384, 520, generator=g)).bfloat16()
    s[0:128, 0:128] = 0
    s[128:256, 0:128] *= 1e-36
    s[256:384, 0:128] = (torch.randn(128, 128, generator=g) * 1e4).bfloat16()
    s[5, 300] = float("nan")
    s[200, 450] = float("inf")
    s[300, 300] = -float("inf")
    s[383, 519] = 3.0  # edge-pad value enters the last block row/column's amax under NeMo
    out.append(("specials(384,520)", s))
    e = torch.full((1, 129), 1e-4).bfloat16()
    e[0, 128] = 100.0
    out.append(("edge_pad_example(1,129)", e))
    out.append(("fp32 randn(200,300)", 0.02 * torch.randn(200, 300, generator=g)))
    out.append(("fp16 randn(130,260)", (0.02 * torch.randn(130, 260, generator=g)).half()))
    return [(k, v.to(dev)) for k, v in out]


KERNEL_CASES = [(n, VARIANTS[0]) for n in SUPPORTED_RECIPES] + [(n, v) for n in REQUIRED for v in VARIANTS[1:]]


@pytest.mark.parametrize("name,variant", KERNEL_CASES,
                         ids=[f"{n}-" + "-".join(f"{k}{v[k]}" for k in v) for n, v in KERNEL_CASES])
def test_kernel_bit_exact(name, variant, dev, record):
    fails = []
    for label, w in _cases(dev):
        if variant is not VARIANTS[0] and w.dtype != torch.bfloat16:
            continue  # launch variants: bf16 cases only (each dtype is one more compile)
        a = quantize(w, name)
        b = quantize_triton(w, name, **variant)
        r = compare_fp8(a.data, a.scale_inv, b.data, b.scale_inv, (128, 128), label)
        if not r.equal:
            fails.append(r.first_mismatch.describe() + f" ({r.n_code_mismatch} codes, {r.n_scale_mismatch} scales)")
        if a.data.is_contiguous() != b.data.is_contiguous():
            fails.append(f"{label}: layout differs (reference contiguous={a.data.is_contiguous()})")
    record(f"kernel/{name}/{variant}", {"fails": fails})
    assert not fails, "\n".join(fails)


def test_kernel_nan_block_propagates(dev):
    w = torch.zeros(128, 256, dtype=torch.bfloat16, device=dev)
    w[7, 9] = float("nan")
    w[:, 128:] = 0.5
    for name in ("vllm_per_block", "nemo_rl"):
        b = quantize_triton(w, name)
        assert torch.isnan(b.scale_inv[0, 0]), name  # a float max would have dropped the NaN
        assert not torch.isnan(b.scale_inv[0, 1]), name
