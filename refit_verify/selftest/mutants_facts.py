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
