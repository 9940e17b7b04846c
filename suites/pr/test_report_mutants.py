"""Every report/CLI mutant makes at least one of the report checks fail (the checks can fail)."""

from __future__ import annotations

import contextlib
import io
import math

import pytest

import test_cli_check as C
import test_cli_run as R
import test_report_diff as D
import test_report_gate as G
from refit_verify.report.policy import load_policy
from refit_verify.selftest.mutants_report import MUTANTS


class _Capsys:
    """Enough of pytest's capsys for the checks reused here."""

    def __init__(self):
        self.out, self.err = io.StringIO(), io.StringIO()

    def readouterr(self):
        out, err = self.out.getvalue(), self.err.getvalue()
        self.out.seek(0), self.out.truncate(), self.err.seek(0), self.err.truncate()
        return type("Captured", (), {"out": out, "err": err})()


def _run(check, tmp_path):
    tmp_path.mkdir(parents=True, exist_ok=True)
    cap = _Capsys()
    with contextlib.redirect_stdout(cap.out), contextlib.redirect_stderr(cap.err):
        check(tmp_path, cap)


KILLERS = {
    "gate_ignores_regressions": [lambda t, c: G.test_regression_against_baseline(load_policy()),
                                 lambda t, c: G.test_lost_coverage_is_a_regression(load_policy())],
    "gate_nan_passes": [lambda t, c: G.test_nan_figure_never_passes(load_policy(), math.nan)],
    "gate_ignores_incomplete": [lambda t, c: G.test_incomplete_or_failed_report_fails(load_policy())],
    "diff_float_compare": [lambda t, c: D.test_signed_zero_is_drift_and_equal_nan_payload_is_not(D.make_pair(t))],
    "diff_ignores_orphans": [lambda t, c: D.test_malformed_inputs_are_issues_naming_the_tensor(D.make_pair(t))],
    "run_swallows_job_errors": [lambda t, c: R.test_job_exception_becomes_error_and_report_is_written(t)],
    "interrupted_report_complete": [lambda t, c: R.test_interrupt_leaves_incomplete_report(t)],
    "check_exit_zero": [lambda t, c: C.test_wrong_quantizer_exits_1_and_names_first_mismatch(C.make_user_file(t), c)],
}


def test_every_mutant_has_killers():
    assert {m.name for m in MUTANTS} == set(KILLERS)
    assert all(m.area == "report" and m.bug_class for m in MUTANTS)


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.name)
def test_mutant_is_killed(mutant, tmp_path):
    for i, check in enumerate(KILLERS[mutant.name]):  # sanity: the checks pass on the real code
        _run(check, tmp_path / f"clean{i}")
    killed = []
    with mutant.applied():
        for i, check in enumerate(KILLERS[mutant.name]):
            try:
                _run(check, tmp_path / f"mut{i}")
            except Exception as exc:  # AssertionError mostly; any failure counts as a kill
                killed.append(f"{type(exc).__name__}: {exc}"[:200])
    assert killed, f"mutant {mutant.name} survived every check"


def test_a_run_without_junit_or_output_still_has_an_error():
    from refit_verify.selftest.run import no_junit_error

    assert no_junit_error(4, "") == "pytest exit 4, no junit written and no output"
    assert no_junit_error(2, "boom\n").endswith(": boom")
