"""The report document and its atomic, incremental writer.

The JSON is rewritten after every job with status "incomplete"; only a run that reaches the end
flips it to "complete". So a run killed any way (even SIGKILL) leaves an honest partial report.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shlex
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from refit_verify.files import make_shareable
from refit_verify.report import SCHEMA


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def atomic_write(path: Path, text: str) -> None:
    """Readers see the old file or the new one, never half of one (temp file in the same dir + replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        make_shareable(tmp)  # mkstemp makes 0600; reports are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def command_line(argv: Optional[list[str]] = None) -> str:
    argv = sys.argv if argv is None else argv
    prog = Path(argv[0]).name if argv else "refit-verify"
    rest = shlex.join(argv[1:])
    if prog in ("__main__.py", "cli.py"):
        prog = "python -m refit_verify"
    return f"{prog} {rest}".strip()


@dataclass
class Report:
    kind: str  # "run" | "diff" | "pytest"
    run_id: str
    command: str
    options: dict = field(default_factory=dict)
    seeds: dict = field(default_factory=dict)
    environment: dict = field(default_factory=dict)
    jobs: list = field(default_factory=list)  # JobResult
    status: str = "incomplete"
    interrupted: Optional[str] = None
    started_at: str = field(default_factory=now_iso)
    finished_at: Optional[str] = None
    planned_jobs: list = field(default_factory=list)

    def verdict(self) -> str:
        v = [j.verdict for j in self.jobs]
        if "error" in v:
            return "error"
        if "fail" in v:
            return "fail"
        if self.status != "complete":
            return "incomplete"
        return "pass"

    def to_dict(self) -> dict:
        counts = {k: sum(j.verdict == k for j in self.jobs) for k in ("pass", "fail", "error", "skipped")}
        done = {j.name for j in self.jobs}
        return {
            "schema": SCHEMA,
            "kind": self.kind,
            "run_id": self.run_id,
            "status": self.status,
            "interrupted": self.interrupted,
            "verdict": self.verdict(),
            "counts": counts,
            "not_run": [n for n in self.planned_jobs if n not in done],
            "command": self.command,
            "cwd": os.getcwd(),
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "options": self.options,
            "seeds": self.seeds,
            "environment": self.environment,
            "jobs": [j.to_dict() for j in self.jobs],
        }


class ReportWriter:
    """Owns one report directory: json + md after every update, html when asked (plots cost time)."""

    def __init__(self, out_dir, report: Report, plots: bool = True):
        self.out = Path(out_dir)
        self.report = report
        self.plots = plots

    def write(self, html: bool = False) -> dict:
        from refit_verify.report import markdown

        data = self.report.to_dict()
        atomic_write(self.out / "report.json", json.dumps(data, indent=1, allow_nan=False) + "\n")
        atomic_write(self.out / "report.md", markdown.render(data))
        if html:
            from refit_verify.report import html as html_mod

            atomic_write(self.out / "report.html", html_mod.render(data, self.plots))
        return data

    def finish(self, status: str = "complete", interrupted: Optional[str] = None, step_summary: bool = True) -> dict:
        self.report.status = status
        self.report.interrupted = interrupted
        self.report.finished_at = now_iso()
        data = self.write(html=True)
        if step_summary:
            append_step_summary(self.out / "report.md")
        return data


def append_step_summary(md_path: Path) -> None:
    """GitHub Actions shows $GITHUB_STEP_SUMMARY on the run page; appending keeps other steps' notes."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return
    try:
        with open(target, "a", encoding="utf-8") as f:
            f.write(Path(md_path).read_text(encoding="utf-8") + "\n")
    except OSError as exc:
        print(f"refit-verify: could not write GITHUB_STEP_SUMMARY ({exc})", file=sys.stderr)


def load(path) -> dict:
    """A report.json (or a directory holding one); checks the schema so gate never misreads."""
    from refit_verify.errors import BadInputError

    p = Path(path)
    if p.is_dir():
        p = p / "report.json"
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInputError(f"no report at {p}") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise BadInputError(f"unreadable report {p}: {exc}") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise BadInputError(f"{p}: not a {SCHEMA} report (schema={data.get('schema') if isinstance(data, dict) else None!r})")
    return data
