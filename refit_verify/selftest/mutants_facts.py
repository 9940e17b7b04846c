"""Mutants of the fact tables: the parametrized checks that pin each preset's behaviour, each recipe
field's round trip and the hand-derived bytes. Each models one real bug that would make a whole table
row (or column) wrong."""

from __future__ import annotations

from refit_verify.selftest.mutant import Mutant

CROSS = "suites/pr/test_fp8_cross_recipe.py"
SRC = "suites/pr/test_recipes_sources.py"
HAND = "suites/pr/test_fp8_golden_hand.py"
BAD = "suites/pr/test_fp8_bad_input.py"
IO = "suites/pr/test_recipe_io.py"


def _diff_against_itself(original):
    # the bug: both sides read from the first recipe (fa vs fa), so no two presets ever differ
    return lambda a, b: original(a, a)


def _empty_shortcut_flattens(original):
    def quantize(w, recipe="vllm_per_block", name=None):
        import torch

        if isinstance(w, torch.Tensor) and w.dim() == 2 and w.numel() == 0:
            from refit_verify.fp8.presets import get_recipe
            from refit_verify.fp8.quantize import QuantizedTensor

            empty = torch.empty(0, dtype=torch.float8_e4m3fn)
            return QuantizedTensor(data=empty, scale_inv=torch.empty(0), recipe=get_recipe(recipe))
        return original(w, recipe, name)
    return quantize


def _toml_without_source(original):
    def recipe_to_toml(r):
        return "".join(line + "\n" for line in original(r).splitlines() if not line.startswith("source = "))
    return recipe_to_toml


MUTANTS = [
    Mutant("recipe_diff_blind", "recipe_diff reads both sides from the first recipe: every pair of presets "
           "reports no difference, so two presets that alias each other go unnoticed",
           {"refit_verify.fp8.recipe:recipe_diff": _diff_against_itself}, area="recipes",
           killers=(f"{CROSS}::test_no_preset_aliases_another",)),
    Mutant("empty_weight_loses_shape", "a shortcut for empty weights returns a flat (0,) tensor: a (0, 128) "
           "weight comes back without its shape (the real implementations keep it)",
           {"refit_verify.fp8.quantize:quantize": _empty_shortcut_flattens}, area="fp8",
           killers=(f"{BAD}::test_empty_tensors_reproduce_the_implementation",)),
    Mutant("recipe_file_drops_source", "`presets --show` / recipe_to_toml leaves out the optional `source` "
           "line: a preset written to a file and read back is no longer the same recipe",
           {"refit_verify.fp8.recipe_io:recipe_to_toml": _toml_without_source}, area="recipes",
           killers=(f"{IO}::test_every_preset_round_trips_through_toml", f"{IO}::test_toml_names_every_field")),
]

MUTANTS.append(
    Mutant("e4m3_max_fnuz", "the E4M3 maximum taken from float8_e4m3fnuz (240, ROCm) instead of float8_e4m3fn "
           "(448): every block's scale is 448/240 too large and its codes shift",
           {"refit_verify.fp8.format:E4M3_MAX": lambda original: 240.0}, area="fp8",
           killers=(f"{SRC}::test_codes_and_scales_match_hand_derivation",
                    f"{HAND}::test_codes_and_scales_match_hand_derivation",
                    "suites/pr/test_loader_golden.py::test_shards_are_vllm_per_block_of_x")))

P = "refit_verify.fp8.presets"
Q = "refit_verify.fp8.quantize"


def _amax_without_nan(original):
    def amax(tiles, r):
        import torch

        return original(torch.nan_to_num(tiles, nan=0.0) if tiles.is_floating_point() else tiles, r)
    return amax


def _scales_ignoring(**changes):
    def factory(original):
        def scales_for_amax(amax, r, in_dtype=None, descale=None):
            import torch

            return original(amax, r.replace(**changes), torch.float32 if in_dtype is None else in_dtype, descale)
        return scales_for_amax
    return factory


