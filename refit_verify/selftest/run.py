"""The kill matrix: each mutant against the checks it declares as killers (or, with --full, the whole
PR suite), and the correct code against the same checks.

Each mutant runs in its own pytest process (`--refit-mutant NAME`, see suites/conftest.py), so a
mutant can never leak into another run. A mutant counts as killed only when one of its declared
killers fails by assertion (AssertionError, pytest.fail, a missing expected raise) or by a
refit-verify error: a killer that merely crashes (TypeError, KeyError, ImportError, ...) leaves the
mutant SURVIVED, with the crash named. Killers under suites/nightly run only where CUDA is; killers
under suites/conformance run with an interpreter that has the real vLLM (this one, or the cached
env that `tox -e vllm` builds).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

BASELINE = "(correct code)"
PR_SUITE = "suites/pr"
UNREACHABLE = Path(__file__).with_name("unreachable.toml")
VLLM_VERSION = "0.33.0"  # the cached env tox builds: tox.ini [vllm] version
RUN_TIMEOUT_S = 1800

# exception names whose failure is a check failing on purpose; anything else is a crash
_ASSERTION_NAMES = {"AssertionError", "Failed"}  # Failed: pytest.fail and pytest.raises' DID NOT RAISE
_EXC_NAME = re.compile(r'^(?:failed on \w+ with ")?([A-Za-z_][\w.]*)(?::|"|$|\s)')


def _refit_error_names() -> set:
    from refit_verify import errors

    return {n for n, v in vars(errors).items() if isinstance(v, type) and issubclass(v, errors.RefitVerifyError)}


def _is_check_failure_class(dotted: str) -> bool:
    """A refit-verify exception class (e.g. refit.checks.CheckFailed) that is an AssertionError or a
    RefitVerifyError: a check failing on purpose. Only refit_verify modules are imported here."""
    import importlib

    from refit_verify.errors import RefitVerifyError

    module, _, name = dotted.rpartition(".")
    if not module.startswith("refit_verify"):
        return False
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return False
    return isinstance(cls, type) and issubclass(cls, (AssertionError, RefitVerifyError))


def classify(message: str, body: str = "") -> tuple[str, str]:
    """("assert" | "crash", exception name) of a junit failure message's first line; an exception
    group (hypothesis' several distinct failures) is an assertion when every member in `body` is."""
    first = (message or "").strip().splitlines()[0] if (message or "").strip() else ""
    m = _EXC_NAME.match(first)
    name = m.group(1) if m else (first.split(" ", 1)[0] or "unknown")
    short = name.rsplit(".", 1)[-1]
    if short in _ASSERTION_NAMES or (short in _refit_error_names() and name.startswith(("refit_verify.", short))):
        return "assert", short
    if _is_check_failure_class(name):
        return "assert", short
    if first.startswith("assert "):  # some pytest versions drop the AssertionError prefix
        return "assert", "AssertionError"
    if short.endswith("ExceptionGroup"):
        members = re.findall(r"^\S*\s*\|\s+([A-Za-z_][\w.]*)(?::|$)", body, re.M)
        members = [n for n in members if not n.endswith("ExceptionGroup")]
        kinds = {classify(f"{n}:")[0] for n in members}
        if kinds == {"assert"}:
            return "assert", f"{short}({', '.join(sorted({n.rsplit('.', 1)[-1] for n in members}))})"
    return "crash", name


@dataclass
class MutantRun:
    mutant: str
    area: str = ""
    bug_class: str = ""
    killers: list[str] = field(default_factory=list)
    killed_by: list[str] = field(default_factory=list)  # declared killers failing by assertion/refit error
    crashed: dict = field(default_factory=dict)  # test -> "TypeError: ..." (never counts as a kill)
    failed_by_assert: list[str] = field(default_factory=list)  # every test failing by assertion
    messages: dict = field(default_factory=dict)  # test -> first line of its failure
    n_checks: int = 0
    checks: list[str] = field(default_factory=list)  # every check that ran (kept for the correct-code run)
    skipped: str = ""  # why it did not run here (no CUDA, no vLLM, missing module)
    seconds: float = 0.0
    error: str = ""

    @property
    def killed(self) -> bool:
        return bool(self.killed_by)

    @property
    def verdict(self) -> str:
        if self.killed:
            return "KILLED"
        if self.skipped:
            return "SKIPPED"
        crashes = sorted({v.split(":", 1)[0] for t, v in self.crashed.items() if _matches(t, self.killers)})
        return "SURVIVED" + (f" (killer crashed: {', '.join(crashes)})" if crashes else "")


def _matches(test_id: str, killers) -> bool:
    return any(test_id == k or test_id.startswith((k + "::", k + "[")) for k in killers)


def no_junit_error(returncode: int, output: str) -> str:
    """Why a run left no junit file; never empty, even when pytest printed nothing."""
    tail = output.strip()[-800:]
    return f"pytest exit {returncode}, no junit written" + (f": {tail}" if tail else " and no output")


def _node_id(case) -> str:
    file, classname = case.get("file") or "", case.get("classname") or ""
    module = file[:-3].replace("/", ".") if file.endswith(".py") else ""
    if module and classname.startswith(module):
        inner = [p for p in classname[len(module):].split(".") if p]
        return "::".join([file, *inner, case.get("name")])
    return f"{classname}::{case.get('name')}"


def parse_junit(path: Path) -> tuple[list[str], dict]:
    """(tests that ran, {failed test: (kind, exception name, first message line)})."""
    ran, failed = [], {}
    for case in ET.parse(path).getroot().iter("testcase"):
        test_id = _node_id(case)
        if case.find("skipped") is None:
            ran.append(test_id)
        bad = case.find("failure")
        bad = case.find("error") if bad is None else bad
        if bad is not None:
            message = (bad.get("message") or bad.text or "").strip()
            kind, exc = classify(message, bad.text or "")
            failed[test_id] = (kind, exc, (message.splitlines() or [""])[0][:300])
    return ran, failed


def lane_python(lane: str) -> tuple[str | None, str]:
    """(interpreter that runs this lane's killers, or None; why not)."""
    if lane == "gpu":
        import torch

        if not torch.cuda.is_available():
            return None, "needs CUDA (killed in the GPU nightly: tools/gpu_nightly.sh)"
        return sys.executable, ""
    if lane == "conformance":
        if importlib.util.find_spec("vllm") is not None:
            return sys.executable, ""
        home = Path(os.environ.get("REFIT_VLLM_HOME") or Path.home() / ".cache/refit-verify" / f"vllm-{VLLM_VERSION}")
        python = home / "bin" / "python"
        if (home / "READY").exists() and python.exists():
            return str(python), ""
        return None, f"needs the real vLLM (no vllm here, no ready env at {home}; `tox -e vllm` builds it)"
    return sys.executable, ""


def _pytest_cmd(python: str, targets, junit: Path, mutant: str, extra) -> tuple[list[str], dict]:
    cmd = [python, "-m", "pytest", *targets, "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
           "-o", "junit_family=xunit1", *extra]
    env = {**os.environ, "HYPOTHESIS_PROFILE": os.environ.get("HYPOTHESIS_PROFILE", "ci")}
    if python != sys.executable:  # the vLLM env reaches the project through PYTHONPATH, plugin by hand
        env.update(PYTHONPATH=os.getcwd(), PYTEST_DISABLE_PLUGIN_AUTOLOAD="1", VLLM_LOGGING_LEVEL="WARNING")
        cmd += ["-p", "refit_verify.pytest_plugin"]
    elif os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):  # autoload off: the entry point is not read
        cmd += ["-p", "refit_verify.pytest_plugin"]
    if mutant != BASELINE:
        cmd.append(f"--refit-mutant={mutant}")
    return cmd, env


