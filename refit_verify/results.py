"""Plain result data shared by jobs, reports, the gate, the plugin and the CLI (imports nothing of ours)."""

from __future__ import annotations

from dataclasses import dataclass, field

VERDICTS = ("pass", "fail", "error", "skipped")


def without_subject(subject: str, reason: str) -> str:
    """The reason without a leading 'subject:' (comparisons name their tensor; the caller names it already)."""
    reason = str(reason)
    if subject and reason.startswith(f"{subject}:"):
        return reason[len(subject) + 1:].lstrip()
    return reason


def failure_line(case: str, reason: str) -> str:
    """'case: reason', the case named once, never cut: the details matter."""
    return f"{case}: {without_subject(case, reason)}"

@dataclass
class Failure:
    case: str
    reason: str
    repro: str = ""  # a shell command that reproduces this failure alone

    def to_dict(self) -> dict:
        return {"case": self.case, "reason": self.reason, "repro": self.repro}


@dataclass
class Figure:
    """One gateable number. `metric` uses the policy vocabulary (data/policy.toml)."""

    metric: str
    value: float
    subject: str = ""  # what was measured: tensor, case, preset/case ...

    def to_dict(self) -> dict:
        return {"metric": self.metric, "value": _json_number(self.value), "subject": self.subject}


@dataclass
class JobResult:
    name: str
    verdict: str = "pass"
    reason: str = ""
    metrics: dict = field(default_factory=dict)  # summary numbers, shown in the report
    figures: list[Figure] = field(default_factory=list)  # gated against the policy / baseline
    # Named row lists. Known names get plots: "tensors" (tensor, code_mismatch_rate, sqnr_db),
    # "block_mismatch" (tensor, counts [[..]]), "scale_ulp" (ulp_diff, count), "logits_kl" (position, kl).
    tables: dict[str, list[dict]] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    duration_s: float = 0.0
    repro: str = ""  # command that reruns the whole job

    def fail(self, case: str, reason: str, repro: str = "") -> None:
        self.failures.append(Failure(case, reason, repro))
        self.verdict = "fail" if self.verdict in ("pass", "fail") else self.verdict

    def figure(self, metric: str, value: float, subject: str = "") -> None:
        self.figures.append(Figure(metric, float(value), subject))

    def to_dict(self) -> dict:
        return {
            "name": self.name, "verdict": self.verdict, "reason": self.reason,
            "duration_s": round(self.duration_s, 3), "repro": self.repro,
            "metrics": {k: _json_number(v) for k, v in self.metrics.items()},
            "figures": [f.to_dict() for f in self.figures],
            "tables": _jsonable(self.tables),
            "failures": [f.to_dict() for f in self.failures],
        }


def _json_number(v):
    """JSON has no inf/nan: keep them as strings the gate parses back (never silently 0)."""
    if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
        return repr(v)
    return v


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float):
        return _json_number(obj)
    if hasattr(obj, "tolist"):
        return _jsonable(obj.tolist())
    return obj
