"""transformer_engine presets against an independent reproduction of TransformerEngine's blockwise
reference quantizer (tests/pytorch/references/, scale_from_amax_tensor), written here from its
semantics: amax -> max(amax, eps) -> torch.div(MAX, amax) (one rounding) -> inf -> finfo(x dtype).max
-> [pow2: frexp exponent - 1, 0 where amax is inf] -> 1 where amax == 0 -> x * s -> clamp -> cast."""

import pytest
import torch

from refit_verify.fp8.kernels.spec import UnsupportedRecipe, kernel_spec
from refit_verify.fp8.presets import get_recipe
from refit_verify.fp8.quantize import quantize

MAX = 448.0


def te_like(x: torch.Tensor, pow2: bool):
    m, k = x.shape
    pm, pk = -m % 128, -k % 128
    xp = torch.nn.functional.pad(x, (0, pk, 0, pm)) if (pm or pk) else x
    mm, kk = xp.shape
    t = xp.reshape(mm // 128, 128, kk // 128, 128)
    amax = t.abs().transpose(1, 2).reshape(mm // 128, kk // 128, -1).amax(-1).float()
    amax = torch.max(amax, torch.tensor(0.0))
    s = torch.div(MAX, amax)
    s = torch.where(s == torch.inf, torch.finfo(x.dtype).max, s)
    if pow2:
        _, e = torch.frexp(s)
        s = torch.ldexp(torch.ones_like(s), e - 1)
        s = torch.where(amax == float("inf"), 0.0, s)
    s = torch.where(amax == 0, 1.0, s)
    q = torch.clamp(t * s.reshape(mm // 128, 1, kk // 128, 1), -MAX, MAX).to(torch.float8_e4m3fn)
    return q.reshape(mm, kk)[:m, :k].contiguous(), torch.reciprocal(s)


def _inputs():
    g = torch.Generator().manual_seed(1234)
    yield "randn_f32", torch.randn(256, 384, generator=g)
    yield "randn_bf16", (torch.randn(200, 300, generator=g) * 3).bfloat16()
    yield "randn_f16", torch.randn(130, 129, generator=g).half()
    tiny = torch.randn(128, 256, generator=g) * 1e-41  # subnormal fp32 amax: s overflows to inf
    yield "subnormal_f32", tiny
    yield "tiny_bf16", (torch.randn(128, 256, generator=g) * 1e-38).bfloat16()  # s -> inf -> bf16 max
    yield "tiny_f16", torch.full((128, 128), 2.0 ** -24).half()
    inf = torch.randn(256, 256, generator=g)
    inf[3, 5] = float("inf")
    inf[200, 130] = -float("inf")
    yield "inf_blocks", inf
    yield "zero_block", torch.zeros(128, 256)


@pytest.mark.parametrize("pow2", [False, True])
@pytest.mark.parametrize("label,x", list(_inputs()), ids=lambda v: v if isinstance(v, str) else "")
def test_te_presets_match_te_reference_semantics(label, x, pow2):
    name = "transformer_engine_pow2" if pow2 else "transformer_engine"
    ref_q, ref_si = te_like(x, pow2)
    qt = quantize(x, name)
    assert torch.equal(qt.data.view(torch.uint8), ref_q.view(torch.uint8)), f"{name} codes differ on {label}"
    assert torch.equal(qt.scale_inv.view(torch.int32), ref_si.view(torch.int32)), f"{name} scales differ on {label}"


def test_te_true_division_differs_from_python_scalar_spelling():
    # 448 / a in torch is reciprocal(a) * 448 (two roundings); TE's torch.div rounds once.
    two_roundings = get_recipe("transformer_engine").replace(name="two_roundings", scale_form="scale")
    x = torch.rand(128, 128, generator=torch.Generator().manual_seed(7))
    differs = [i for i in range(64)
               if not torch.equal(quantize(x * (1 + i / 64), "transformer_engine").scale_inv,
                                  quantize(x * (1 + i / 64), two_roundings).scale_inv)]
    assert differs, "no block separates scale_div from the two-rounding scale form"


@pytest.mark.parametrize("field,value", [("scale_form", "scale_div"), ("inf_scale", "fmax_input")])
def test_kernel_spec_rejects_reference_only_fields(field, value):
    r = get_recipe("torchao").replace(name="probe", **{field: value})
    with pytest.raises(UnsupportedRecipe, match=field):
        kernel_spec(r, False, False)
