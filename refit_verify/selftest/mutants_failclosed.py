"""Mutants of the fail-closed paths: each models a way hostile or malformed input turns into a green result."""

from __future__ import annotations

from refit_verify.selftest.mutant import Mutant


def _plain_call(original):
    # the guard removed: a user's sys.exit(0) becomes the harness's own exit 0
    return lambda fn, *args, **kwargs: fn(*args, **kwargs)


def _empty_passes(original):
    # the "nothing compared" guard and the per-side "empty" issue removed: no tensors, no failures, a pass
    def summarize(res, rows, cmps, ulps, issues):
        if not rows:
            res.failures = [f for f in res.failures if not f.reason.startswith("empty:")]
            res.verdict = "pass" if not res.failures else res.verdict
            res.reason = "zero drift over 0 tensors"
            return
        original(res, rows, cmps, ulps, issues)
    return summarize


MUTANTS = [
    Mutant("check_lets_systemexit_through", "user code calling sys.exit(0) ends `check` with exit 0 and no report",
           {"refit_verify.check:call_user": _plain_call, "refit_verify.usercode:call_user": _plain_call},
           area="failclosed",
           killers=("suites/pr/test_check_quantizer.py::test_sys_exit_in_process_is_a_case_error_not_our_exit",)),
    Mutant("gate_accepts_unknown_verdict", "the gate reads what it understands and ignores the rest: a report with "
           "no jobs or a verdict 'weird'/'PASS' gates green",
           {"refit_verify.report.gate:validate_report": lambda original: (lambda report, where="report": None)},
           area="failclosed",
           killers=("suites/pr/test_report_gate.py::test_malformed_report_fails_closed_exit_2",
                    "suites/pr/test_report_gate.py::test_report_schema_unknown_keys_and_wrong_types_exit_2",
                    "suites/pr/test_report_gate.py::test_baseline_without_verdicts_is_bad_input",
                    "suites/pr/test_report_gate.py::test_fuzz_corrupted_report_exits_2_or_fails")),
    Mutant("gate_policy_unchecked", "the policy is read for what the gate understands: an unknown section "
           "([gatee], [metric.X]), an empty policy or fail_on_verdicts = \"fail\" (iterated as characters) passes a "
           "failing report", {"refit_verify.report.policy:validate_policy": lambda original: (lambda raw, where: None)},
           area="failclosed",
           killers=("suites/pr/test_report_gate.py::test_malformed_policy_fails_closed_exit_2",
                    "suites/pr/test_report_gate.py::test_policy_typo_is_rejected",
                    "suites/pr/test_report_gate.py::test_fuzz_corrupted_policy_exits_2_or_is_valid")),
    Mutant("diff_trusts_each_side", "diff only compares A with B: NaN, inf, zero or negative scales (or a near-"
           "float32-min placeholder) identical on both sides read as zero drift",
           {"refit_verify.compare.diff:_validate_scale": lambda original: (lambda *args: None)},
           area="failclosed",
           killers=("suites/pr/test_report_diff.py::test_each_side_is_validated_alone_bad_scales_are_never_zero_drift",)),
    Mutant("diff_empty_is_zero_drift", "two empty state dicts are 'zero drift over 0 tensors', exit 0",
           {"refit_verify.compare.diff:_summarize": _empty_passes}, area="failclosed",
           killers=("suites/pr/test_report_diff.py::test_empty_state_dicts_are_not_zero_drift",)),
]
