"""Mutants of the reference quantizer and the comparison primitives (FACTS.md §3 bug classes)."""

from __future__ import annotations

import functools

import torch

from refit_verify.selftest.mutant import Mutant

# killer files
HAND = "suites/pr/test_fp8_golden_hand.py"
GOLDEN = "suites/pr/test_fp8_golden_vllm.py"
CROSS = "suites/pr/test_fp8_cross_recipe.py"
TE = "suites/pr/test_te_reference.py"
PROPS = "suites/pr/test_fp8_properties.py"
BAD = "suites/pr/test_fp8_bad_input.py"
CHECK = "suites/pr/test_check_quantizer.py"
CMP = "suites/pr/test_compare.py"

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
    def mutated(amax, r, *rest, **kw):
        factor, scale_inv = original(amax, r, *rest, **kw)
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


def _nameless_errors(original):
    # the typed error keeps its type but drops the tensor name: a user with 400 weights can't tell which
    return lambda w, name=None: original(w, None)


MUTANTS = [
    Mutant("bad_input_error_drops_tensor_name", "bad input raises the typed error without the tensor's name",
           {f"{Q}:validate_input": _nameless_errors},
           killers=(BAD + "::test_bad_input_is_a_typed_error_naming_the_tensor",)),
    Mutant("edge_value_padding", "vLLM recipe padded with x[-1,-1] like NeMo-RL (FACTS.md §3 padding)",
           _recipe("VLLM_PER_BLOCK", padding="edge"),
           killers=(HAND + "::test_codes_and_scales_match_hand_derivation", GOLDEN + "::test_matches_real_vllm",)),
    Mutant("no_amax_floor", "amax floor dropped: 0/0 on zero blocks gives NaN scales (FACTS.md §3)",
           _recipe("VLLM_PER_BLOCK", amax_floor=None),
           killers=(HAND + "::test_codes_and_scales_match_hand_derivation", GOLDEN + "::test_matches_real_vllm",)),
    Mutant("max_over_amax_overflow", "scale as 448/a without the zero/inf fix-ups: tiny blocks overflow s "
           "to inf, stored scale 0, zeros become NaN (FACTS.md §3 tiny blocks)",
           _recipe("NEMO_RL", zero_amax_scale_one=False, inf_scale="propagate", clamp=False),
           killers=(HAND + "::test_codes_and_scales_match_hand_derivation",)),
    Mutant("nan_silently_zeroed", "nan_to_num before amax hides NaN weights (NeMo-RL later revision)",
           _recipe("VLLM_PER_BLOCK", nan_policy="zero"),
           killers=(GOLDEN + "::test_matches_real_vllm",)),
    Mutant("inf_clamped", "Inf clamped to +-448 before quantizing instead of poisoning its block",
           _pre_blocks(_clamp_inf),
           killers=(GOLDEN + "::test_matches_real_vllm", TE + "::test_te_presets_match_te_reference_semantics",)),
    Mutant("te_two_rounding_scale", "TE scale as 448/amax (reciprocal then multiply) instead of torch.div",
           _recipe("TRANSFORMER_ENGINE", scale_form="scale"),
           killers=(TE + "::test_te_presets_match_te_reference_semantics",)),
    Mutant("te_fp32_max_for_inf_scale", "TE inf scale replaced by FLT_MAX, not the input dtype's max",
           _recipe("TRANSFORMER_ENGINE", inf_scale="fmax"),
           killers=(TE + "::test_te_presets_match_te_reference_semantics",)),
    Mutant("scale_stored_as_s", "stores the multiplier s instead of scale_inv = 1/s",
           {f"{Q}:scales_for_amax": _scales_stored_as_multiplier},
           killers=(HAND + "::test_known_literal_bytes", GOLDEN + "::test_matches_real_vllm",)),
    Mutant("div_instead_of_mul_reciprocal", "x / sf instead of x * (1/sf): operation order flips codes",
           _recipe("VLLM_PER_BLOCK", quantize_op="div"),
           killers=(GOLDEN + "::test_matches_real_vllm",)),
    Mutant("pow2_one_side", "NeMo pow2 option silently off while vLLM uses UE8M0",
           _recipe("NEMO_RL_POW2", pow2="none"),
           killers=(CROSS + "::test_pow2_nemo_and_vllm_are_bit_identical",)),
    Mutant("ue8m0_float_for_bits", "DeepGEMM's bit-based UE8M0 replaced by float 2**ceil(log2)",
           {"refit_verify.fp8.format:ue8m0_ceil_bits": _ue8m0_float_for_bits},
           killers=(CROSS + "::test_no_preset_aliases_another", PROPS + "::test_ue8m0_float_and_bit_rounding",)),
    Mutant("scale_transposed", "scale grid written transposed (row-major vs column-major confusion)",
           _wrap_blocks(_transposed_scales),
           killers=(GOLDEN + "::test_matches_real_vllm", CROSS + "::test_nemo_vs_vllm_one_ulp_scales_and_rare_code_flips",)),
    Mutant("floor_div_scale_grid", "ceil-div replaced by floor-div: partial blocks lose their scale",
           _wrap_blocks(_floor_div_scales),
           killers=(CROSS + "::test_edge_padding_changes_last_block_row_and_column_scales", TE + "::test_te_presets_match_te_reference_semantics",)),
    Mutant("block_shape_swapped", "(block_m, block_n) swapped: visible only for non-square blocks",
           _pre_blocks(_swap_block),
           killers=(CROSS + "::test_no_preset_aliases_another", BAD + "::test_native_activation_path_zero_pads_a_partial_group",)),
    Mutant("fp8_compared_as_floats", "comparison on float values: NaN != NaN, -0 == +0",
           {"refit_verify.fp8.format:codes": _codes_as_floats}, area="compare",
           killers=(HAND + "::test_known_literal_bytes", CHECK + "::test_correct_quantizer_passes_every_case",)),
    Mutant("first_mismatch_wrong_block", "first-mismatch locator uses the wrong block geometry",
           {"refit_verify.compare.bitwise:_first_mismatch": _first_mismatch_wrong_block}, area="compare",
           killers=(CMP + "::test_first_code_mismatch_names_tensor_block_element_codes_and_scales",)),
]