def run_pytest(mutant: str, python: str, targets, extra=()) -> tuple[list[str], dict, str]:
    """Run pytest on `targets` under `mutant`: (tests that ran, failures, error or "")."""
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        cmd, env = _pytest_cmd(python, targets, junit, mutant, extra)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return [], {}, f"pytest ran past {RUN_TIMEOUT_S} s: {' '.join(cmd)}"
        if not junit.exists():
            return [], {}, no_junit_error(proc.returncode, proc.stdout + proc.stderr)
        ran, failed = parse_junit(junit)
        error = "" if proc.returncode in (0, 1) else f"pytest exit {proc.returncode}: " + (proc.stdout + proc.stderr)[-800:]
        return ran, failed, error


def run_mutant(m, full: bool = False, extra=(), lane: str | None = None) -> MutantRun:
    """One mutant against its killers (full: the whole PR suite for the CPU lane; lane: that lane's only)."""
    run = MutantRun(m.name, m.area, m.bug_class, killers=list(m.killers))
    missing = m.missing_needs()
    if missing:
        run.skipped = f"needs {', '.join(missing)}"
        return run
    t0 = time.monotonic()
    skips = []
    for where, killers in m.lanes().items():
        if lane and where != lane:
            continue
        python, why = lane_python(where)
        if python is None:
            skips.append(why)
            continue
        targets, args = killers, list(extra)
        if full and where == "cpu":  # listed-unreachable checks cannot fail under a mutant: not run
            targets, args = [PR_SUITE], args + [f"--deselect={c}" for c in load_unreachable()]
        ran, failed, error = run_pytest(m.name, python, targets, args)
        _record(run, ran, failed, error)
    run.seconds = round(time.monotonic() - t0, 1)
    if not run.killed and skips and not run.n_checks:
        run.skipped = "; ".join(skips)
    return run


