"""The kill matrix: every suite under every mutant, and under the correct code.

Each mutant runs the suites in its own pytest process (`--refit-mutant NAME`, see suites/conftest.py),
so a mutant can never leak into another run. A mutant that no check kills, or a check that fails
on the correct code, fails the self-test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

BASELINE = "(correct code)"


@dataclass
class MutantRun:
    mutant: str
    area: str
    bug_class: str
    killed_by: list[str] = field(default_factory=list)
    messages: dict = field(default_factory=dict)  # check -> first line of its failure
    n_checks: int = 0
    checks: list[str] = field(default_factory=list)  # every check that ran (kept for the correct-code run)
    seconds: float = 0.0
    error: str = ""

    @property
    def killed(self) -> bool:
        return bool(self.killed_by)


def no_junit_error(returncode: int, output: str) -> str:
    """Why a run left no junit file; never empty, even when pytest printed nothing."""
    tail = output.strip()[-800:]
    return f"pytest exit {returncode}, no junit written" + (f": {tail}" if tail else " and no output")


def _parse_junit(path: Path) -> tuple[list[str], dict]:
    root = ET.parse(path).getroot()
    failed, ran = {}, []
    for case in root.iter("testcase"):
        if case.find("skipped") is None:
            ran.append(f"{case.get('classname')}::{case.get('name')}")
        bad = case.find("failure")
        if bad is None:
            bad = case.find("error")
        if bad is not None:
            test_id = f"{case.get('classname')}::{case.get('name')}"
            text = (bad.get("message") or bad.text or "").strip().splitlines()
            failed[test_id] = text[0][:300] if text else ""
    return ran, failed


def run_one(name: str, suites: list[str], area: str = "", bug_class: str = "", extra: list[str] = ()) -> MutantRun:
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", *suites, "-q", "-p", "no:cacheprovider",
               f"--junitxml={junit}", "-o", "junit_family=xunit2", *extra]
        if name != BASELINE:
            cmd.append(f"--refit-mutant={name}")
        t0 = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HYPOTHESIS_PROFILE": "ci"})
        run = MutantRun(name, area, bug_class, seconds=round(time.monotonic() - t0, 1))
        if not junit.exists():
            run.error = no_junit_error(proc.returncode, proc.stdout + proc.stderr)
            return run
        ran, failed = _parse_junit(junit)
        run.n_checks = len(ran)
        if name == BASELINE:
            run.checks = ran
        run.killed_by = sorted(failed)
        run.messages = failed
        if proc.returncode not in (0, 1):
            run.error = f"pytest exit {proc.returncode}: " + (proc.stdout + proc.stderr)[-800:]
        return run


def run_matrix(suites: list[str], mutants=None, jobs: int = 2, extra: list[str] = ()) -> dict:
    """`extra` goes to each mutant's pytest (e.g. ["-x"]); the correct-code run always runs in full."""
    from refit_verify.selftest.catalog import all_mutants

    chosen, not_here = [], {}
    for m in all_mutants():
        if mutants and m.name not in mutants:
            continue
        ok, why = m.runnable_here()
        if ok:
            chosen.append(m)
        else:
            not_here[m.name] = why
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        base = pool.submit(run_one, BASELINE, suites, "", "", [e for e in extra if e != "-x"])
        futures = [pool.submit(run_one, m.name, suites, m.area, m.bug_class, extra) for m in chosen]
        runs = [f.result() for f in futures]
        baseline = base.result()
    return {
        "schema": "refit-verify/killmatrix@1",
        "suites": suites,
        "pytest_args": list(extra),
        "baseline": asdict(baseline),
        "mutants": [asdict(r) | {"killed": r.killed} for r in runs],
        "survivors": [r.mutant for r in runs if not r.killed],
        "not_run_here": not_here,  # killed by the nightly (cuda) or conformance (vllm) runs instead
        "baseline_failures": baseline.killed_by,
        # checks no mutant made fail: each is a check not yet shown able to fail (full mode only;
        # with --first-kill most checks never run under a mutant)
        "checks_never_failed": sorted(set(baseline.checks) - {t for r in runs for t in r.killed_by}),
        "ok": bool(runs) and all(r.killed for r in runs) and not baseline.killed_by and not baseline.error,
    }


def to_markdown(matrix: dict) -> str:
    lines = ["| mutant | area | killed by (checks) | first killing check: message |", "|---|---|---|---|"]
    for m in matrix["mutants"]:
        first = m["killed_by"][0] if m["killed_by"] else "—"
        msg = m["messages"].get(first, m.get("error", ""))[:120].replace("|", "\\|")
        lines.append(f"| {m['mutant']} | {m['area']} | {len(m['killed_by'])}/{m['n_checks']} | "
                     f"`{first.split('::')[-1]}`: {msg} |")
    b = matrix["baseline"]
    lines.append("")
    lines.append(f"Correct code: {b['n_checks'] - len(b['killed_by'])}/{b['n_checks']} checks pass. "
                 f"Mutants killed: {sum(m['killed'] for m in matrix['mutants'])}/{len(matrix['mutants'])}.")
    if "-x" not in matrix.get("pytest_args", []):
        lines.append(f"Checks no mutant made fail: {len(matrix['checks_never_failed'])} of {len(b['checks'])} "
                     "(listed in killmatrix.json).")
    if matrix.get("not_run_here"):
        lines.append("Not run here: " + ", ".join(f"{k} ({v})" for k, v in matrix["not_run_here"].items()))
    if matrix["survivors"]:
        lines.append(f"SURVIVORS: {', '.join(matrix['survivors'])}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="refit-verify selftest",
                                description="Run every suite under every mutant and print the kill matrix.")
    p.add_argument("--suites", nargs="+", default=["suites/pr"])
    p.add_argument("--mutant", action="append", help="only these mutants (repeatable)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", default="reports/selftest")
    p.add_argument("--list", action="store_true", help="list the mutants and exit")
    p.add_argument("--first-kill", action="store_true",
                   help="stop each mutant's run at its first failing check (fast; the matrix then shows one "
                        "killer per mutant instead of all of them)")
    args = p.parse_args(argv)
    from refit_verify.selftest.catalog import all_mutants

    if args.list:
        for m in all_mutants():
            print(f"{m.name:36s} {m.area:10s} {m.bug_class}")
        return 0
    missing = [s for s in args.suites if not Path(s).exists()]
    if missing:
        print(f"refit-verify selftest: suites not found: {missing} (run from a refit-verify checkout)", file=sys.stderr)
        return 2
    matrix = run_matrix(args.suites, args.mutant, args.jobs, ["-x"] if args.first_kill else [])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "killmatrix.json.tmp"
    tmp.write_text(json.dumps(matrix, indent=1))
    os.replace(tmp, out / "killmatrix.json")
    md = to_markdown(matrix)
    (out / "killmatrix.md").write_text(md + "\n")
    print(md)
    return 0 if matrix["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
