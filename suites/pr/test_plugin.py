"""pytest plugin: user quantizer options, refit_record into a report, repro command on failure."""

from __future__ import annotations

import json
import textwrap

pytest_plugins = ["pytester"]

TESTS = textwrap.dedent('''
    import torch
    from refit_verify.fp8 import quantize

    def test_matches_recipe(refit_quantizer, refit_recipe, refit_record):
        w = (torch.randn(256, 384, generator=torch.Generator().manual_seed(1)) * 0.02).bfloat16()
        data, scale = refit_quantizer(w)
        ref = quantize(w, refit_recipe)
        n = int((data.view(torch.uint8) != ref.data.view(torch.uint8)).sum())
        refit_record("refit_code_mismatch", n, "w256x384")
        assert n == 0 and torch.equal(scale.view(torch.int32), ref.scale_inv.view(torch.int32))
''')
USER = textwrap.dedent('''
    from refit_verify.fp8 import quantize

    def mine(w, recipe="vllm_per_block"):
        q = quantize(w, recipe)
        return q.data, q.scale_inv
''')


def test_reference_quantizer_and_report(pytester):
    pytester.makepyfile(test_user=TESTS)
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--refit-report", "rep")
    res.assert_outcomes(passed=1)
    rep = json.loads((pytester.path / "rep" / "report.json").read_text())
    assert rep["kind"] == "pytest" and rep["status"] == "complete" and rep["verdict"] == "pass"
    figs = rep["jobs"][0]["figures"]
    assert figs == [{"metric": "refit_code_mismatch", "value": 0.0, "subject": "test_user.py::test_matches_recipe/w256x384"}]


def test_user_quantizer_failure_prints_repro_and_reports(pytester):
    pytester.makepyfile(test_user=TESTS, user_quant=USER)
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--refit-quantizer", "user_quant.py:mine",
                                        "--refit-quantizer-kwargs", '{"recipe": "nemo_rl"}', "--refit-seed", "7",
                                        "--refit-report", "rep")
    res.assert_outcomes(failed=1)
    out = res.stdout.str()
    assert "refit-verify: reproduce" in out
    assert "test_user.py::test_matches_recipe" in out and "--refit-quantizer user_quant.py:mine" in out
    assert "--refit-seed 7" in out and "HYPOTHESIS_PROFILE=" in out
    rep = json.loads((pytester.path / "rep" / "report.json").read_text())
    job = rep["jobs"][0]
    assert job["verdict"] == "fail" and "--refit-quantizer-kwargs" in job["failures"][0]["repro"]
    assert job["figures"][0]["value"] > 0


def test_user_quantizer_passes_when_it_matches(pytester):
    pytester.makepyfile(test_user=TESTS, user_quant=USER)
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--refit-quantizer", "user_quant.py:mine",
                                        "--refit-quantizer-kwargs", '{"recipe": "nemo_rl"}', "--refit-against", "nemo_rl")
    res.assert_outcomes(passed=1)


def test_bad_user_spec_is_a_usage_error(pytester):
    pytester.makepyfile(test_user=TESTS)
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--refit-quantizer", "nope_mod:f")
    text = res.stdout.str() + res.stderr.str()
    # one usage error for the session, not a setup error with a traceback per test
    assert text.count("importing nope_mod failed") == 1 and "Traceback" not in text, text
    assert res.ret == 4  # pytest.ExitCode.USAGE_ERROR


PLAIN = textwrap.dedent('''
    from hypothesis import given, settings, strategies as st

    def test_profile_is_hypothesis_default():
        # hypothesis's own choice (its "default", or its built-in "ci" when CI is set), written down for the
        # caller to hold against a run without the plugin
        with open("profile.txt", "w") as f:
            f.write(f"{settings._current_profile} {settings().max_examples} {settings().derandomize}")

    @given(st.integers())
    def test_plain_failure(x):
        assert False
''')


def test_plain_project_keeps_hypothesis_default_and_gets_no_repro_section(pytester):
    # the plugin is loaded by its pytest11 entry point, in a project that never uses it
    pytester.makepyfile(test_other=PLAIN)
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    res.assert_outcomes(passed=1, failed=1)
    assert "refit-verify: reproduce" not in res.stdout.str()
    with_plugin = (pytester.path / "profile.txt").read_text()
    bare = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:refit_verify")
    bare.assert_outcomes(passed=1, failed=1)
    assert with_plugin == (pytester.path / "profile.txt").read_text(), with_plugin


def test_a_refit_option_loads_our_profile(pytester):
    pytester.makepyfile(test_other='''
        from hypothesis import settings
        def test_profile():
            assert settings._current_profile in ("ci", "dev")
    ''')
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider",
                                        "--refit-seed", "3", "--refit-against", "nemo_rl")
    res.assert_outcomes(passed=1)
