"""Nightly GPU suite: every test here needs CUDA (and most need triton); skips say which is missing.

Findings (measured device facts, pinned differences, timings) are appended to
$REFIT_NIGHTLY_FINDINGS (default reports/nightly_findings.json) so the run documents itself.
"""

from __future__ import annotations

import json
import os

import pytest
import torch


def _cuda_reason():
    if not torch.cuda.is_available():
        return "nightly suite needs a CUDA device (torch.cuda.is_available() is False)"
    return None


def _triton_reason():
    try:
        import triton  # noqa: F401
    except ImportError:
        return "nightly Triton tests need triton (not installed)"
    return None


def pytest_collection_modifyitems(config, items):
    cuda = _cuda_reason()
    tri = _triton_reason()
    for item in items:
        if "suites/nightly" not in str(item.fspath).replace(os.sep, "/"):
            continue
        if cuda:
            item.add_marker(pytest.mark.skip(reason=cuda))
        elif tri and item.get_closest_marker("triton"):
            item.add_marker(pytest.mark.skip(reason=tri))


def pytest_configure(config):
    config.addinivalue_line("markers", "triton: needs triton")


_FINDINGS: dict = {}


@pytest.fixture(scope="session")
def record():
    def put(key, value):
        _FINDINGS[key] = value

    yield put
    path = os.environ.get("REFIT_NIGHTLY_FINDINGS", "reports/nightly_findings.json")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    old = {}
    if os.path.exists(path):
        try:
            old = json.load(open(path))
        except ValueError:
            old = {}
    old.update(_FINDINGS)
    with open(path, "w") as f:
        json.dump(old, f, indent=1, default=str)


@pytest.fixture(scope="session")
def dev():
    return torch.device("cuda", 0)
