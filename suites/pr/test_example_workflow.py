"""examples/github/refit-verify.yml installs with commands that work: each `pip install` of refit-verify
names a folder an earlier step checked out, with extras the project defines; the line itself is run
(pip --dry-run, no dependencies) against this checkout standing in for that folder."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / "examples" / "github" / "refit-verify.yml"


def install_lines() -> list[tuple[str, list[dict], str]]:
    """(job, its steps, pip line) for every pip line that installs refit-verify."""
    doc = yaml.safe_load(WORKFLOW.read_text())
    out = []
    for name, job in doc["jobs"].items():
        for step in job["steps"]:
            for line in str(step.get("run", "")).splitlines():
                if line.strip().startswith("pip install") and "refit-verify" in line:
                    out.append((name, job["steps"], line.strip()))
    return out


def requirement(line: str) -> tuple[str, set[str]]:
    (spec,) = [a for a in shlex.split(line)[2:] if "refit-verify" in a]
    m = re.fullmatch(r"(?P<target>[^\[]+)(\[(?P<extras>[^\]]*)\])?", spec)
    assert m, f"cannot read the requirement {spec!r}"
    return m["target"], {e.strip() for e in (m["extras"] or "").split(",") if e.strip()}


def test_every_job_installs_refit_verify():
    assert {job for job, _, _ in install_lines()} == {"pr-gate", "nightly-gpu"}


def install_problems(steps: list[dict], line: str) -> list[str]:
    """Why this pip line cannot install refit-verify in a job with these steps ([] when it can)."""
    target, extras = requirement(line)
    if not target.startswith("./"):  # refit-verify is not on PyPI: "refit-verify[...]" never resolves
        return [f"{line!r} installs from an index that has no refit-verify"]
    paths = {str(s.get("with", {}).get("path", "")) for s in steps if str(s.get("uses", "")).startswith("actions/checkout")}
    problems = [] if target[2:].rstrip("/") in paths else [f"{target} is not checked out by any step ({sorted(paths)})"]
    defined = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    if extras - defined:
        problems.append(f"extras {sorted(extras - defined)} are not defined in pyproject.toml")
    return problems


@pytest.mark.parametrize("job,steps,line", install_lines(), ids=lambda v: v if isinstance(v, str) else "")
def test_install_line_names_a_checked_out_folder_and_real_extras(job, steps, line):
    assert install_problems(steps, line) == [], job


def test_the_check_catches_the_old_broken_lines():
    checkout = [{"uses": "actions/checkout@v4", "with": {"path": ".refit-verify"}}]
    assert install_problems(checkout, 'pip install "refit-verify[test]" -e .')  # the line that shipped broken
    assert install_problems([{"uses": "actions/checkout@v4"}], 'pip install "./.refit-verify[test]"')
    assert install_problems(checkout, 'pip install "./.refit-verify[tests]"')


def test_install_line_runs(tmp_path):
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is not installed here: pip would have to fetch it to build refit-verify's metadata")
    _, _, line = install_lines()[0]
    target, _ = requirement(line)
    (tmp_path / target[2:]).symlink_to(ROOT)
    args = [a for a in shlex.split(line)[2:]]
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--no-build-isolation",
                           "--disable-pip-version-check", "--quiet", "--report", "-", *args],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    names = [i["metadata"]["name"] for i in report["install"]]
    assert names == ["refit-verify"], names
    assert "does not provide the extra" not in proc.stderr, proc.stderr