MUTANTS += [
    Mutant("presets_resolve_to_default", "preset names looked up in a stale table that falls back to the "
           "default: every named preset quantizes as vllm_per_block",
           {f"{P}:_named": lambda original: (lambda name: original("vllm_per_block") if isinstance(name, str)
                                             and name not in ("vllm_per_block", "no_such_recipe") else original(name))},
           area="recipes",
           killers=(f"{SRC}::test_each_preset_differs_from_vllm_per_block_where_the_table_says",
                    f"{SRC}::test_check_passes_against_an_independent_adapter_of_the_real_code")),
    Mutant("amax_drops_nan", "block amax reduced with a NaN-dropping max (CUDA fmaxf returns the other operand): "
           "a NaN weight no longer poisons its block's scale",
           {f"{Q}:_amax": _amax_without_nan}, area="fp8",
           killers=(f"{SRC}::test_codes_and_scales_match_hand_derivation",
                    f"{HAND}::test_codes_and_scales_match_hand_derivation")),
    Mutant("zero_amax_fixup_dropped", "the `scale = 1 where amax == 0` fix-up (NeMo-RL, verl, TE) forgotten: "
           "an all-zero block gets scale 448/0 = inf and stores scale_inv 0",
           {f"{Q}:scales_for_amax": _scales_ignoring(zero_amax_scale_one=False)}, area="fp8",
           killers=(f"{SRC}::test_codes_and_scales_match_hand_derivation",
                    f"{HAND}::test_codes_and_scales_match_hand_derivation")),
    Mutant("scale_min_dropped", "the lower bound on the descale (compressed-tensors' eps, vLLM's native activation "
           "path) skipped: tiny and zero blocks store a smaller scale than the implementation",
           {f"{Q}:scales_for_amax": _scales_ignoring(scale_min=None)}, area="fp8",
           killers=(f"{SRC}::test_codes_and_scales_match_hand_derivation",)),
]

GOLDEN_LOADER = "suites/pr/test_loader_golden.py"
LOADER = "refit_verify.refit.loader"


def _offsets_reversed(original):
    def offsets(self):
        out, acc = [0] * len(self.spec.shards), 0
        for i in reversed(range(len(self.spec.shards))):  # the bug: shards stacked last-first
            out[i] = acc
            acc += self.spec.shards[i].rows
        return out
    return property(offsets)


def _first_scale_column_only(original):
    def write_scale(dst, src):
        dst[:, :1].copy_(src[:, :1].to(dst.dtype))
    return write_scale


MUTANTS += [
    Mutant("fused_shards_reversed", "a fused linear's shards stacked last-first (v, k, q / up, gate): every "
           "shard's codes and scale rows land in another shard's rows",
           {f"{LOADER}:EngineLinear.offsets": _offsets_reversed}, area="loader",
           killers=(f"{GOLDEN_LOADER}::test_vllm_placement_reproduces_real_loader",
                    f"{GOLDEN_LOADER}::test_exact_placement_loads_every_split_with_own_scales",
                    f"{GOLDEN_LOADER}::test_silent_misscale_rows_carry_the_k_scale")),
    Mutant("scale_first_column_only", "a shard's weight_scale_inv copied for its first K block only: the other "
           "K blocks keep the placeholder fill",
           {"refit_verify.refit.placement:write_scale": _first_scale_column_only}, area="loader",
           killers=(f"{GOLDEN_LOADER}::test_vllm_placement_reproduces_real_loader",
                    f"{GOLDEN_LOADER}::test_exact_placement_loads_every_split_with_own_scales")),
    Mutant("shape_exemption_inverted", "allow_fp8_block_shape_mismatch set with its sense inverted: merged "
           "layers with an odd partition validated, every other layer exempted",
           {f"{LOADER}:vllm_shape_exempt": lambda original: (lambda spec, block_n: not original(spec, block_n))},
           area="loader", killers=(f"{GOLDEN_LOADER}::test_shape_exemption_matches_vllm",)),
]


def _requant_rows_need_128(original):
    def deepgemm_requant_applies(ue8m0, n, k, output_dtype=None):
        import torch

        dtype = torch.bfloat16 if output_dtype is None else output_dtype
        return original(ue8m0, n, k, dtype) and n % 128 == 0  # the bug: N held to the K rule
    return deepgemm_requant_applies


def _coerce_without_field(original):
    def coerce(field, value, where):
        from refit_verify.errors import BadInputError

        try:
            return original(field, value, where)
        except BadInputError:
            raise BadInputError(f"{where}: bad value {value!r}") from None  # the bug: the field is not named
    return coerce


MUTANTS += [
    Mutant("requant_rows_need_128", "DeepGEMM's UE8M0 requant condition read as N % 128 (it is N % 64, K % 128): "
           "a 576-row (DeepSeek kv_a) or 3392-row layer is left with its float scales",
           {"refit_verify.refit.postload:deepgemm_requant_applies": _requant_rows_need_128}, area="loader",
           killers=("suites/pr/test_loader.py::test_deepgemm_requant_condition",)),
    Mutant("recipe_value_error_unnamed", "a recipe file or override with a bad value ('reflect', 'yes', 'tiny') is "
           "refused without naming the field",
           {"refit_verify.fp8.recipe_io:_coerce": _coerce_without_field}, area="recipes",
           killers=(f"{IO}::test_bad_recipe_files_name_the_field",)),
]
