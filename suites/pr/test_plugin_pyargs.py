"""From a user's own directory: `pytest --pyargs refit_verify.testing --refit-quantizer ...` runs the
quantizer case set, one test per case, and fails on a quantizer with one wrong code."""

from __future__ import annotations

import textwrap

from refit_verify.cases import default_cases

pytest_plugins = ["pytester"]

FP8 = textwrap.dedent('''
    import torch
    from refit_verify.fp8 import quantize

    def good(w):
        q = quantize(w, "nemo_rl")
        return q.data, q.scale_inv

    def one_wrong_code(w):
        q = quantize(w, "nemo_rl")
        codes = q.data.view(torch.uint8).clone()
        codes.view(-1)[0] ^= 1
        return codes.view(torch.float8_e4m3fn), q.scale_inv
''')


def _run(pytester, attr, *extra):
    pytester.makepyfile(fp8=FP8)
    return pytester.runpytest_subprocess("--pyargs", "refit_verify.testing", "--refit-quantizer", f"fp8.py:{attr}",
                                         "--refit-against", "nemo_rl", "-p", "no:cacheprovider", *extra)


def test_one_wrong_code_fails_with_a_working_repro(pytester):
    res = _run(pytester, "one_wrong_code", "-x")
    res.assert_outcomes(failed=1)
    out = res.stdout.str()
    assert "first code mismatch" in out
    repro = next(ln for ln in res.stdout.lines if "python -m pytest" in ln and "test_quantizer.py::" in ln)
    assert "/refit_verify/testing/test_quantizer.py::" in repro  # absolute: the file is not under the user's dir


def test_correct_quantizer_passes_one_test_per_case_named_by_case(pytester):
    res = _run(pytester, "good", "-v")
    res.assert_outcomes(passed=len(default_cases(0)))
    ran = {ln.split("[", 1)[1].split("]", 1)[0] for ln in res.stdout.lines if "test_quantizer_case[" in ln}
    assert ran == {c.name for c in default_cases(0)}


HOSTILE = textwrap.dedent('''
    import os
    from refit_verify.fp8 import quantize

    def exits_on_1x1(w):
        if w.shape == (1, 1):
            os._exit(0)
        q = quantize(w, "nemo_rl")
        return q.data, q.scale_inv
''')


def test_os_exit_in_the_quantizer_fails_that_case_not_the_session(pytester):
    pytester.makepyfile(hostile=HOSTILE)
    res = pytester.runpytest_subprocess("--pyargs", "refit_verify.testing", "--refit-quantizer",
                                        "hostile.py:exits_on_1x1", "--refit-against", "nemo_rl",
                                        "-p", "no:cacheprovider", "-k", "randn_1x1 or randn_127x129")
    outcomes = res.parseoutcomes()
    assert outcomes.get("failed") == 1 and outcomes.get("passed", 0) >= 1 and res.ret == 1
    assert "exited with code 0" in res.stdout.str()


def test_os_exit_at_import_is_one_usage_error(pytester):
    pytester.makepyfile(bad="import os\nos._exit(0)\n")
    res = pytester.runpytest_subprocess("--pyargs", "refit_verify.testing", "--refit-quantizer", "bad.py:f",
                                        "-p", "no:cacheprovider")
    assert res.ret == 4 and "exited with code 0" in res.stderr.str() + res.stdout.str()
