"""Recipes users write: TOML files (every field named), PRESET:field=value overrides, presets --show."""

import subprocess
import sys

import pytest

from refit_verify.errors import BadInputError
from refit_verify.fp8 import PRESETS, get_recipe, recipe_diff
from refit_verify.fp8.recipe_io import FIELDS, recipe_to_toml


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_round_trips_through_toml(name, tmp_path):
    path = tmp_path / f"{name}.toml"
    path.write_text(recipe_to_toml(PRESETS[name]))
    assert get_recipe(str(path)) == PRESETS[name]


def test_toml_names_every_field():
    text = recipe_to_toml(PRESETS["vllm_per_block"])
    assert all(f"\n{f} = " in text for f in FIELDS)
    assert 'scale_min = "none"' in text and "amax_floor = 0.0001" in text


@pytest.mark.parametrize("edit,field", [
    (lambda t: t + 'amax_flor = 1e-6\n', "amax_flor"),
    (lambda t: t.replace('padding = "zero"', 'padding = "reflect"'), "padding"),
    (lambda t: t.replace("clamp = false", 'clamp = "yes"'), "clamp"),
    (lambda t: t.replace("amax_floor = 0.0001\n", ""), "amax_floor"),
    (lambda t: t.replace("block = [128, 128]", "block = [128]"), "block"),
])
def test_bad_recipe_files_name_the_field(edit, field, tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(edit(recipe_to_toml(PRESETS["vllm_per_block"])))
    with pytest.raises(BadInputError, match=field):
        get_recipe(str(path))


def test_invalid_toml_and_missing_file_are_bad_input(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("name = [\n")
    with pytest.raises(BadInputError, match="not valid TOML"):
        get_recipe(str(path))
    with pytest.raises(BadInputError, match="cannot read"):
        get_recipe(str(tmp_path / "absent.toml"))


def test_overrides_change_only_the_named_fields():
    r = get_recipe("vllm_per_block:amax_floor=1e-6,clamp=true,scale_min=none")
    assert recipe_diff(PRESETS["vllm_per_block"], r) == {"amax_floor": (1e-4, 1e-6), "clamp": (False, True)}
    assert r.name == "vllm_per_block:amax_floor=1e-6,clamp=true,scale_min=none"
    assert get_recipe("vllm_per_block:block=1x128").block == (1, 128)
    assert not recipe_diff(get_recipe("sglang_ue8m0:pow2=bits_ceil"), PRESETS["deepgemm"])


@pytest.mark.parametrize("spec,field", [("vllm_per_block:amax_flor=1", "amax_flor"),
                                        ("vllm_per_block:pow2=ceil", "pow2"),
                                        ("vllm_per_block:amax_floor=tiny", "amax_floor"),
                                        ("vllm_per_block:name=x", "name"),
                                        ("no_such:clamp=true", "no_such")])
def test_bad_overrides_name_the_field(spec, field):
    with pytest.raises(BadInputError, match=field):
        get_recipe(spec)


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "refit_verify", *args], capture_output=True, text=True, cwd=cwd)


def test_presets_show_prints_a_recipe_file_check_accepts(tmp_path):
    out = _cli("presets", "--show", "nemo_rl_pow2_nan_to_num:amax_floor=1e-6")
    assert out.returncode == 0, out.stderr
    path = tmp_path / "r.toml"
    path.write_text(out.stdout)
    r = get_recipe(str(path))
    assert r.amax_floor == 1e-6 and r.nan_policy == "zero" and r.pow2 == "nemo_e8m0"
    bad = _cli("presets", "--show", "vllm_per_block:amax_flor=1")
    assert bad.returncode == 2 and "amax_flor" in bad.stderr
