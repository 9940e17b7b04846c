"""Every mutant must be killed by a check it declares (Mutant.killers), by assertion or a refit-verify
error, and those checks must pass on the correct code.

Each mutant runs only against its own killers, in its own pytest process (`-n 2` spreads them).
Killers under suites/conformance run where vLLM imports (`tox -e vllm` runs this file with
`-k conformance`); killers under suites/nightly run where CUDA is. The whole PR suite under every
mutant (and the list of PR checks no mutant fails) is `refit-verify selftest --full`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from dataclasses import asdict
from pathlib import Path

import pytest

from refit_verify.selftest.catalog import all_mutants
from refit_verify.selftest.run import run_baseline, run_mutant

ROOT = Path(__file__).resolve().parents[2]
RUNS = ROOT / "reports" / "selftest" / "runs"
MUTANTS = {m.name: m for m in all_mutants()}
HAS_VLLM = importlib.util.find_spec("vllm") is not None


def group(m) -> str:
    return "conformance" if set(m.lanes()) == {"conformance"} else "pr"


def _save(run) -> None:
    RUNS.mkdir(parents=True, exist_ok=True)
    path = RUNS / (re.sub(r"\W", "_", run.mutant) + ".json")
    path.write_text(json.dumps(asdict(run) | {"killed": run.killed, "verdict": run.verdict}))


def _skip_unless_here(g: str) -> None:
    if g == "conformance" and not HAS_VLLM:
        pytest.skip("conformance killers need the real vLLM: run `tox -e vllm`")


def test_every_mutant_declares_killers_that_exist():
    for m in MUTANTS.values():
        assert m.bug_class and m.patches and m.area and m.killers, m.name
        for k in m.killers:
            file, _, func = k.partition("::")
            assert (ROOT / file).is_file(), f"{m.name}: killer {k}: no file {file}"
            name = func.split("::")[-1].split("[")[0]
            assert not name or f"def {name}(" in (ROOT / file).read_text(), f"{m.name}: killer {k}: no {name}"


def test_killers_pass_on_correct_code():
    # (the conformance killers are the vllm env's first command, suites/conformance, on correct code)
    os.chdir(ROOT)
    base = run_baseline([m for m in MUTANTS.values() if group(m) == "pr"], lane="cpu")
    _save(base)
    assert not base.error, base.error
    assert not base.killed_by, {t: base.messages[t] for t in base.killed_by}


@pytest.mark.parametrize("name", sorted(MUTANTS, key=lambda n: group(MUTANTS[n])),
                         ids=lambda n: f"{group(MUTANTS[n])}-{n}")
def test_mutant_is_killed_by_a_declared_killer(name):
    m = MUTANTS[name]
    _skip_unless_here(group(m))
    os.chdir(ROOT)
    run = run_mutant(m)
    _save(run)
    if run.skipped:
        pytest.skip(f"{name}: {run.skipped}")
    assert run.killed, (f"{name} {run.verdict} against {list(m.killers)} ({run.n_checks} checks ran); "
                        f"crashes: {run.crashed} error: {run.error}")
    print(f"{name}: killed by {run.killed_by[0]}: {run.messages[run.killed_by[0]][:200]}")

