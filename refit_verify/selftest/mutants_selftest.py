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
