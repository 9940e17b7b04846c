"""Every mutant must be killed by at least one PR-suite check, and the correct code must pass all.

This runs the whole PR suite once per mutant (in subprocesses), so it is the slow part of CI.
"""

import json
import os
from pathlib import Path

from refit_verify.selftest.catalog import all_mutants
from refit_verify.selftest.run import run_matrix, to_markdown

ROOT = Path(__file__).resolve().parents[2]


def test_catalog_is_documented():
    for m in all_mutants():
        assert m.bug_class and m.patches and m.area, m.name


def test_every_mutant_is_killed_and_correct_code_passes():
    os.chdir(ROOT)
    # CI stops each mutant at its first killing check (REFIT_VERIFY_SELFTEST_FULL=1 for every killer)
    full = os.environ.get("REFIT_VERIFY_SELFTEST_FULL") == "1"
    # conformance mutants need the real vLLM: suites/selftest/test_conformance_kill_matrix.py, tox -e vllm
    pr_mutants = [m.name for m in all_mutants() if m.area != "conformance"]
    matrix = run_matrix(["suites/pr"], pr_mutants, jobs=int(os.environ.get("REFIT_VERIFY_SELFTEST_JOBS", "2")),
                        extra=[] if full else ["-x"])
    out = ROOT / "reports" / "selftest"
    out.mkdir(parents=True, exist_ok=True)
    (out / "killmatrix.json").write_text(json.dumps(matrix, indent=1))
    (out / "killmatrix.md").write_text(to_markdown(matrix))
    print(to_markdown(matrix))
    assert not matrix["baseline"]["error"], matrix["baseline"]["error"]
    assert not matrix["baseline_failures"], f"correct code fails: {matrix['baseline_failures']}"
    errors = {m["mutant"]: m["error"] for m in matrix["mutants"] if m["error"] and not m["killed"]}
    assert not errors, errors
    assert not matrix["survivors"], f"mutants no check kills: {matrix['survivors']}"
