"""Gathers the per-mutant runs of test_kill_matrix.py (written by each xdist worker) into
reports/selftest/killmatrix.md and prints the summary at the end of the session."""

from __future__ import annotations

import json
import shutil
from dataclasses import fields
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "reports" / "selftest"


def _controller(config) -> bool:
    return not hasattr(config, "workerinput")


def pytest_configure(config):
    if _controller(config):
        shutil.rmtree(OUT / "runs", ignore_errors=True)


def pytest_terminal_summary(terminalreporter, config):
    if not _controller(config) or not (OUT / "runs").is_dir():
        return
    from refit_verify.selftest.run import BASELINE, MutantRun, collect_pr_checks, summarize, summary_line, write

    names = {f.name for f in fields(MutantRun)}
    runs, base = [], MutantRun(BASELINE)
    for path in sorted((OUT / "runs").glob("*.json")):
        run = MutantRun(**{k: v for k, v in json.loads(path.read_text()).items() if k in names})
        if run.mutant.startswith(BASELINE):
            for k in ("checks", "killed_by"):
                getattr(base, k).extend(getattr(run, k))
            base.n_checks += run.n_checks
            base.error = "; ".join(e for e in (base.error, run.error) if e)
        else:
            runs.append(run)
    if not runs:
        return
    # the PR suite's check ids (collected, not run) when the CPU lane ran: the count of PR checks
    # no declared killer run fails; conformance-only sessions (tox -e vllm) count nothing
    matrix = summarize(base, runs, full=False, pr_checks=collect_pr_checks() if base.checks else None)
    md = write(matrix, OUT)
    terminalreporter.write_sep("=", "refit-verify kill matrix")
    terminalreporter.write_line(summary_line(matrix))
    terminalreporter.write_line(f"kill matrix written to {md}")
