"""Which recipes the fused kernels reproduce, and the constants they are compiled with.

A Recipe is mapped to a `KernelSpec`: the same choices as the reference, spelled as the
compile-time switches of one kernel. Two facts of the *device* join the recipe, because the
reference's bytes depend on them and a kernel must reproduce the reference on the same device:

- ``div_recip``: torch on CUDA computes ``tensor / python_scalar`` as ``tensor * (1/scalar)``
  (one fp32 reciprocal, then a multiply); torch on CPU divides. ``amax / 448`` therefore differs
  by an ulp between the two devices for about half of all amax values.
- ``cast_nan``: how the running torch casts |y| > 464 and inf to float8_e4m3fn: NaN (torch 2.11, CPU
  and CUDA; exactly 464 rounds to 448, measured on H100) or saturation to +-448 (torch 2.13 CPU).
  See ``format.probe_cast_semantics``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from refit_verify.errors import BadInputError
from refit_verify.fp8.presets import PRESETS, get_recipe
from refit_verify.fp8.recipe import Recipe


def f32(v: float) -> float:
    """The float32 value nearest v, as a Python float (exact, so kernels see no second rounding)."""
    return float(torch.tensor(v, dtype=torch.float32))


E4M3_MAX = 448.0
RECIP_E4M3_MAX = float(torch.tensor(1.0) / torch.tensor(E4M3_MAX))  # what CUDA torch multiplies by
FP32_MAX = float(torch.finfo(torch.float32).max)
BITS_464 = 0x43E80000  # float32 bits of 464.0: magnitudes above it cast to NaN under torch 2.11
BITS_448 = 0x43E00000

POW2_CODES = {"none": 0, "float_ceil": 1, "bits_ceil": 2, "nemo_e8m0": 3}


@dataclass(frozen=True)
class KernelSpec:
    pad_edge: bool  # NeMo: pad with x[-1, -1] instead of zero
    nan_to_num: bool  # NeMo later revision: NaN -> 0, +-inf -> +-448 before amax and quantize
    has_floor: bool
    floor: float  # float32 value of amax_floor
    scale_form: int  # 0: descale sf = a/448, q = x * (1/sf); 1: s = (1/a)*448 in fp32; 2: same in fp64
    pow2: int  # POW2_CODES
    zero_one: bool  # scale form: s = 1 where amax == 0
    inf_one: bool  # scale form: s = 1 where amax == inf
    inf_fmax: bool  # scale form: s = FLT_MAX where s == inf (TransformerEngine)
    quant_div: bool  # descale form, vLLM activation kernels: q = x / sf instead of x * (1/sf)
    clamp: bool
    div_recip: bool  # device fact, see module doc
    cast_nan: bool  # device fact, see module doc

    def constexprs(self) -> dict:
        return {k.upper(): v for k, v in asdict(self).items()}


class UnsupportedRecipe(BadInputError):
    pass


def kernel_spec(recipe, div_recip: bool, cast_nan: bool) -> KernelSpec:
    """Map a recipe to kernel switches, or raise UnsupportedRecipe naming the choice that has none."""
    r: Recipe = get_recipe(recipe)

    def no(why: str):
        raise UnsupportedRecipe(f"recipe {r.name!r} is not fused: {why}")

    if r.block != (128, 128):
        no(f"block {r.block} (kernels are 128x128)")
    if r.padding not in ("zero", "edge"):
        no(f"padding {r.padding!r}")
    if r.nan_policy not in ("propagate", "zero"):
        no(f"nan_policy {r.nan_policy!r} (host-side check, use the reference)")
    if r.scale_min is not None:
        no("scale_min")
    if r.scale_form == "scale_div":
        no("scale_form 'scale_div' (one rounded MAX/amax division; use the reference)")
    if r.scale_form == "descale_rcp":
        no("scale_form 'descale_rcp' (amax times a rounded 1/448; use the reference)")
    if r.inf_scale == "fmax_input":
        no("inf_scale 'fmax_input' (input-dtype max; use the reference)")
    for field, fused in (("scale_compute_dtype", "float32"), ("quantize_dtype", "float32"),
                         ("add_zero_point", False), ("scale_dtype", "float32"), ("e8m0_byte0_to_1", False)):
        if getattr(r, field) != fused:
            no(f"{field} {getattr(r, field)!r} (the kernel computes in float32 and stores float32 "
               f"scales; use the reference)")
    if r.scale_form == "descale":
        if r.pow2 not in ("none", "float_ceil", "bits_ceil"):
            no(f"pow2 {r.pow2!r} with a descale")
        if r.quantize_op not in ("mul_reciprocal", "div"):
            no(f"quantize_op {r.quantize_op!r} with a descale")
        form = 0
    else:
        if r.quantize_op != "mul_scale":
            no(f"quantize_op {r.quantize_op!r} with a scale form")
        if r.pow2 not in ("none", "nemo_e8m0"):
            no(f"pow2 {r.pow2!r} with a scale form")
        if r.pow2 == "nemo_e8m0" and r.scale_form != "scale":
            no("nemo_e8m0 with float64 scales")
        form = 1 if r.scale_form == "scale" else 2
    # upcast_input changes nothing numerically: bf16/fp16 -> fp32 is exact and every op after
    # it is already in fp32 (torch promotes bf16 * fp32-tensor to fp32); crop_as_view is layout,
    # handled by the wrapper.
    return KernelSpec(
        pad_edge=r.padding == "edge",
        nan_to_num=r.nan_policy == "zero",
        has_floor=r.amax_floor is not None,
        floor=f32(r.amax_floor) if r.amax_floor is not None else 0.0,
        scale_form=form,
        pow2=POW2_CODES[r.pow2],
        zero_one=r.zero_amax_scale_one and r.pow2 == "none" and form != 0,
        inf_one=r.inf_scale == "one" and r.pow2 == "none" and form != 0,
        inf_fmax=r.inf_scale == "fmax" and r.pow2 == "none" and form != 0,
        quant_div=r.quantize_op == "div",
        clamp=r.clamp,
        div_recip=div_recip,
        cast_nan=cast_nan,
    )


def _is_supported(r: Recipe) -> bool:
    try:
        kernel_spec(r, False, False)
        return True
    except UnsupportedRecipe:
        return False


SUPPORTED_RECIPES = [name for name, r in PRESETS.items() if _is_supported(r)]


_SEMANTICS_CACHE: dict = {}


def clear_semantics_cache() -> None:
    """Forget measured device semantics (a self-test mutant patches what they are built from)."""
    _SEMANTICS_CACHE.clear()


def device_semantics(device) -> dict:
    """{'div_recip': bool, 'cast_nan': bool} measured on `device` with the running torch."""
    dev = torch.device(device)
    key = (dev.type, dev.index)
    if key not in _SEMANTICS_CACHE:
        # values where a/448 and a*(1/448) round differently in fp32 (about half of all inputs do);
        # tensor / tensor divides on every device, so it is the exact side
        a = torch.arange(1, 4097, dtype=torch.float32) * 1.0009765625
        exact = a / torch.full_like(a, E4M3_MAX)
        got = (a.to(dev) / 448.0).cpu()
        recip = a * torch.tensor(RECIP_E4M3_MAX, dtype=torch.float32)
        differs = exact.view(torch.int32) != recip.view(torch.int32)
        if not bool(differs.any()):  # pragma: no cover - the search always finds some
            raise RuntimeError("no probe value separates division from reciprocal multiply")
        div_recip = bool(torch.equal(got[differs].view(torch.int32), recip[differs].view(torch.int32)))
        probe = torch.tensor([500.0, float("inf")], dtype=torch.float32, device=dev)
        codes = probe.to(torch.float8_e4m3fn).view(torch.uint8).cpu().tolist()
        _SEMANTICS_CACHE[key] = {"div_recip": div_recip, "cast_nan": codes[0] == 0x7F}
    return dict(_SEMANTICS_CACHE[key])
