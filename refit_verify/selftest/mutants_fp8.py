"""Mutants of the reference quantizer and the comparison primitives (FACTS.md §3 bug classes)."""

from __future__ import annotations

import functools

import torch

from refit_verify.selftest.mutant import Mutant

P = "refit_verify.fp8.presets"
Q = "refit_verify.fp8.quantize"


def _recipe(attr: str, **changes):
    """Patch a preset object (and every binding of it, PRESETS included)."""
    return {f"{P}:{attr}": lambda original: original.replace(**changes)}


def _wrap_blocks(post):
    """Patch _quantize_blocks: run the original, then distort its (data, scale_inv)."""
    def factory(original):
        @functools.wraps(original)
        def mutated(x, r):
            return post(x, r, *original(x, r))
        return mutated
    return {f"{Q}:_quantize_blocks": factory}


def _pre_blocks(pre):
    def factory(original):
        @functools.wraps(original)
        def mutated(x, r):
            return original(*pre(x, r))
        return mutated
    return {f"{Q}:_quantize_blocks": factory}


def _scales_stored_as_multiplier(original):
    def mutated(amax, r, *rest):
        factor, scale_inv = original(amax, r, *rest)
        return factor, torch.reciprocal(scale_inv)
    return mutated


def _floor_div_scales(x, r, data, scale_inv):
    m, n = x.shape
    return data, scale_inv[: max(m // r.block[0], 1), : max(n // r.block[1], 1)]


def _transposed_scales(x, r, data, scale_inv):
    return data, scale_inv.t().contiguous().reshape(scale_inv.shape)


def _swap_block(x, r):
    return x, r.replace(block=(r.block[1], r.block[0]))


def _clamp_inf(x, r):
    return torch.where(torch.isinf(x), torch.sign(x) * 448.0, x).to(x.dtype), r


def _codes_as_floats(original):
    def mutated(t):
        return t.float() if t.dtype == torch.float8_e4m3fn else original(t)
    return mutated


def _ue8m0_float_for_bits(original):
    from refit_verify.fp8.format import ue8m0_ceil_float
    return ue8m0_ceil_float


def _first_mismatch_wrong_block(original):
    def mutated(name, ca, cb, sa, sb, code_diff, scale_diff, block):
        mm = original(name, ca, cb, sa, sb, code_diff, scale_diff, (block[1], block[0] * 2))
        return mm
    return mutated


MUTANTS = [
    Mutant("edge_value_padding", "vLLM recipe padded with x[-1,-1] like NeMo-RL (FACTS.md §3 padding)",
           _recipe("VLLM_PER_BLOCK", padding="edge")),
    Mutant("no_amax_floor", "amax floor dropped: 0/0 on zero blocks gives NaN scales (FACTS.md §3)",
           _recipe("VLLM_PER_BLOCK", amax_floor=None)),
    Mutant("max_over_amax_overflow", "scale as 448/a without the zero/inf fix-ups: tiny blocks overflow s "
           "to inf, stored scale 0, zeros become NaN (FACTS.md §3 tiny blocks)",
           _recipe("NEMO_RL", zero_amax_scale_one=False, inf_scale="propagate", clamp=False)),
    Mutant("nan_silently_zeroed", "nan_to_num before amax hides NaN weights (NeMo-RL later revision)",
           _recipe("VLLM_PER_BLOCK", nan_policy="zero")),
    Mutant("inf_clamped", "Inf clamped to +-448 before quantizing instead of poisoning its block",
           _pre_blocks(_clamp_inf)),
    Mutant("te_two_rounding_scale", "TE scale as 448/amax (reciprocal then multiply) instead of torch.div",
           _recipe("TRANSFORMER_ENGINE", scale_form="scale"),
           killers=("suites/pr/test_te_reference.py::test_te_presets_match_te_reference_semantics",)),
    Mutant("te_fp32_max_for_inf_scale", "TE inf scale replaced by FLT_MAX, not the input dtype's max",
           _recipe("TRANSFORMER_ENGINE", inf_scale="fmax"),
           killers=("suites/pr/test_te_reference.py::test_te_presets_match_te_reference_semantics",)),
    Mutant("scale_stored_as_s", "stores the multiplier s instead of scale_inv = 1/s",
           {f"{Q}:_scales": _scales_stored_as_multiplier}),
    Mutant("div_instead_of_mul_reciprocal", "x / sf instead of x * (1/sf): operation order flips codes",
           _recipe("VLLM_PER_BLOCK", quantize_op="div")),
    Mutant("pow2_one_side", "NeMo pow2 option silently off while vLLM uses UE8M0",
           _recipe("NEMO_RL_POW2", pow2="none")),
    Mutant("ue8m0_float_for_bits", "DeepGEMM's bit-based UE8M0 replaced by float 2**ceil(log2)",
           {"refit_verify.fp8.format:ue8m0_ceil_bits": _ue8m0_float_for_bits}),
    Mutant("scale_transposed", "scale grid written transposed (row-major vs column-major confusion)",
           _wrap_blocks(_transposed_scales)),
    Mutant("floor_div_scale_grid", "ceil-div replaced by floor-div: partial blocks lose their scale",
           _wrap_blocks(_floor_div_scales)),
    Mutant("block_shape_swapped", "(block_m, block_n) swapped: visible only for non-square blocks",
           _pre_blocks(_swap_block)),
    Mutant("fp8_compared_as_floats", "comparison on float values: NaN != NaN, -0 == +0",
           {"refit_verify.fp8.format:codes": _codes_as_floats}, area="compare"),
    Mutant("first_mismatch_wrong_block", "first-mismatch locator uses the wrong block geometry",
           {"refit_verify.compare.bitwise:_first_mismatch": _first_mismatch_wrong_block}, area="compare"),
]
