"""Every conformance mutant must make the real-vLLM conformance suite fail (run by `tox -e vllm`).

Each mutant runs in its own pytest process (`--refit-mutant NAME`) on the conformance files named
in mutants_conformance.TARGETS, stopping at the first failure; the unmutated suite is the tox env's
first command. Skips where vllm is absent.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from refit_verify.engine.vllm_cpu import vllm_available
from refit_verify.selftest.catalog import all_mutants
from refit_verify.selftest.mutants_conformance import NEEDS, TARGETS
from refit_verify.selftest.run import run_one

ROOT = Path(__file__).resolve().parents[2]
OK, WHY = vllm_available()
MUTANTS = {m.name: m for m in all_mutants() if m.area == "conformance"}
pytestmark = pytest.mark.skipif(not OK, reason=f"conformance kill matrix needs vllm ({WHY}); run `tox -e vllm`")


def _extra() -> list[str]:
    extra = ["-x"]
    try:  # the vllm env reaches the project through PYTHONPATH: load its pytest plugin by hand
        importlib.metadata.distribution("refit-verify")
    except importlib.metadata.PackageNotFoundError:
        extra += ["-p", "refit_verify.pytest_plugin"]
    return extra


def _present(module) -> bool:
    try:
        return module is None or importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


@pytest.fixture(scope="module")
def matrix():
    os.chdir(ROOT)
    runnable = {n: [t for t in TARGETS[n] if (ROOT / t).exists()] for n in MUTANTS if _present(NEEDS.get(n))}
    jobs = int(os.environ.get("REFIT_VERIFY_SELFTEST_JOBS", "2"))
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {n: pool.submit(run_one, n, files, MUTANTS[n].area, MUTANTS[n].bug_class, _extra())
                   for n, files in runnable.items() if files}
        runs = {n: f.result() for n, f in futures.items()}
    # A run that left no junit (process died, seen once under parallel load) is retried alone once
    for n, run in runs.items():
        if run.error and not run.killed:
            runs[n] = run_one(n, runnable[n], MUTANTS[n].area, MUTANTS[n].bug_class, _extra())
    return runs


def test_every_conformance_mutant_has_targets():
    assert set(TARGETS) == set(MUTANTS), set(TARGETS) ^ set(MUTANTS)


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_conformance_mutant_is_killed(matrix, name):
    if name not in matrix:
        pytest.skip(f"{name}: needs {NEEDS.get(name) or TARGETS[name]}, not in this checkout yet")
    run = matrix[name]
    assert not run.error or run.killed, run.error
    assert run.killed, f"{name} survives {TARGETS[name]} ({run.n_checks} checks ran)"
    print(f"{name}: killed by {run.killed_by[0]}: {run.messages[run.killed_by[0]][:200]}")
