"""The facts a reader needs first, taken from a report dict: verdict, what was compared, the gated figures
against their thresholds, the worst of them, and the gate's warnings. Rendered by html.py and markdown.py
alike, so report.html's first screen and report.md (a PR comment) say the same thing."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

from refit_verify.report.policy import Policy, Rule, as_float, violates, warns

# recipes named by the jobs' metrics; shown in "what was compared"
_RECIPE_KEYS = {"trainer_recipe": "trainer", "engine_recipe": "engine", "engines": "case-set engines"}


@dataclass(frozen=True)
class GatedFigure:
    metric: str
    value: float  # the worst value of this metric over every job and subject
    subject: str
    job: str
    n: int  # how many figures of this metric the report holds
    threshold: str  # "max 0", "min 28 (warn below 30)"
    status: str  # "fail" | "warn" | "ok"
    closeness: float  # value relative to its limit (1.0 = at the limit; above 1 = beyond)
    source: str


@dataclass
class FirstScreen:
    verdict: str
    compared: str
    gated: list[GatedFigure] = field(default_factory=list)
    ungated: list[str] = field(default_factory=list)  # metrics the report emits that no rule gates
    warnings: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def gate(self) -> str:
        """What `refit-verify gate` says of this report under the default policy: 'pass' or 'fail'. A run can
        pass (every job's check held) while the gate fails on a figure, so the first screen says both."""
        return "fail" if self.failures else "pass"

    @property
    def worst(self) -> Optional[GatedFigure]:
        order = {"fail": 2, "warn": 1, "ok": 0}
        return max(self.gated, key=lambda g: (order[g.status], g.closeness), default=None)


def _threshold_text(rule: Rule) -> str:
    parts = []
    if rule.max is not None:
        parts.append(f"max {rule.max:g}")
    if rule.min is not None:
        parts.append(f"min {rule.min:g}")
    if rule.warn_max is not None:
        parts.append(f"warn above {rule.warn_max:g}")
    if rule.warn_min is not None:
        parts.append(f"warn below {rule.warn_min:g}")
    return ", ".join(parts) or "regression only"


def _badness(value: float, rule: Rule) -> float:
    """Higher is worse: the value's position relative to its hard limit (1.0 = at the limit)."""
    if math.isnan(value):
        return math.inf
    if rule.max is not None:
        return value / rule.max if rule.max > 0 else (math.inf if value > rule.max else (0.0 if value == rule.max else -1.0))
    if rule.min is not None:
        return rule.min / value if value > 0 else math.inf
    return 0.0


def gated_figures(data: dict, policy: Policy) -> tuple[list[GatedFigure], list[str]]:
    """The worst figure of every gated metric, and the names of the metrics no rule gates."""
    worst: dict[str, tuple] = {}
    counts: dict[str, int] = {}
    ungated: set[str] = set()
    for job in data.get("jobs", []):
        for f in job.get("figures", []) or []:
            metric = f.get("metric")
            rule = policy.rules.get(metric)
            if rule is None:
                ungated.add(str(metric))
                continue
            value = as_float(f.get("value"))
            counts[metric] = counts.get(metric, 0) + 1
            cand = (_badness(value, rule), value, str(f.get("subject", "")), job.get("name", ""))
            if metric not in worst or cand[0] > worst[metric][0]:
                worst[metric] = cand
    out = []
    for metric, (bad, value, subject, job) in sorted(worst.items()):
        rule = policy.rules[metric]
        status = "fail" if violates(value, rule) else ("warn" if warns(value, rule) else "ok")
        out.append(GatedFigure(metric, value, subject, job, counts[metric], _threshold_text(rule), status,
                               bad, rule.source))
    return out, sorted(ungated)


def compared_text(data: dict) -> str:
    """One line: model, suite, device and the recipes the jobs compared."""
    opts = data.get("options", {}) or {}
    model = opts.get("model") or opts.get("config") or "?"
    if opts.get("layers"):
        model += f" (first {opts['layers']} layers)"
    recipes: list[str] = []
    for job in data.get("jobs", []):
        for key, word in _RECIPE_KEYS.items():
            v = (job.get("metrics") or {}).get(key)
            if v and f"{word} {v}" not in recipes:
                recipes.append(f"{word} {v}")
    jobs = len(data.get("jobs", []))
    parts = [f"model {model}", f"suite {opts.get('suite', '?')}", f"device {opts.get('device', '?')}",
             f"{jobs} job{'s' if jobs != 1 else ''}"]
    if recipes:
        parts.append("recipes: " + ", ".join(recipes))
    return " · ".join(parts)


def first_screen(data: dict, policy: Optional[Policy] = None) -> FirstScreen:
    """Never raises on a well-formed report; an unreadable policy leaves the gated list empty."""
    from refit_verify.report.gate import GateResult, check_limits, check_status

    if policy is None:
        from refit_verify.report.policy import load_policy

        policy = load_policy()
    gated, ungated = gated_figures(data, policy)
    res = GateResult()
    check_limits(data, policy, res)
    failures = check_status(data, policy) + res.failures
    return FirstScreen(data.get("verdict", "incomplete"), compared_text(data), gated, ungated,
                       res.warnings, failures)


def fmt_duration(seconds) -> str:
    """'0.3 s', '45 ms', '<1 ms': never '0.0s' for a job that did run."""
    s = as_float(seconds)
    if math.isnan(s):
        return "?"
    if s >= 1:
        return f"{s:.1f} s"
    if s >= 0.001:
        return f"{s * 1000:.0f} ms"
    return "<1 ms"
