"""Job registry: the units `refit-verify run` executes and reports on.

A job is `fn(ctx: JobContext) -> JobResult`, registered with `@register_job`. Modules holding jobs
are imported lazily (JOB_MODULES), so the CLI starts fast. A module that fails to import is *not*
silent: it becomes an "error" job naming the import failure.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from refit_verify.layout import SINGLE, Layout
from refit_verify.results import VERDICTS, Failure, Figure, JobResult  # noqa: F401 (re-exported)

# Modules imported to populate the registry. Add yours here (or call register_job from anywhere
# imported before `run`). Missing modules are skipped; modules that raise on import become errors.
JOB_MODULES = [
    "refit_verify.jobs.builtin",
    "refit_verify.jobs.refit",  # the refit pipeline and its hazards
    "refit_verify.jobs.model",  # logits differential
    "refit_verify.jobs.vllm",  # real-vLLM jobs (need vllm; vllm itself is imported lazily)
    "refit_verify.jobs.sharded",  # sharded (tp/ep/pp) reference engine: per-rank refit, ledger, audits
]


@dataclass
class JobContext:
    suite: str = "pr"
    device: str = "cpu"
    config: str = "tiny-llama"
    model_path: Optional[str] = None
    seed: int = 0
    layers: Optional[int] = None
    options: dict = field(default_factory=dict)  # free-form (--set key=value), e.g. trainer_recipe
    progress: Callable[[str], None] = lambda msg: None  # per-step message, shown on stderr
    cli_prefix: str = "refit-verify"
    layout: Layout = SINGLE  # engine parallel layout (--tp/--ep/--pp); jobs that are single-rank ignore it

    def repro_run(self, job: str) -> str:
        parts = [self.cli_prefix, "run", "--job", job, "--seed", str(self.seed), "--device", self.device]
        parts += ["--model", self.model_path] if self.model_path else ["--config", self.config]
        if self.layers is not None:
            parts += ["--layers", str(self.layers)]
        for dim, size in self.layout.to_dict().items():
            parts += [f"--{dim}", str(size)] if size != 1 else []
        for k, v in sorted(self.options.items()):
            parts += ["--set", f"{k}={v}"]
        import shlex

        return shlex.join(parts)


@dataclass(frozen=True)
class JobSpec:
    name: str
    fn: Callable[[JobContext], JobResult]
    suites: tuple[str, ...]
    needs: tuple[str, ...]  # "cuda", "vllm", or "module:<dotted>"
    doc: str = ""


_REGISTRY: dict[str, JobSpec] = {}
_LOAD_ERRORS: dict[str, str] = {}
_loaded = False


def register_job(name: str, suites=("pr", "full"), needs=()):
    """Decorator: `@register_job("refit_pipeline", suites=("pr", "nightly", "full"), needs=("cuda",))`."""

    def deco(fn):
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise ValueError(f"job {name!r} registered twice ({_REGISTRY[name].fn.__module__} and {fn.__module__})")
        _REGISTRY[name] = JobSpec(name, fn, tuple(suites), tuple(needs), (fn.__doc__ or "").strip().split("\n")[0])
        return fn

    return deco


def load_job_modules() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    # Extra job modules without editing this file: REFIT_VERIFY_JOB_MODULES=pkg.jobs,other.jobs
    extra = [m.strip() for m in os.environ.get("REFIT_VERIFY_JOB_MODULES", "").split(",") if m.strip()]
    for mod in JOB_MODULES + extra:
        try:
            importlib.import_module(mod)
        except Exception as exc:  # a broken job module must show up in the report, not vanish
            _LOAD_ERRORS[mod] = _summary(exc)


def all_jobs() -> dict[str, JobSpec]:
    load_job_modules()
    return dict(_REGISTRY)


def select_jobs(suite: str, names: Optional[list[str]] = None) -> list[JobSpec]:
    jobs = all_jobs()
    if names:
        unknown = [n for n in names if n not in jobs]
        if unknown:
            from refit_verify.errors import BadInputError

            raise BadInputError(f"unknown job(s) {', '.join(unknown)}; known: {', '.join(sorted(jobs))}")
        return [jobs[n] for n in names]
    return [j for j in jobs.values() if suite in j.suites]


def load_errors() -> dict[str, str]:
    load_job_modules()
    return dict(_LOAD_ERRORS)


def unmet_need(spec: JobSpec, ctx: JobContext) -> Optional[str]:
    for need in spec.needs:
        if need == "cuda":
            import torch

            if not torch.cuda.is_available():
                return "needs a CUDA device (none available)"
            if ctx.device != "cuda":
                return "needs --device cuda"
        elif need == "vllm":
            if importlib.util.find_spec("vllm") is None:
                return "needs vllm installed (pip install refit-verify[vllm])"
        elif need.startswith("module:"):
            if importlib.util.find_spec(need[7:]) is None:
                return f"needs {need[7:]} (not available in this build)"
    return None


def _summary(exc: BaseException) -> str:
    """Last frames and the message: enough to locate the bug, short enough for a report row."""
    tb = traceback.extract_tb(exc.__traceback__)[-3:]
    where = " <- ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} {f.name}" for f in reversed(tb))
    return f"{type(exc).__name__}: {exc}" + (f" (at {where})" if where else "")


def run_one(spec: JobSpec, ctx: JobContext) -> JobResult:
    """Run a job; an exception becomes an "error" result (the report must still be written)."""
    start = time.perf_counter()
    reason = unmet_need(spec, ctx)
    if reason:
        res = JobResult(spec.name, verdict="skipped", reason=reason)
    else:
        try:
            res = spec.fn(ctx)
            if not isinstance(res, JobResult):
                raise TypeError(f"job {spec.name} returned {type(res).__name__}, expected JobResult")
            if res.verdict not in VERDICTS:
                raise ValueError(f"job {spec.name} returned verdict {res.verdict!r}")
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            res = JobResult(spec.name, verdict="error", reason=_summary(exc))
    res.duration_s = time.perf_counter() - start
    if not res.repro:
        res.repro = ctx.repro_run(spec.name)
    return res


def error_result(name: str, reason: str) -> Any:
    return JobResult(name, verdict="error", reason=reason)
