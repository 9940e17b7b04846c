"""A quantizer recipe is data: every choice a real implementation makes, named.

Two implementations then differ exactly where their Recipe objects differ (``recipe_diff``).
The fields are applied in this order by ``quantize``:

  upcast -> nan policy -> pad -> tile -> (nan_to_num) -> amax -> amax_floor
  -> scale (scale_form in scale_compute_dtype, with zero/inf fix-ups) -> scale_min -> pow2
  -> elementwise quantize (quantize_op, rounded to quantize_dtype) -> (+ zero point) -> clamp -> cast
  -> untile -> crop (contiguous or view); scale_inv stored in scale_dtype (then e8m0_byte0_to_1)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, Optional

Padding = Literal["zero", "edge", "none"]
# descale: sf = amax / MAX is computed and stored; scale: s = MAX / amax is computed, 1/s stored.
# scale_div: s = torch.div(MAX, amax), one correctly rounded division (TransformerEngine), where
# "scale" is the `MAX / amax` spelling torch evaluates as reciprocal(amax) * MAX (two roundings).
# descale_rcp: sf = amax * float32(1/MAX), a multiply by the rounded reciprocal (TransformerEngine's MXFP8
# reference: `amax * Quantized_Limits::max_reciprocal()`).
ScaleForm = Literal["descale", "scale", "scale_f64", "scale_div", "descale_rcp"]
# float_ceil: torch.pow(2.0, ceil(log2 s)) (vLLM weights); float_ceil_exp2: torch.exp2(ceil(log2 s)) (vLLM's
# native activation path). Equal on every finite scale; they differ in the sign bit of a NaN scale.
# mx_e8m0: MXFP8's E8M0 rule as vLLM's torch path writes it: exp2(clamp(ceil(log2(amax/448)), -127, 127)),
# the biased exponent clamp(.., 0, 254) being the stored uint8 byte.
# te_e8m0: TransformerEngine's float_to_e8m0 on the float32 bits: exact ceil to a power of two, 0 and values
# <= 2**-127 -> byte 0, +inf -> 254 (satfinite), NaN -> 255; no float log2, so no rounding down.
Pow2 = Literal["none", "float_ceil", "float_ceil_exp2", "bits_ceil", "nemo_e8m0", "te_frexp", "mx_e8m0", "te_e8m0"]
QuantizeOp = Literal["mul_reciprocal", "div", "mul_scale"]
# ignore_in_amax: a NaN element does not enter its block's amax (fmaxf / std::max semantics, TransformerEngine);
# it still becomes a NaN code, its neighbours are quantized with the scale of the finite values.
NanPolicy = Literal["propagate", "zero", "raise", "ignore_in_amax"]
# fmax: FLT_MAX where s == inf; fmax_input: finfo(input dtype).max there (TransformerEngine's x_dtype).
InfScale = Literal["propagate", "one", "fmax", "fmax_input"]
# "input": evaluated in the input's dtype (a bf16 weight gives a bf16-rounded result), as torch does
# when the implementation never upcasts (torchao Float8Tensor, compressed-tensors).
ComputeDtype = Literal["float32", "input"]
ScaleDtype = Literal["float32", "bfloat16"]


@dataclass(frozen=True)
class Recipe:
    name: str
    block: tuple[int, int] = (128, 128)
    # Upcast the whole input to float32 before anything else (NeMo-RL's caller does `.to(float)`).
    upcast_input: bool = False
    padding: Padding = "zero"
    amax_floor: Optional[float] = None
    scale_form: ScaleForm = "descale"
    # In scale form: s = 1 where amax == 0 (else s = MAX/0 = inf and scale_inv 0).
    zero_amax_scale_one: bool = False
    # In scale form, what happens where s or amax is inf.
    inf_scale: InfScale = "propagate"
    pow2: Pow2 = "none"
    # Lower bound on the descale, applied before pow2 (vLLM native activation path; descale form).
    scale_min: Optional[float] = None
    quantize_op: QuantizeOp = "mul_reciprocal"
    clamp: bool = False
    nan_policy: NanPolicy = "propagate"
    # True: return the cropped slice of the padded result, as the implementation does
    # (non-contiguous when the last dim was padded).
    crop_as_view: bool = False
    # Descale form only: amax / MAX evaluated in the input dtype, then widened to float32.
    scale_compute_dtype: ComputeDtype = "float32"
    # x * factor (or x / sf) rounded to the input dtype before the fp8 cast (a second rounding).
    quantize_dtype: ComputeDtype = "float32"
    # compressed-tensors adds its symmetric zero point (0) to the scaled value: -0.0 becomes +0.0.
    add_zero_point: bool = False
    # The dtype scale_inv is sent in (AReaL sends bfloat16): values are rounded to it; the container
    # the harness returns stays float32, as the engine's float32 parameter holds them.
    scale_dtype: ScaleDtype = "float32"
    # A stored scale of 2**-127 (E8M0 byte 0) is stored as 2**-126 (byte 1) AFTER the codes were computed
    # with 2**-127 (NeMo-RL's MXFP8 refit: the TRTLLM kernel refuses byte 0). Zero groups keep their
    # value; a tiny non-zero group dequantizes to twice its value.
    e8m0_byte0_to_1: bool = False
    source: str = ""

    def __post_init__(self):
        bm, bn = self.block
        if not (isinstance(bm, int) and isinstance(bn, int)) or bm <= 0 or bn <= 0:
            from refit_verify.errors import BadInputError

            raise BadInputError(f"block sizes must be positive integers, got {self.block}")
        if self.scale_compute_dtype == "input" and self.scale_form != "descale":
            from refit_verify.errors import BadInputError

            raise BadInputError(f"recipe {self.name!r}: scale_compute_dtype 'input' is defined for the "
                                f"descale form only, not scale_form {self.scale_form!r}")

    def replace(self, **changes) -> "Recipe":
        return dataclasses.replace(self, **changes)

    def fields(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def recipe_diff(a: Recipe, b: Recipe) -> dict:
    """{field: (a_value, b_value)} for every choice where two recipes differ (name/source excluded)."""
    skip = {"name", "source"}
    fa, fb = a.fields(), b.fields()
    return {k: (fa[k], fb[k]) for k in fa if k not in skip and fa[k] != fb[k]}
