"""The quantizer case set as pytest tests: one test per case, bitwise against --refit-against."""

from __future__ import annotations

import pytest

from refit_verify.cases import default_cases
from refit_verify.check import check_case


def pytest_generate_tests(metafunc):
    if "refit_case" in metafunc.fixturenames:
        cases = default_cases(metafunc.config.getoption("refit_seed"))
        metafunc.parametrize("refit_case", cases, ids=[c.name for c in cases])


def test_quantizer_case(request, refit_quantizer, refit_recipe, refit_case, refit_isolated_quantizer):
    if not request.config.getoption("refit_quantizer"):
        pytest.skip("no --refit-quantizer MODULE:ATTR (or path/to/file.py:ATTR) given")
    # called in the plugin's child process: os._exit, a segfault or a hang fails this case, not the session
    iso = refit_isolated_quantizer
    result = check_case(refit_quantizer, refit_recipe, refit_case, **({"run": iso} if iso is not None else {}))
    assert result.verdict == "pass", f"{refit_case.name} (seed {refit_case.seed}): {result.verdict}: {result.reason}"
