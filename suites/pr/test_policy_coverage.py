"""Every figure the package emits is gated by a policy rule or listed as reported-only, and the policy
names no figure that nothing emits (a rule for a figure never emitted gates nothing)."""

import ast
from pathlib import Path

import refit_verify
from refit_verify.report.policy import load_policy

ROOT = Path(refit_verify.__file__).parent
PASSTHROUGH = {"pytest_plugin.py"}  # forwards the names a user's own tests record


def emitted_figures() -> tuple[set, list]:
    """(literal figure names passed to `.figure(...)` in the package, calls whose name is not a literal)."""
    names, dynamic = set(), []
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "figure" \
                    and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    names.add(arg.value)
                elif path.name not in PASSTHROUGH:
                    dynamic.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return names, dynamic


def test_every_emitted_figure_has_a_rule_or_is_reported():
    policy = load_policy()
    names, dynamic = emitted_figures()
    assert not dynamic, f"figure names must be literals to be checked against the policy: {dynamic}"
    assert names, "no figure found: the scan is broken"
    unruled = names - set(policy.rules) - set(policy.reported)
    assert not unruled, f"emitted, neither gated nor listed under [reported]: {sorted(unruled)}"


def test_no_rule_for_a_figure_never_emitted():
    policy = load_policy()
    names, _ = emitted_figures()
    stale = (set(policy.rules) | set(policy.reported)) - names
    assert not stale, f"policy names figures no job emits: {sorted(stale)}"
    assert all(policy.reported.values()), "each reported-only figure says why it is not gated"
