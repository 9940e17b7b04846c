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
    validate_policy(raw, str(p))
    rules = {name: Rule(metric=name, **spec) for name, spec in raw.get("metrics", {}).items()}
    reported = dict(raw.get("reported", {}))
    g = raw.get("gate", {})
    return Policy(rules, g.get("require_complete", True), tuple(g.get("fail_on_verdicts", ("fail", "error"))),
                  g.get("skip_is_regression", True), str(p), raw, reported)


TOP_KEYS = {"schema", "gate", "metrics", "reported"}
GATE_KEYS = {"require_complete": bool, "fail_on_verdicts": list, "skip_is_regression": bool}
NUMBER_KEYS = ("max", "min", "warn_max", "warn_min", "regress_abs", "regress_rel")
# figures that can be negative; for every other metric (counts, rates, errors, divergences) a negative
# upper limit can never be met, so it is a mistake, not a policy
SIGNED_METRICS = {"sqnr_db", "logits_cosine"}


def _bad(where: str, message: str) -> BadInputError:
    return BadInputError(f"policy {where}: {message}")


def validate_policy(raw, where: str) -> None:
    """Fail closed: every key known, every type right, every limit satisfiable; else exit 2 naming the key."""
    if not isinstance(raw, dict):
        raise _bad(where, f"expected a table/object, got {type(raw).__name__}")
    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        raise _bad(where, f"unknown top-level key(s) {unknown} (known: {sorted(TOP_KEYS)})")
    if raw.get("schema", POLICY_SCHEMA) != POLICY_SCHEMA:
        raise _bad(where, f"schema {raw.get('schema')!r}, expected {POLICY_SCHEMA}")
    _validate_gate_section(raw.get("gate", {}), where)
    metrics = raw.get("metrics")
    if not isinstance(metrics, dict) or not metrics:
        raise _bad(where, f"'metrics' must be a non-empty table of [metrics.NAME] rules, got {metrics!r:.60}")
    for name, spec in metrics.items():
        _validate_rule(name, spec, where)
    reported = raw.get("reported", {})
    if not isinstance(reported, dict):
        raise _bad(where, f"'reported' must be a table, got {type(reported).__name__}")
    both = sorted(set(reported) & set(metrics))
    if both:
        raise _bad(where, f"{both} both gated ([metrics]) and reported-only ([reported])")


def _validate_gate_section(g, where: str) -> None:
    from refit_verify.results import VERDICTS

    if not isinstance(g, dict):
        raise _bad(where, f"'gate' must be a table, got {type(g).__name__}")
    for key, value in g.items():
        if key not in GATE_KEYS:
            raise _bad(where, f"gate.{key} is not a known key (known: {sorted(GATE_KEYS)})")
        if not isinstance(value, GATE_KEYS[key]):
            raise _bad(where, f"gate.{key} must be a {GATE_KEYS[key].__name__}, got {type(value).__name__} {value!r}")
    for v in g.get("fail_on_verdicts", []):
        if v not in VERDICTS:
            raise _bad(where, f"gate.fail_on_verdicts: {v!r} is not a verdict ({', '.join(VERDICTS)})")


def _validate_rule(name: str, spec, where: str) -> None:
    key = f"metrics.{name}"
    if not isinstance(spec, dict):
        raise _bad(where, f"{key} must be a table, got {type(spec).__name__}")
    unknown = set(spec) - (set(Rule.__dataclass_fields__) - {"metric"})
    if unknown:  # a typo such as "maxx" would otherwise disable a limit silently
        raise _bad(where, f"{key} has unknown key(s) {sorted(unknown)}")
    for k in NUMBER_KEYS:
        v = spec.get(k)
        if v is None and k in ("max", "min", "warn_max", "warn_min"):  # JSON null: no such limit
            continue
        if k not in spec:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _bad(where, f"{key}.{k} must be a number, got {type(v).__name__} {v!r}")
        if not math.isfinite(v):
            raise _bad(where, f"{key}.{k} must be finite, got {v!r}")
    if spec.get("better") not in (None, "lower", "higher"):
        raise _bad(where, f"{key}.better must be 'lower' or 'higher', got {spec.get('better')!r}")
    if not isinstance(spec.get("source", ""), str):
        raise _bad(where, f"{key}.source must be a string")
    if spec.get("max") is None and spec.get("min") is None and spec.get("better") is None:
        raise _bad(where, f"{key} gates nothing: give max, min or better")
    _validate_limits(name, spec, where)


def _validate_limits(name: str, spec: dict, where: str) -> None:
    key = f"metrics.{name}"
    for k in ("regress_abs", "regress_rel"):
        if spec.get(k, 0) < 0:
            raise _bad(where, f"{key}.{k} must be >= 0, got {spec[k]!r}")
    for lo, hi in (("min", "max"), ("warn_min", "warn_max")):
        if spec.get(lo) is not None and spec.get(hi) is not None and spec[lo] > spec[hi]:
            raise _bad(where, f"{key}: {lo} {spec[lo]!r} > {hi} {spec[hi]!r}, no value can pass")
    if name not in SIGNED_METRICS:
        for k in ("max", "warn_max"):
            if spec.get(k) is not None and spec[k] < 0:
                raise _bad(where, f"{key}.{k} {spec[k]!r} is negative; {name} is never below 0")
