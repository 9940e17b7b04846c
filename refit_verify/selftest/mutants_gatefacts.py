"""Mutants of the release gate's limits: a threshold compared the wrong way, a rule read without its source."""

from __future__ import annotations

from refit_verify.selftest.mutant import Mutant

GATE = "suites/pr/test_report_gate.py"


def _min_compared_as_max(original):
    def violates(value, rule):
        # the bug: `min` checked with the `max` comparison, so a figure above its floor fails
        if rule.max is not None and not (value <= rule.max):
            return f"{value:.6g} > max {rule.max:g}"
        if rule.min is not None and not (value <= rule.min):
            return f"{value:.6g} > min {rule.min:g}"
        return None
    return violates


def _rules_without_source(original):
    def load_policy(path=None):
        import dataclasses

        p = original(path)
        return dataclasses.replace(p, rules={k: dataclasses.replace(r, source="") for k, r in p.rules.items()})
    return load_policy


MUTANTS = [
    Mutant("gate_min_compared_as_max", "a gate floor (sqnr_db min 28, logits_cosine min) compared the wrong way: "
           "good figures fail, a figure under its floor passes",
           {"refit_verify.report.policy:violates": _min_compared_as_max}, area="report",
           killers=(f"{GATE}::test_within_policy_passes", f"{GATE}::test_over_policy_fails_naming_metric_and_subject",
                    f"{GATE}::test_gate_cli_exit_codes")),
    Mutant("policy_rules_lose_source", "the policy loader keeps each rule's limits but drops the source that "
           "justifies the threshold: the report cites nothing",
           {"refit_verify.report.policy:load_policy": _rules_without_source}, area="report",
           killers=(f"{GATE}::test_default_policy_states_a_source_for_every_threshold",)),
]
