"""Mutants of what a new user reads and keeps: the run headline, reports/latest, file permissions."""

from __future__ import annotations

from refit_verify.selftest.mutant import Mutant

WORDS = "suites/pr/test_cli_words.py"

MUTANTS = [
    Mutant("latest_taken_by_adhoc_run", "an ad-hoc `run --job X` repoints reports/latest: the full run's report is lost",
           {"refit_verify.cli:_link_latest": lambda original: (lambda out, name="latest": original(out, "latest"))},
           area="report", killers=(f"{WORDS}::test_adhoc_job_run_does_not_take_reports_latest",)),
    Mutant("dump_files_private", "dumps written 0600 (safetensors' default): a teammate or CI artifact step can't read them",
           {"refit_verify.files:make_shareable": lambda original: (lambda path: None)},
           area="report", killers=(f"{WORDS}::test_dumps_are_readable_by_others",)),
    Mutant("headline_repeats_verdict", "the headline reads 'PASS: pass 5': verdict words instead of counted jobs",
           {"refit_verify.cli:_counts_phrase": lambda original: (lambda counts: ", ".join(f"{k} {v}" for k, v in counts.items() if v))},
           area="report", killers=(f"{WORDS}::test_headline_counts_jobs_not_verdict_words",
                                   f"{WORDS}::test_adhoc_job_run_does_not_take_reports_latest")),
]
