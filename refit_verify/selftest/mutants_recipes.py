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


def _te_byte_no_subnormal_rule(original):
    import torch

    def mutated(v):
        byte = original(v)
        tiny = (v > 0) & (v <= 2.0**-127)
        return torch.where(tiny, torch.ones_like(byte), byte)
    return mutated


def _normalize_without_e8m0(original):
    import torch

    def mutated(out):  # the bytes become plain numbers (byte 127 -> 127.0, not 1.0)
        data, scale = out
        return original((data, scale.float() if scale.dtype == torch.uint8 else scale))
    return mutated


def _codes_only_difference(original):
    def mutated(x, preset, baseline="vllm_per_block"):
        text = original(x, preset, baseline)
        return "" if text.startswith("scale bits") else text  # a scale-only difference goes unseen
    return mutated


MX = "suites/pr/test_mxfp8_te_nemo.py"

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
    Mutant("te_mxfp8_nan_poisons_group", "TE's MXFP8 amax taken with torch.amax (NaN wins): the whole group "
           "NaN and byte 0xFF, where TE's std::max/fmaxf skips the NaN",
           _recipe("MXFP8_TE", nan_policy="propagate"), area="recipes",
           killers=(f"{MX}::test_groups_match_hand_derivation", f"{MX}::test_check_passes_against_an_independent_"
                    "adapter_on_the_mx_case_set")),
    Mutant("te_mxfp8_float_log2", "TE's E8M0 byte from a float32 ceil(log2(.)) as vLLM's torch path does: "
           "one ulp above a power of two rounds down",
           _recipe("MXFP8_TE", pow2="mx_e8m0"), area="recipes",
           killers=(f"{MX}::test_groups_match_hand_derivation", f"{MX}::test_te_differs_from_vllm_on_one_input")),
    Mutant("te_e8m0_subnormal_rounds_up", "TE's float_to_e8m0 without its subnormal rule: a value <= 2**-127 "
           "rounds up to byte 1 (2**-126)", {"refit_verify.fp8.format:te_e8m0_byte": _te_byte_no_subnormal_rule},
           area="recipes", killers=(f"{MX}::test_groups_match_hand_derivation",)),
    Mutant("nemo_rl_mxfp8_byte0_kept", "NeMo-RL's MXFP8 refit taken as plain vLLM: its byte 0 -> 1 rewrite missed",
           _recipe("MXFP8_NEMO_RL", e8m0_byte0_to_1=False), area="recipes",
           killers=(f"{MX}::test_groups_match_hand_derivation",
                    f"{MX}::test_nemo_rl_codes_equal_vllm_everywhere_and_scales_only_where_vllm_stores_byte_0",
                    f"{MX}::test_nemo_rl_doubles_a_tiny_nonzero_group_on_dequantize",
                    "suites/conformance/test_mxfp8_conformance.py::"
                    "test_mxfp8_nemo_rl_is_vllms_bytes_with_byte_0_stored_as_1")),
    Mutant("fit_misses_te_e8m0", "a new pow2 choice left out of fit's search space: fit can never name it",
           {"refit_verify.fit:SEARCH_SPACE": lambda o: {**o, "pow2": tuple(v for v in o["pow2"] if v != "te_e8m0")}},
           area="recipes", killers=(f"{MX}::test_fit_searches_every_choice_of_every_field",)),
    Mutant("mx_scale_bytes_not_decoded", "an MXFP8 quantizer's uint8 E8M0 scale bytes not read as the powers of "
           "two they encode (taken as plain numbers or refused)",
           {"refit_verify.check:as_pair": lambda original: lambda out, name, e8m0=False: original(out, name),
            "refit_verify.fit:_normalize": _normalize_without_e8m0}, area="recipes",
           killers=(f"{MX}::test_check_and_fit_read_uint8_scales_as_e8m0_bytes",)),
    Mutant("witness_ignores_scale_bits", "the presets table's difference looks at code bytes only: presets that "
           "differ in scale_inv alone (an all-zero block's scale 1.0) would be listed as equal",
           {"refit_verify.fp8.witness:difference": _codes_only_difference}, area="recipes",
           killers=("suites/pr/test_presets_table.py::test_each_witness_differs_from_vllm_per_block",)),
    Mutant("presets_table_stale", "a preset changed (here DeepGEMM's source) without regenerating "
           "docs/PRESETS_TABLE.md", _recipe("DEEPGEMM", source="deepseek-ai/DeepGEMM elsewhere"), area="recipes",
           killers=("suites/pr/test_presets_table.py::test_the_committed_table_is_the_generated_one",)),
    Mutant("recipe_file_ignores_unknown_fields", "a typo'd field in a recipe file silently dropped",
           {"refit_verify.fp8.recipe_io:recipe_from_mapping": _ignore_unknown_fields}, area="recipes",
           killers=("suites/pr/test_recipe_io.py::test_bad_recipe_files_name_the_field",)),
]