def _record(run: MutantRun, ran, failed, error) -> None:
    run.n_checks += len(ran)
    run.error = "; ".join(e for e in (run.error, error) if e)
    for test, (kind, exc, msg) in failed.items():
        run.messages[test] = msg
        if kind == "crash":
            run.crashed[test] = f"{exc}: {msg}"[:300]
            continue
        run.failed_by_assert.append(test)
        if _matches(test, run.killers):
            run.killed_by.append(test)


def run_baseline(mutants, full: bool = False, lane: str | None = None) -> MutantRun:
    """The correct code against every killer the chosen mutants declare (full: the whole PR suite)."""
    run = MutantRun(BASELINE)
    lanes: dict = {}
    for m in mutants:
        for where, killers in m.lanes().items():
            if not lane or where == lane:
                lanes.setdefault(where, []).extend(k for k in killers if k not in lanes.get(where, []))
    if full and lane in (None, "cpu"):
        lanes["cpu"] = [PR_SUITE]
    t0 = time.monotonic()
    for where, targets in lanes.items():
        python, _ = lane_python(where)
        if python is not None and targets:
            ran, failed, error = run_pytest(BASELINE, python, _without_overlap(targets))
            run.checks += ran
            _record(run, ran, failed, error)
    run.killed_by = sorted(run.messages)  # on correct code every failure, crash or not, is a failure
    run.seconds = round(time.monotonic() - t0, 1)
    return run


def _without_overlap(targets: list[str]) -> list[str]:
    # pytest runs "f.py" and "f.py::test" both when given both: keep the widest
    return [t for t in targets if not any(o != t and _matches(t, [o]) for o in targets)]


def load_unreachable(path: Path = UNREACHABLE) -> dict:
    """{check id or prefix: why no mutant can make it fail} from unreachable.toml."""
    import tomllib

    if not path.exists():
        return {}
    data = tomllib.loads(path.read_text())
    return {c["id"]: c["reason"] for c in data.get("check", [])}


def never_failed(pr_checks, runs, unreachable: dict) -> tuple[list[str], dict]:
    """(PR checks no run fails by assertion and not listed unreachable, {listed check: reason}).
    In killers mode a run only covers its mutant's declared killers, so this is an upper bound of
    what --full (every mutant against the whole PR suite) finds."""
    failed = {t for r in runs for t in r.failed_by_assert}
    pr_checks = [c for c in sorted(set(pr_checks)) if c.startswith(PR_SUITE + "/")]
    left = [c for c in pr_checks if c not in failed]
    listed = {c: next(v for k, v in unreachable.items() if _matches(c, [k])) for c in left if _matches(c, unreachable)}
    return [c for c in left if c not in listed], listed


