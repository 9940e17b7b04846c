"""`run`: selected jobs one after another, the report rewritten after each, finished on any exit."""

from __future__ import annotations

import signal
from typing import Optional

from refit_verify.errors import Terminated  # re-exported: callers import it from here
from refit_verify.jobs import JobContext, error_result, load_errors, run_one, select_jobs
from refit_verify.report.document import Report, ReportWriter


def _on_sigterm(signum, frame):
    raise Terminated()


def run_jobs(ctx: JobContext, writer: ReportWriter, names: Optional[list[str]] = None, progress=None) -> Report:
    report = writer.report
    specs = select_jobs(ctx.suite, names)
    report.planned_jobs = [s.name for s in specs]
    previous = None
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread (e.g. called from a test runner thread)
        pass
    status, why = "incomplete", None
    try:
        for mod, err in sorted(load_errors().items()):
            report.jobs.append(error_result(f"import:{mod}", f"job module failed to import: {err}"))
        writer.write()
        for i, spec in enumerate(specs, 1):
            if progress:
                progress.job(i, len(specs), spec.name)
                ctx.progress = progress.step
            result = run_one(spec, ctx)
            report.jobs.append(result)
            writer.write()  # incremental: what finished survives whatever comes next
            if progress:
                progress.done(spec.name, result.verdict, result.duration_s)
        status = "complete"
    except KeyboardInterrupt:
        why = "interrupted (KeyboardInterrupt)"
        raise
    except Terminated:
        why = "terminated (SIGTERM)"
        raise
    except BaseException as exc:
        why = f"crashed: {type(exc).__name__}: {exc}"
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        writer.finish(status, why)
    return report
