"""`gate`: a report against a policy's limits and, optionally, a baseline report."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

from refit_verify.errors import BadInputError
from refit_verify.report.policy import Policy, Rule, as_float, violates, warns
from refit_verify.results import VERDICTS


@dataclass
class GateResult:
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.failures


def _figures(report: dict):
    for job in report.get("jobs", []):
        for f in job.get("figures", []):
            yield job["name"], f["metric"], f.get("subject", ""), as_float(f["value"])


def check_status(report: dict, policy: Policy) -> list[str]:
    out = []
    if policy.require_complete and report.get("status") != "complete":
        out.append(f"report is {report.get('status')!r} ({report.get('interrupted') or 'not finished'}); "
                   f"not run: {', '.join(report.get('not_run', [])) or '-'}")
    for job in report.get("jobs", []):
        if job["verdict"] in policy.fail_on_verdicts:
            out.append(f"job {job['name']} {job['verdict']}: {job.get('reason') or (job.get('failures') or [{}])[0].get('reason', '')}")
    return out


def check_limits(report: dict, policy: Policy, result: GateResult) -> None:
    for job, metric, subject, value in _figures(report):
        rule = policy.rules.get(metric)
        if rule is None:
            continue
        result.checked += 1
        why = violates(value, rule)
        if why:
            result.failures.append(f"{job}: {metric} {subject}: {why} ({rule.source})")
        elif warns(value, rule):
            result.warnings.append(f"{job}: {metric} {subject}: {warns(value, rule)}")


def _worse_by(new: float, old: float, rule: Rule) -> Optional[float]:
    """How much `new` is worse than `old` beyond the allowed tolerance, or None."""
    if math.isnan(new) and not math.isnan(old):
        return math.inf
    if math.isnan(new) or math.isnan(old) or new == old:
        return None
    delta = (new - old) if rule.better == "lower" else (old - new)
    tol = rule.regress_abs
    if math.isfinite(old):
        tol = max(tol, rule.regress_rel * abs(old))
    return delta if delta > tol else None


def find_regressions(report: dict, baseline: dict, policy: Policy) -> list[str]:
    out = []
    old = {(j, m, s): v for j, m, s, v in _figures(baseline)}
    for j, m, s, v in _figures(report):
        rule = policy.rules.get(m)
        if rule is None or rule.better is None or (j, m, s) not in old:
            continue
        worse = _worse_by(v, old[(j, m, s)], rule)
        if worse is not None:
            out.append(f"{j}: {m} {s}: regressed {old[(j, m, s)]:.6g} -> {v:.6g} "
                       f"(tolerance {max(rule.regress_abs, rule.regress_rel * abs(old[(j, m, s)]) if math.isfinite(old[(j, m, s)]) else rule.regress_abs):g})")
    old_verdicts = {j["name"]: j["verdict"] for j in baseline.get("jobs", [])}
    for job in report.get("jobs", []):
        before = old_verdicts.get(job["name"])
        if before == "pass" and job["verdict"] == "skipped" and policy.skip_is_regression:
            out.append(f"job {job['name']} passed in the baseline but is skipped now ({job.get('reason', '')})")
    missing = set(old_verdicts) - {j["name"] for j in report.get("jobs", [])}
    for name in sorted(missing):
        if old_verdicts[name] == "pass":
            out.append(f"job {name} ran in the baseline but is absent now")
    return out


STATUSES = ("complete", "incomplete")
FIGURE_KEYS = {"metric", "value", "subject"}


def _report_keys() -> set:
    from refit_verify.report.document import Report

    return set(Report("run", "", "").to_dict())


def _job_keys() -> set:
    from refit_verify.results import JobResult

    return set(JobResult("x").to_dict())


def _validate_job(job, where: str) -> None:
    if not isinstance(job, dict):
        raise BadInputError(f"{where}: a job must be an object, got {type(job).__name__}")
    if not isinstance(job.get("name"), str) or not job["name"]:
        raise BadInputError(f"{where}: job without a 'name'")
    unknown = sorted(set(job) - _job_keys())
    if unknown:
        raise BadInputError(f"{where}: job {job['name']}: unknown key(s) {unknown}")
    if job.get("verdict") not in VERDICTS:
        raise BadInputError(f"{where}: job {job['name']}: 'verdict' {job.get('verdict')!r} is not one of "
                            f"{', '.join(VERDICTS)}")
    for key, typ in (("reason", str), ("failures", list), ("figures", list), ("metrics", dict), ("tables", dict)):
        if key in job and not isinstance(job[key], typ):
            raise BadInputError(f"{where}: job {job['name']}: '{key}' must be a {typ.__name__}, "
                                f"got {type(job[key]).__name__}")
    for f in job.get("figures", []):
        _validate_figure(f, job["name"], where)


def _validate_figure(f, job: str, where: str) -> None:
    if not isinstance(f, dict) or not isinstance(f.get("metric"), str) or "value" not in f:
        raise BadInputError(f"{where}: job {job}: a figure needs 'metric' and 'value', got {f!r:.80}")
    unknown = sorted(set(f) - FIGURE_KEYS)
    if unknown:
        raise BadInputError(f"{where}: job {job}: figure {f['metric']}: unknown key(s) {unknown}")
    v = f["value"]
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):  # strings: 'inf'/'nan' (JSON has none)
        raise BadInputError(f"{where}: job {job}: figure {f['metric']}: 'value' must be a number, "
                            f"got {type(v).__name__}")
    if not isinstance(f.get("subject", ""), str):
        raise BadInputError(f"{where}: job {job}: figure {f['metric']}: 'subject' must be a string")


def validate_report(report, where: str = "report") -> None:
    """Fail closed: a report the gate does not fully understand is bad input (exit 2), never a pass."""
    if not isinstance(report, dict):
        raise BadInputError(f"{where}: expected a JSON object, got {type(report).__name__}")
    unknown = sorted(set(report) - _report_keys())
    if unknown:
        raise BadInputError(f"{where}: unknown top-level key(s) {unknown}")
    if report.get("status") not in STATUSES:
        raise BadInputError(f"{where}: 'status' {report.get('status')!r} is not one of {', '.join(STATUSES)}")
    if not isinstance(report.get("not_run", []), list):
        raise BadInputError(f"{where}: 'not_run' must be a list, got {type(report['not_run']).__name__}")
    jobs = report.get("jobs")
    if not isinstance(jobs, list) or not jobs:
        raise BadInputError(f"{where}: 'jobs' must be a non-empty list, got {jobs!r:.60}")
    for job in jobs:
        _validate_job(job, where)
    names = [j["name"] for j in jobs]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise BadInputError(f"{where}: job name(s) {dup} appear more than once in 'jobs'")


def gate(report: dict, policy: Policy, baseline: Optional[dict] = None) -> GateResult:
    validate_report(report)
    if baseline is not None:
        validate_report(baseline, "baseline")
    res = GateResult()
    res.failures += check_status(report, policy)
    check_limits(report, policy, res)
    if baseline is not None:
        res.failures += find_regressions(report, baseline, policy)
    return res
