"""check_quantizer: run a user's quantizer callable on the case set and compare it with a recipe.

Verdicts per case: "pass" (bit-identical, or both the reference and the user's code refuse the input),
"fail" (bytes or scales differ), "error" (the user's code raised, exited, returned the wrong type or
timed out). Errors and mismatches are counted apart: a case that raised never reads as "differs".
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from refit_verify.cases import Case, case_set, default_cases
from refit_verify.compare.bitwise import compare_fp8, normalize_scale
from refit_verify.compare.metrics import error_metrics
from refit_verify.errors import RecipeFailure
from refit_verify.fp8 import dequantize, get_recipe, quantize
from refit_verify.fp8 import format as fmt
from refit_verify.results import JobResult
from refit_verify.usercode import UserExit, call_user, describe_user_exception

QuantizerFn = Callable[[torch.Tensor], tuple]


@dataclass
class CaseResult:
    case: str
    seed: int
    verdict: str  # "pass" | "fail" | "error"
    reason: str = ""
    metrics: dict = field(default_factory=dict)
    first_mismatch: Optional[dict] = None
    repro: str = ""
    output: str = ""  # what the user's code printed during this case (stdout and stderr)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class CheckResult:
    reference: str
    cases: list[CaseResult]

    @property
    def ok(self) -> bool:
        return all(c.verdict == "pass" for c in self.cases)

    def failures(self) -> list[CaseResult]:
        return [c for c in self.cases if c.verdict != "pass"]

    def count(self, verdict: str) -> int:
        return sum(c.verdict == verdict for c in self.cases)

    def summary(self) -> str:
        """`3 cases raised, 0 differ (of 25)`: errors and mismatches apart."""
        return f"{self.count('error')} cases raised, {self.count('fail')} differ (of {len(self.cases)})"


class UserOutputError(TypeError):
    """The user's quantizer returned something that is not (float8 data, float32 scale_inv)."""


def _type_name(x) -> str:
    return str(x.dtype) if isinstance(x, torch.Tensor) else type(x).__name__


# scale dtypes that widen to float32 exactly (AReaL and compressed-tensors compute scales in the weight's
# bf16); float64 is refused: it would be rounded on its way to the engine's float32 weight_scale_inv
EXACT_SCALE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def as_pair(out, name, e8m0: bool = False):
    """(fp8_data, scale_inv) from the user's return value, or UserOutputError saying what came back.

    `e8m0` (an MXFP8 recipe): E8M0 scale bytes (uint8 or float8_e8m0fnu, as vLLM/TE/flashinfer return them)
    are accepted and read as the powers of two they encode (0xFF is NaN)."""
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        got = f"a {type(out).__name__} of {len(out)}" if isinstance(out, (tuple, list)) else _type_name(out)
        raise UserOutputError(f"{name}: quantizer must return (fp8_data, scale_inv), got {got}")
    data, scale = out
    if not isinstance(data, torch.Tensor) or data.dtype not in (torch.float8_e4m3fn, torch.uint8):
        raise UserOutputError(f"{name}: fp8_data must be float8_e4m3fn (or its uint8 view), got {_type_name(data)}")
    if e8m0 and isinstance(scale, torch.Tensor) and scale.dtype in fmt.E8M0_DTYPES:
        return data, fmt.e8m0_to_scale(scale.view(torch.uint8))
    if not isinstance(scale, torch.Tensor) or scale.dtype not in EXACT_SCALE_DTYPES:
        # the contract (and `diff`, and the engine's weight_scale_inv) is float32; a float64 scale
        # would be rounded on the way to the engine, so comparing it after .float() would hide that
        raise UserOutputError(f"{name}: scale_inv must be a float32 tensor (or bf16/fp16, which widen "
                              f"exactly), got {_type_name(scale)}")
    return data, scale


def run_user(impl: QuantizerFn, x: torch.Tensor) -> tuple[object, str]:
    """Call the user's quantizer with its prints captured; (return value or the exception, output)."""
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            out = call_user(impl, x)
    except Exception as exc:  # a user callable may raise anything; it must not lose the report
        return exc, _clip(buf.getvalue())
    return out, _clip(buf.getvalue())


def _clip(text: str, limit: int = 20_000) -> str:
    return text if len(text) <= limit else text[:limit] + f"\n... {len(text) - limit} more characters"


