"""The quantizer case set as pytest tests: one test per case, bitwise against --refit-against."""

from __future__ import annotations

import pytest

from refit_verify.cases import default_cases
from refit_verify.check import check_case


def pytest_generate_tests(metafunc):
    if "refit_case" in metafunc.fixturenames:
        cases = default_cases(metafunc.config.getoption("refit_seed"))
        metafunc.parametrize("refit_case", cases, ids=[c.name for c in cases])


def test_quantizer_case(request, refit_quantizer, refit_recipe, refit_case):
    if not request.config.getoption("refit_quantizer"):
        pytest.skip("no --refit-quantizer MODULE:ATTR (or path/to/file.py:ATTR) given")
    from refit_verify.pytest_plugin import isolated_quantizer

    # called in the plugin's child process: os._exit, a segfault or a hang fails this case, not the session
    iso = isolated_quantizer(request.config)
    result = check_case(refit_quantizer, refit_recipe, refit_case, **({"run": iso} if iso is not None else {}))
    assert result.verdict == "pass", f"{refit_case.name} (seed {refit_case.seed}): {result.verdict}: {result.reason}"