def collect_pr_checks(python: str = sys.executable) -> tuple[list[str], str]:
    """(node ids of the PR suite's checks, error or ""): `pytest --collect-only`, no test runs."""
    cmd = [python, "-m", "pytest", PR_SUITE, "--collect-only", "-q", "-p", "no:cacheprovider"]
    if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        cmd += ["-p", "refit_verify.pytest_plugin"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return [], f"collecting {PR_SUITE} ran past {RUN_TIMEOUT_S} s"
    ids = [line.strip() for line in proc.stdout.splitlines() if line.startswith(PR_SUITE + "/") and "::" in line]
    if proc.returncode != 0 or not ids:
        return ids, f"collecting {PR_SUITE}: pytest exit {proc.returncode}: " + (proc.stdout + proc.stderr)[-800:]
    return ids, ""


def by_file(checks) -> list[tuple[str, int]]:
    """[(test file, how many of `checks` it holds)], most first."""
    counts: dict = {}
    for c in checks:
        file = c.split("::", 1)[0]
        counts[file] = counts.get(file, 0) + 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def select(names=None, lane: str | None = None) -> list:
    from refit_verify.selftest.catalog import all_mutants

    chosen = [m for m in all_mutants() if not names or any(n == m.name or n in m.name for n in names)]
    return [m for m in chosen if lane is None or lane in m.lanes()]


def run_matrix(mutants, full: bool = False, jobs: int = 2, extra=(), lane: str | None = None,
               on_progress=None) -> dict:
    """Every chosen mutant against its killers (full: the whole PR suite), plus the correct code.
    on_progress(partial matrix, marked incomplete) after each run: a long --full run leaves data.
    In killers mode the PR suite's check ids are collected (no test runs) to count the PR checks
    no declared killer run fails."""
    baseline, runs = None, []

    def progress():
        if on_progress and baseline is not None:
            on_progress(summarize(baseline, runs, full, list(extra), _done(collected)) | {"incomplete": True})

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        collected = pool.submit(collect_pr_checks) if not full and lane in (None, "cpu") else None
        base = pool.submit(run_baseline, mutants, full, lane)
        futures = [pool.submit(run_mutant, m, full, extra, lane) for m in mutants]
        for f in futures:
            runs.append(f.result())
            if base.done():
                baseline = base.result()
            progress()
        baseline = base.result()
        pr_checks = collected.result() if collected else None
    return summarize(baseline, runs, full, list(extra), pr_checks)


def _done(future):
    return future.result() if future is not None and future.done() else None


def summarize(baseline: MutantRun, runs, full: bool, extra=(), pr_checks=None) -> dict:
    """The kill matrix as data. The PR checks no mutant fails are counted over the correct code's
    checks in --full mode, else over `pr_checks` ((collected ids, error) from collect_pr_checks)
    when given: then only declared killers ran, so the count is an upper bound."""
    ran = [r for r in runs if not r.skipped]
    matrix = {
        "schema": "refit-verify/killmatrix@2",
        "mode": "full" if full else "killers",
        "pytest_args": list(extra),
        "baseline": asdict(baseline),
        "mutants": [asdict(r) | {"killed": r.killed, "verdict": r.verdict} for r in runs],
        "survivors": [r.mutant for r in ran if not r.killed],
        "not_run_here": {r.mutant: r.skipped for r in runs if r.skipped},
        "baseline_failures": baseline.killed_by,
        "ok": bool(ran) and all(r.killed for r in ran) and not baseline.killed_by and not baseline.error,
    }
    if full:
        pr_checks = (baseline.checks, "")
    if pr_checks is not None:
        matrix |= never_failed_section(pr_checks, runs, full, "-x" in extra)
    return matrix


def never_failed_section(pr_checks, runs, full: bool, first_kill: bool) -> dict:
    ids, error = pr_checks
    basis = "full" if full else "killers" + (", first kill" if first_kill else "")
    if error:
        return {"never_failed_basis": basis, "pr_checks_error": error}
    left, listed = never_failed(ids, runs, load_unreachable())
    return {"never_failed_basis": basis, "pr_checks": len(set(ids)), "checks_never_failed": left,
            "checks_unreachable": listed, "never_failed_by_file": by_file(left)}


def _cell(text: str) -> str:
    return text[:120].replace("|", "\\|").replace("\n", " ")


def to_markdown(matrix: dict, list_checks: bool = True) -> str:
    """The matrix as markdown; list_checks=False leaves out the per-check lists (the file keeps them)."""
    lines = ["| mutant | area | verdict | killing check: message |", "|---|---|---|---|"]
    if matrix.get("incomplete"):
        lines.insert(0, "**INCOMPLETE**: the run is still going or was interrupted; counts cover the runs done.\n")
    for m in matrix["mutants"]:
        first = m["killed_by"][0] if m["killed_by"] else ""
        note = m["messages"].get(first, "") if first else (m["skipped"] or m["error"] or next(iter(m["crashed"].values()), ""))
        lines.append(f"| {m['mutant']} | {m['area']} | {m['verdict']} | "
                     f"{'`' + first.split('::', 1)[-1] + '`: ' if first else ''}{_cell(note)} |")
    lines += ["", summary_line(matrix)]
    if matrix.get("not_run_here"):
        lines.append("Not run here: " + ", ".join(f"{k} ({v})" for k, v in matrix["not_run_here"].items()))
    if matrix["survivors"]:
        lines.append(f"SURVIVORS: {', '.join(matrix['survivors'])}")
    if matrix["baseline_failures"]:
        lines.append(f"CORRECT CODE FAILS: {', '.join(matrix['baseline_failures'])}")
    if matrix.get("pr_checks_error"):
        lines += ["", f"PR checks no mutant fails: not counted ({_cell(matrix['pr_checks_error'])})"]
    if "checks_never_failed" in matrix:
        lines += ["", f"PR checks no mutant fails: {len(matrix['checks_never_failed'])} ({_basis(matrix)})",
                  "", "| test file | checks no mutant fails |", "|---|---|",
                  *[f"| `{f}` | {n} |" for f, n in matrix["never_failed_by_file"]]]
        if list_checks:
            lines += ["", *[f"- `{c}`" for c in matrix["checks_never_failed"]]]
        reasons: dict = {}
        for why in matrix["checks_unreachable"].values():
            reasons[why] = reasons.get(why, 0) + 1
        lines += ["", f"Listed unreachable (unreachable.toml): {len(matrix['checks_unreachable'])}",
                  *[f"- {n} checks: {_cell(why)}" for why, n in reasons.items()]]
    return "\n".join(lines)


def summary_line(matrix: dict) -> str:
    runs = matrix["mutants"]
    killed = sum(m["killed"] for m in runs)
    crashed = sum("crashed" in m["verdict"] for m in runs)
    b = matrix["baseline"]
    text = (f"killed {killed}, survived {len(matrix['survivors'])} ({crashed} with a crash only), "
            f"not run here {len(matrix['not_run_here'])}, of {len(runs)} mutants; correct code: "
            f"{b['n_checks'] - len(b['killed_by'])}/{b['n_checks']} checks pass")
    if "checks_never_failed" in matrix:
        text += (f"; PR checks no mutant fails: {len(matrix['checks_never_failed'])} "
                 f"(+{len(matrix['checks_unreachable'])} listed unreachable) of {matrix['pr_checks']}, "
                 f"{_basis(matrix)}")
    return text


def _basis(matrix: dict) -> str:
    if matrix["never_failed_basis"] == "full":
        return "every mutant against the whole PR suite"
    stop = " and stopped at its first failure" if "first kill" in matrix["never_failed_basis"] else ""
    return f"an upper bound: each mutant ran only its declared killers{stop}; --full can only lower it"


def write(matrix: dict, out: Path) -> Path:
    """killmatrix.json / .md (and never_failed.txt when PR checks were counted), each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"killmatrix.json": json.dumps(matrix, indent=1), "killmatrix.md": to_markdown(matrix) + "\n"}
    if "checks_never_failed" in matrix:
        files["never_failed.txt"] = "".join(c + "\n" for c in matrix["checks_never_failed"])
    for name, text in files.items():
        tmp = out / (name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, out / name)
    return out / "killmatrix.md"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="refit-verify selftest",
                                description="Run each mutant against its declared killers and print the kill matrix.")
    p.add_argument("names", nargs="*", help="only mutants whose name contains one of these")
    p.add_argument("--mutant", action="append", default=[], help="only this mutant (repeatable)")
    p.add_argument("--lane", choices=["cpu", "gpu", "conformance"], help="only mutants with killers in this lane")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", default="reports/selftest")
    p.add_argument("--list", action="store_true", help="list the mutants with their killers and exit")
    p.add_argument("--first-kill", action="store_true", help="stop each mutant's run at its first failing check")
    p.add_argument("--full", action="store_true", default=os.environ.get("REFIT_VERIFY_SELFTEST_FULL") == "1",
                   help="run every mutant against the whole PR suite and list the PR checks no mutant fails "
                        "(slow; also REFIT_VERIFY_SELFTEST_FULL=1)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    mutants = select(args.names + args.mutant, args.lane)
    if args.list:
        for m in mutants:
            print(f"{m.name:36s} {m.area:10s} {', '.join(m.killers)}\n{'':48s}{m.bug_class}")
        return 0
    if not Path(PR_SUITE).exists():
        print(f"refit-verify selftest: {PR_SUITE} not found (run from a refit-verify checkout)", file=sys.stderr)
        return 2
    out = Path(args.out)
    matrix = run_matrix(mutants, args.full, args.jobs, ["-x"] if args.first_kill else [], args.lane,
                        on_progress=lambda partial: write(partial, out))
    md = write(matrix, out)
    print(to_markdown(matrix, list_checks=False))  # ends with the summary line
    print(f"kill matrix written to {md}")
    return 0 if matrix["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