def check_case(impl: QuantizerFn, recipe, case: Case, repro: str = "", run=run_user) -> CaseResult:
    r = get_recipe(recipe)
    x = case.tensor()
    base = dict(case=case.name, seed=case.seed, repro=repro.format(case=case.name, seed=case.seed))
    try:
        ref = quantize(x, r, name=case.name)
    except RecipeFailure as exc:
        ref = exc
    out, base["output"] = run(impl, x.clone())
    if isinstance(out, BaseException):
        if isinstance(ref, RecipeFailure) and not isinstance(out, UserExit):
            return CaseResult(verdict="pass", reason=f"both refuse the input: reference {ref.cause!r}, "
                              f"yours {type(out).__name__}: {out}", **base)
        verb = "failed:" if isinstance(out, UserExit) and getattr(out, "description", None) else "raised"
        return CaseResult(verdict="error", reason=f"quantizer {verb} {describe_user_exception(out)}", **base)
    try:
        data, scale = as_pair(out, case.name, e8m0=r.block == (1, 32))
    except UserOutputError as exc:
        return CaseResult(verdict="error", reason=f"wrong return type: {exc}", **base)
    if isinstance(ref, RecipeFailure):
        return CaseResult(verdict="fail", reason=f"reference refuses the input ({ref.cause!r}) but yours returned "
                          f"data {tuple(data.shape)}", **base)
    try:
        return _compare_case(x, ref, data, scale, r, case, base)
    except Exception as exc:  # meta tensors, odd shapes: the user's output, not the harness, is at fault
        return CaseResult(verdict="error", reason="comparing the quantizer's output failed: "
                          f"{type(exc).__name__}: {exc}", **base)


def _compare_case(x, ref, data, scale, r, case: Case, base: dict) -> CaseResult:
    scale = normalize_scale(scale, data.shape, r.block)
    cmp = compare_fp8(ref.data, ref.scale_inv, data.view(torch.float8_e4m3fn), scale, r.block, case.name)
    metrics = {
        "code_mismatch_rate": cmp.code_mismatch_rate,
        "n_code_mismatch": cmp.n_code_mismatch,
        "n_scale_mismatch": cmp.n_scale_mismatch,
        "ulp_histogram": cmp.ulp_histogram,
    }
    if cmp.first_mismatch is None or cmp.first_mismatch.kind != "shape":
        metrics.update(error_metrics(x.float(), dequantize(data.view(torch.float8_e4m3fn), scale, r.block)))
    if cmp.equal:
        return CaseResult(verdict="pass", metrics=metrics, **base)
    reason = describe_mismatch(cmp.first_mismatch, ref, data, scale)
    return CaseResult(verdict="fail", reason=reason, metrics=metrics, first_mismatch=cmp.first_mismatch.to_dict(),
                      **base)


def _e4m3_value(code: int) -> float:
    return float(torch.tensor([code], dtype=torch.uint8).view(torch.float8_e4m3fn).float())


def describe_mismatch(mm, ref, data, scale) -> str:
    """The first mismatch with each value labelled: reference= (the recipe) and yours= (the user's)."""
    if mm.kind == "shape":
        return (f"{mm.tensor}: shape mismatch: data reference={tuple(ref.data.shape)} yours={tuple(data.shape)}, "
                f"scale_inv reference={tuple(ref.scale_inv.shape)} yours={tuple(scale.shape)}")
    where = f"{mm.tensor}: first {mm.kind} mismatch in block {mm.block}"
    if mm.element is not None:
        ra, ya = _e4m3_value(mm.a_code) * mm.a_scale, _e4m3_value(mm.b_code) * mm.b_scale
        where += (f", element {mm.element}: code reference=0x{mm.a_code:02x} yours=0x{mm.b_code:02x}"
                  f" (dequantized reference={ra:.6g} yours={ya:.6g})")
    return where + f"; scale_inv reference={mm.a_scale!r} yours={mm.b_scale!r}"


def iter_check(impl: QuantizerFn, reference_recipe, cases: list[Case], repro: str = "", run=run_user):
    """One CaseResult per case, as each finishes (an interrupted check keeps the finished ones)."""
    r = get_recipe(reference_recipe)
    for c in cases:
        yield check_case(impl, r, c, repro, run)


def check_quantizer(impl: QuantizerFn, reference_recipe="vllm_per_block", cases: Optional[list[Case]] = None,
                    seed: int = 0, repro: str = "", run=run_user) -> CheckResult:
    """Run `impl(w) -> (fp8_data, scale_inv)` on every case; bitwise verdict against the recipe."""
    r = get_recipe(reference_recipe)
    cases = case_set(seed, r.block) if cases is None else cases
    repro = repro or default_repro(impl, r.name, seed)
    return CheckResult(reference=r.name, cases=list(iter_check(impl, r, cases, repro, run)))


def default_repro(impl, recipe_name: str, base_seed: int) -> str:
    """The command that reruns one case, as a template of {case}: a CLI line when the callable can be
    imported by name, else the Python call (a lambda or a __main__ function has no import path)."""
    module, qualname = getattr(impl, "__module__", None), getattr(impl, "__qualname__", "")
    if module and module != "__main__" and qualname and "<" not in qualname:
        return (f"refit-verify check --quantizer {module}:{qualname} --against {recipe_name} "
                f"--case {{case}} --seed {base_seed}")
    return (f"check_quantizer(<your quantizer>, {recipe_name!r}, "
            f"cases=[c for c in default_cases({base_seed}) if c.name == '{{case}}'])")


