"""Policy files: thresholds per figure name, each with its source. TOML or JSON."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Optional

from refit_verify.errors import BadInputError

POLICY_SCHEMA = "refit-verify/policy@1"


def as_float(v) -> float:
    """Report numbers: JSON numbers, or 'inf'/'-inf'/'nan' strings (JSON has no such literals)."""
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan  # unparseable is treated as NaN: it fails every limit


@dataclass(frozen=True)
class Rule:
    metric: str
    max: Optional[float] = None
    min: Optional[float] = None
    warn_max: Optional[float] = None
    warn_min: Optional[float] = None
    better: Optional[str] = None
    regress_abs: float = 0.0
    regress_rel: float = 0.0
    source: str = ""


@dataclass
class Policy:
    rules: dict[str, Rule]
    require_complete: bool = True
    fail_on_verdicts: tuple = ("fail", "error")
    skip_is_regression: bool = True
    path: str = ""
    raw: dict = field(default_factory=dict, repr=False)
    reported: dict = field(default_factory=dict)  # figure name -> why it is shown but not gated


def violates(value: float, rule: Rule) -> Optional[str]:
    """Why `value` breaks the hard limits of `rule`, or None. NaN breaks every limit."""
    # Written with negations so NaN (all comparisons False) fails rather than slips through.
    if rule.max is not None and not (value <= rule.max):
        return f"{value:.6g} > max {rule.max:g}"
    if rule.min is not None and not (value >= rule.min):
        return f"{value:.6g} < min {rule.min:g}"
    return None


def warns(value: float, rule: Rule) -> Optional[str]:
    if rule.warn_max is not None and value > rule.warn_max:
        return f"{value:.6g} > warn_max {rule.warn_max:g}"
    if rule.warn_min is not None and value < rule.warn_min:
        return f"{value:.6g} < warn_min {rule.warn_min:g}"
    return None


def default_policy_path() -> Path:
    return Path(str(resources.files("refit_verify") / "data" / "policy.toml"))


def load_policy(path=None) -> Policy:
    p = Path(path) if path else default_policy_path()
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise BadInputError(f"cannot read policy {p}: {exc}") from None
    try:
        if p.suffix == ".json":
            raw = json.loads(text)
        else:
            import tomllib

            raw = tomllib.loads(text)
    except ValueError as exc:  # both JSONDecodeError and TOMLDecodeError
        raise BadInputError(f"policy {p} does not parse: {exc}") from None
    if raw.get("schema", POLICY_SCHEMA) != POLICY_SCHEMA:
        raise BadInputError(f"policy {p}: schema {raw.get('schema')!r}, expected {POLICY_SCHEMA}")
    known = set(Rule.__dataclass_fields__) - {"metric"}
    rules = {}
    for name, spec in raw.get("metrics", {}).items():
        unknown = set(spec) - known
        if unknown:  # a typo such as "maxx" would otherwise disable a limit silently
            raise BadInputError(f"policy {p}: metrics.{name} has unknown key(s) {sorted(unknown)}")
        if spec.get("better") not in (None, "lower", "higher"):
            raise BadInputError(f"policy {p}: metrics.{name}.better must be 'lower' or 'higher'")
        rules[name] = Rule(metric=name, **spec)
    reported = dict(raw.get("reported", {}))
    both = sorted(set(reported) & set(rules))
    if both:
        raise BadInputError(f"policy {p}: {both} both gated ([metrics]) and reported-only ([reported])")
    g = raw.get("gate", {})
    return Policy(rules, g.get("require_complete", True), tuple(g.get("fail_on_verdicts", ("fail", "error"))),
                  g.get("skip_is_regression", True), str(p), raw, reported)
