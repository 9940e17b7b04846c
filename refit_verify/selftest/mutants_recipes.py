"""Mutants of the RL-framework presets and of recipes users write (docs/RECIPES.md)."""

from __future__ import annotations

from refit_verify.selftest.mutant import Mutant

P = "refit_verify.fp8.presets"
SRC = "suites/pr/test_recipes_sources.py"


def _recipe(attr: str, **changes):
    return {f"{P}:{attr}": lambda original: original.replace(**changes)}


def _ignore_unknown_fields(original):
    from refit_verify.fp8.recipe_io import FIELDS

    def mutated(data, where):
        return original({k: v for k, v in data.items() if k in FIELDS}, where)
    return mutated


MUTANTS = [
    Mutant("areal_scales_sent_float32", "AReaL's bf16 scale_inv taken as float32 (its scale_dtype default missed)",
           _recipe("AREAL", scale_dtype="float32"), area="recipes",
           killers=(f"{SRC}::test_literal_bytes_written_out", f"{SRC}::test_areal_sends_slime_codes_with_bf16_scales")),
    Mutant("compressed_tensors_keeps_negative_zero", "compressed-tensors' `+ zero_point` dropped: -0.0 stays 0x80",
           _recipe("COMPRESSED_TENSORS", add_zero_point=False), area="recipes",
           killers=(f"{SRC}::test_literal_bytes_written_out",)),
    Mutant("torchao_scale_in_float32", "torchao Float8Tensor scale computed in float32, not the weight's bf16",
           _recipe("TORCHAO_FLOAT8TENSOR", scale_compute_dtype="float32"), area="recipes",
           killers=(f"{SRC}::test_each_preset_differs_from_vllm_per_block_where_the_table_says",
                    f"{SRC}::test_check_passes_against_an_independent_adapter_of_the_real_code")),
    Mutant("verl_torch_two_roundings", "verl's torch.div(448, amax) spelled 448 / amax (reciprocal, multiply)",
           _recipe("VERL_TORCH", scale_form="scale"), area="recipes",
           killers=(f"{SRC}::test_verl_torch_rounds_once_where_verl_v07_rounds_twice",)),
    Mutant("slime_convert_with_vllm_floor", "slime's convert script given vLLM's 1e-4 amax floor (it has none)",
           _recipe("SLIME_CONVERT", amax_floor=1e-4), area="recipes",
           killers=(f"{SRC}::test_literal_bytes_written_out",
                    f"{SRC}::test_check_passes_against_an_independent_adapter_of_the_real_code")),
    Mutant("mx_exponent_unclamped", "MXFP8 shared exponent not clamped to >= -127: tiny groups get 2**-134",
           _recipe("MXFP8_VLLM", pow2="float_ceil"), area="recipes",
           killers=("suites/pr/test_mxfp8.py::test_mx_groups_match_hand_derivation",
                    "suites/pr/test_mxfp8.py::test_check_passes_against_vllms_mxfp8_torch_path_on_the_mx_case_set")),
    Mutant("recipe_file_ignores_unknown_fields", "a typo'd field in a recipe file silently dropped",
           {"refit_verify.fp8.recipe_io:recipe_from_mapping": _ignore_unknown_fields}, area="recipes",
           killers=("suites/pr/test_recipe_io.py::test_bad_recipe_files_name_the_field",)),
]