def print_check_result(result: CheckResult, quiet: bool = False, show_output: bool = False, out=None) -> int:
    """The verdict first, then each failing case, then what the user's code printed; returns the exit code."""
    import sys

    out = out or sys.stdout
    fails = result.failures()
    if not fails:
        print(f"PASS: {len(result.cases)}/{len(result.cases)} cases bit-identical to {result.reference}", file=out)
    else:
        first = fails[0]
        what = "first error" if first.verdict == "error" else "first mismatch"
        print(f"FAIL: {result.summary()} vs {result.reference}", file=out)
        print(f"{what}: case {first.case} (seed {first.seed}): {first.reason}", file=out)
        print(f"reproduce: {first.repro}", file=out)
        if not quiet:
            for f in fails[1:]:
                print(f"  {f.verdict:5s} {f.case}: {f.reason[:200]}", file=out)
    _print_user_output(result, show_output, out)
    return 0 if not fails else 1


def _print_user_output(result: CheckResult, show_all: bool, out, limit: int = 20) -> None:
    printed = [c for c in result.cases if c.output]
    if not printed:
        return
    print(f"your quantizer printed during {len(printed)} case(s):", file=out)
    shown = 0
    for c in printed:
        lines = c.output.rstrip("\n").splitlines()
        for line in lines if show_all else lines[: max(0, limit - shown)]:
            print(f"  [{c.case}] {line}", file=out)
        shown += len(lines)
    if not show_all and shown > limit:
        print(f"  ... {shown - limit} more line(s); -v shows all", file=out)


def check_job(result: CheckResult) -> JobResult:
    """The check as one report job: each failing case (marked error or fail), counts kept apart."""
    job = JobResult("check")
    for c in result.cases:
        if c.verdict != "pass":
            job.fail(c.case, f"{c.verdict}: {c.reason}", c.repro)
        if "sqnr_db" in c.metrics and c.case.startswith("randn_"):
            job.figure("sqnr_db", c.metrics["sqnr_db"], c.case)
    job.reason = "" if result.ok else result.summary()
    job.metrics = {"cases": len(result.cases), "cases_raised": result.count("error"),
                   "cases_differ": result.count("fail")}
    job.tables["cases"] = [{k: v for k, v in c.to_dict().items() if k != "first_mismatch"} for c in result.cases]
    return job


def run_check(spec: str, kwargs_json, recipe, cases: list[Case], seed: int, timeout_s: float, in_process: bool,
              out: Optional[str] = None, command: str = "") -> CheckResult:
    """`refit-verify check`: the user's SPEC on each case, isolated in a child process unless in_process.

    A report (with --out) is written in every outcome: complete, or marked incomplete with the finished
    cases when interrupted (^C, SIGTERM) or when the harness itself fails."""
    import shlex

    from refit_verify.usercode import load_callable
    from refit_verify.userworker import DEFAULT_TIMEOUT_S, IsolatedQuantizer

    base = ["refit-verify", "check", "--quantizer", spec] + (["--kwargs", kwargs_json] if kwargs_json else [])
    base += ["--timeout", f"{timeout_s:g}"] if timeout_s != DEFAULT_TIMEOUT_S else []
    base += ["--in-process"] if in_process else []
    # iter_check fills {case} with str.format: braces of the user's JSON must be escaped
    fixed = shlex.join(base + ["--against", recipe.name, "--case"]).replace("{", "{{").replace("}", "}}")
    repro = fixed + " {case} --seed " + str(seed)
    if in_process:
        impl, run = load_callable(spec, kwargs_json), run_user
    else:
        impl = run = IsolatedQuantizer(spec, kwargs_json, timeout_s)
    result = CheckResult(reference=recipe.name, cases=[])
    status, why = "incomplete", None
    try:
        if not in_process:
            run.start()  # a module that can't load is one usage error (exit 2), not an error per case
        for case_result in iter_check(impl, recipe, cases, repro, run):
            result.cases.append(case_result)
        status = "complete"
    except BaseException as exc:
        why = f"{type(exc).__name__}: {exc} (after {len(result.cases)}/{len(cases)} cases)".replace(": (", " (")
        raise
    finally:
        if not in_process:
            run.close()
        if out:
            _write_report(out, result, spec, seed, command, status, why, [c.name for c in cases])
    return result


def _write_report(out, result, spec, seed, command, status, why, planned) -> None:
    import datetime as dt
    import os

    from refit_verify.report import env
    from refit_verify.report.document import Report, ReportWriter

    job = check_job(result)
    if status != "complete":  # cases never run must not read as a pass
        job.verdict, job.reason = "error", f"{status}: {why}"
    run_id = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
    rep = Report("check", run_id, command, options={"quantizer": spec, "against": result.reference,
                 "cases": planned}, seeds={"base": seed}, environment=env.collect("cpu"), jobs=[job],
                 planned_jobs=["check"])
    ReportWriter(out, rep).finish(status, why)
