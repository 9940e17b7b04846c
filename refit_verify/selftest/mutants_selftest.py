"""Mutants of the self-test's own bookkeeping: what counts as a PR check some mutant fails."""

from __future__ import annotations

from refit_verify.selftest.mutant import Mutant

RUNNER = "suites/pr/test_selftest_runner.py"


def _crash_counts_as_failing(original):
    def never_failed(pr_checks, runs, unreachable):
        left, listed = original(pr_checks, runs, unreachable)
        crashed = {t for r in runs for t in r.crashed}
        return [c for c in left if c not in crashed], listed
    return never_failed


MUTANTS = [
    Mutant("never_failed_counts_crashes", "a check that only crashed under a mutant (TypeError) counted as one "
           "some mutant fails: the never-failed count drops without any check proving anything",
           {"refit_verify.selftest.run:never_failed": _crash_counts_as_failing}, area="selftest",
           killers=(f"{RUNNER}::test_never_failed_counts_assertion_failures_and_lists_unreachable_apart",
                    f"{RUNNER}::test_killers_mode_counts_pr_checks_no_declared_killer_fails")),
]


def _every_failure_asserts(original):
    return lambda message, body="": ("assert", original(message, body)[1])


def _refit_errors_crash(original):
    def classify(message, body=""):
        kind, name = original(message, body)
        return ("crash", name) if name not in ("AssertionError", "Failed") and kind == "assert" else (kind, name)
    return classify


def _only_assertion_error(original):
    def classify(message, body=""):
        kind, name = original(message, body)
        return ("crash", name) if name == "Failed" else (kind, name)
    return classify


MUTANTS += [
    Mutant("classify_counts_crashes", "every failing check counted as a kill, whatever it raised (TypeError, "
           "KeyError, ImportError): a mutant that merely crashes a check passes the self-test",
           {"refit_verify.selftest.run:classify": _every_failure_asserts}, area="selftest",
           killers=(f"{RUNNER}::test_classify_failure_message", f"{RUNNER}::test_crash_only_mutant_is_not_killed",
                    f"{RUNNER}::test_exception_group_is_an_assertion_only_when_every_member_is")),
    Mutant("classify_refit_errors_crash", "a refit-verify error (ShardPlacementError, CheckFailed) counted as a "
           "crash: checks that fail through the project's own typed errors never kill",
           {"refit_verify.selftest.run:classify": _refit_errors_crash}, area="selftest",
           killers=(f"{RUNNER}::test_classify_failure_message",
                    f"{RUNNER}::test_exception_group_is_an_assertion_only_when_every_member_is")),
    Mutant("classify_pytest_fail_crash", "pytest.fail and a pytest.raises that saw nothing ('Failed') counted as "
           "crashes: only a bare AssertionError kills",
           {"refit_verify.selftest.run:classify": _only_assertion_error}, area="selftest",
           killers=(f"{RUNNER}::test_classify_failure_message",)),
    Mutant("conformance_killers_on_cpu", "killers under suites/conformance run with this interpreter (no vLLM): "
           "they fail on import and the mutant looks killed, or are skipped",
           {"refit_verify.selftest.mutant:LANES": lambda original: {"suites/nightly/": "gpu"}}, area="selftest",
           killers=(f"{RUNNER}::test_killer_lanes",)),
    Mutant("no_junit_error_empty", "a pytest run that wrote no junit and printed nothing leaves `error` empty: "
           "the run reads as clean",
           {"refit_verify.selftest.run:no_junit_error": lambda original: (lambda rc, output: output.strip()[-800:])},
           area="selftest", killers=(f"{RUNNER}::test_a_run_without_junit_or_output_still_has_an_error",)),
]
MUTANTS.append(
    Mutant("assertion_error_not_counted", "the kill rule's names lose AssertionError (only pytest's 'Failed' "
           "left): a plain `assert` in a check, in a test or a fixture, no longer kills",
           {"refit_verify.selftest.run:_ASSERTION_NAMES": lambda original: {"Failed"}}, area="selftest",
           killers=(f"{RUNNER}::test_classify_failure_message",)))
