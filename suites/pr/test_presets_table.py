"""docs/PRESETS_TABLE.md is generated (refit_verify.fp8.witness) and stays true: every preset and alias
has a witness input, each witness really differs from vllm_per_block (and from the preset of its own
group shape), and the committed table is the generated one."""

from pathlib import Path

import pytest

from refit_verify.fp8 import PRESETS
from refit_verify.fp8.presets import ALIASES
from refit_verify.fp8 import witness
from refit_verify.fp8.witness import ALIAS_WITNESS, BASELINE, WITNESSES

DOC = Path(__file__).resolve().parents[2] / "docs" / "PRESETS_TABLE.md"


def test_every_preset_has_a_witness():
    assert set(WITNESSES) == set(PRESETS) - {BASELINE}
    assert set(ALIAS_WITNESS) <= set(ALIASES)


@pytest.mark.parametrize("name", sorted(WITNESSES))
def test_each_witness_differs_from_vllm_per_block(name):
    w = WITNESSES[name]
    x = w.make()
    assert witness.difference(x, name), f"{name}: its witness ({w.description}) gives vllm_per_block's bytes"
    if w.same_block:
        assert witness.difference(x, name, w.same_block), f"{name} equals {w.same_block} on its witness"


def test_a_preset_equal_to_the_baseline_shows_no_difference():
    assert witness.difference(WITNESSES["areal"].make(), BASELINE, BASELINE) == ""


def test_every_preset_has_a_source_naming_a_repository():
    for name, r in PRESETS.items():
        assert "/" in r.source.split()[0], (name, r.source)


def test_the_committed_table_is_the_generated_one():
    assert witness.markdown() in DOC.read_text(), (
        "docs/PRESETS_TABLE.md is stale: regenerate its table with "
        "`PYTHONPATH=$PWD python -m refit_verify.fp8.witness` and paste it over the old one")


@pytest.mark.parametrize("path,preset", [("verl_torch_fallback.py", "verl_torch"),
                                         ("slime_convert_block_fp8.py", "slime_convert")])
def test_the_example_real_quantizers_are_the_presets_the_doc_says_fit_found(path, preset):
    import importlib.util

    from refit_verify.check import check_quantizer

    spec = importlib.util.spec_from_file_location(path[:-3], DOC.parents[1] / "examples" / "real_quantizers" / path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    result = check_quantizer(mod.quantize, preset)
    assert result.ok, [(c.case, c.reason) for c in result.failures()]
    assert f"as a diff from {preset}:" in DOC.read_text()
