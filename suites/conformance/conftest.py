"""Conformance against the real vLLM: skipped, with the reason, wherever vllm does not import.

vllm is reached only through refit_verify.engine.vllm_cpu. The probe below imports vllm once per
session (7-9 s where it is installed, an instant ImportError where it is not).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from refit_verify.engine.vllm_cpu import SUPPORTED_VLLM, vllm_available

HERE = Path(__file__).resolve().parent
_OK, _WHY = vllm_available()
SKIP_REASON = (f"real-vLLM conformance needs vllm=={SUPPORTED_VLLM} ({_WHY}); "
               "run it with `tox -e vllm` (cached env ~/.cache/refit-verify/vllm-<version>)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE not in Path(str(item.fspath)).resolve().parents:
            continue
        item.add_marker(pytest.mark.vllm)
        if not _OK:
            item.add_marker(pytest.mark.skip(reason=SKIP_REASON))


def pytest_report_header(config):
    return f"refit-verify conformance: {_WHY}"


@pytest.fixture(scope="session")
def V():
    """The vLLM CPU driver, initialised once (distributed init, CPU kernel substitutes)."""
    if not _OK:
        pytest.skip(SKIP_REASON)
    from refit_verify.engine import vllm_cpu

    vllm_cpu.init_cpu_vllm()
    return vllm_cpu
