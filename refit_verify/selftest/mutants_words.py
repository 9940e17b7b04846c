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


def _prefixed_step(original):
    def step(self, msg):
        self._emit(f"{self.prefix}: {msg}")
    return step


def _reraise():
    raise  # the BrokenPipeError being handled escapes, as before the fix


MUTANTS += [
    Mutant("presets_same_description", "`presets` prints the same source line for presets that differ",
           {"refit_verify.cli:preset_lines": lambda original: (lambda presets: [f"{n:32s} {r.source}" for n, r in presets.items()])},
           area="report", killers=(f"{WORDS}::test_presets_never_share_a_description",)),
    Mutant("failure_line_repeats_and_cuts", "'name: name: …' and reasons cut at 200 characters",
           {"refit_verify.results:failure_line": lambda original: (lambda case, reason: f"{case}: {str(reason)[:200]}")},
           area="report", killers=(f"{WORDS}::test_failure_line_names_the_tensor_once_and_keeps_the_detail",
                                   f"{WORDS}::test_check_names_each_case_once_and_prints_every_detail")),
    Mutant("reason_repeats_subject", "`check` and failure lines print 'case: case: …' (the reason keeps its name)",
           {"refit_verify.results:without_subject": lambda original: (lambda subject, reason: str(reason))},
           area="report", killers=(f"{WORDS}::test_failure_line_names_the_tensor_once_and_keeps_the_detail",
                                   f"{WORDS}::test_check_names_each_case_once_and_prints_every_detail")),
    Mutant("broken_pipe_traceback", "`refit-verify presets | head -1` ends in a BrokenPipeError traceback",
           {"refit_verify.cli:_reader_left": lambda original: _reraise},
           area="report", killers=(f"{WORDS}::test_output_into_a_closed_pipe_is_no_traceback",)),
    Mutant("run_fail_names_nothing", "`run` prints 'FAIL: 1 job: 1 failed' and nothing about what failed",
           {"refit_verify.cli:failed_job_lines": lambda original: (lambda jobs, per_job=3: [])},
           area="report", killers=(f"{WORDS}::test_failed_run_names_what_failed_under_the_headline",)),
    Mutant("set_key_list_misses_a_job_option", "a job reads --set patched_loader but `--set` refuses the key",
           {"refit_verify.runguard:SET_KEYS": lambda original: {k: v for k, v in original.items() if k != "patched_loader"}},
           area="report", killers=(f"{WORDS}::test_every_job_option_is_a_known_set_key",)),
    Mutant("progress_empty_prefix", "a progress line ': loading model' before the first job",
           {"refit_verify.report.progress:Progress.step": _prefixed_step},
           area="report", killers=(f"{WORDS}::test_progress_step_before_any_job_has_no_empty_prefix",)),
]
MUTANTS.append(
    Mutant("python_api_empty_repro", "check_quantizer(...).failures()[0].repro == '' in the README's Python example",
           {"refit_verify.check:default_repro": lambda original: (lambda impl, recipe_name, base_seed: "")},
           area="report", killers=(f"{WORDS}::test_python_api_failures_carry_a_reproduce_command",)))
MUTANTS.append(
    Mutant("diff_source_needs_engine_names", "`diff --source` only looks up engine (fused) names: a normal HF "
           "checkpoint reads 'DRIFT: 0 tensor(s) differ, 4 issue(s)'",
           {"refit_verify.compare.statedict:source_tensor":
            lambda original: (lambda source, name: source.get(name) if name in source.entries else None)},
           area="report", killers=("suites/pr/test_jobs.py::test_diff_source_takes_a_plain_hf_checkpoint",)))


def _run_flag_renamed(original):
    """The CLI's `run --no-plots` renamed `--no-plot`: every doc line using the old flag is now wrong."""
    import argparse

    def build_parser():
        p = original()
        run = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction)).choices["run"]
        action = run._option_string_actions.pop("--no-plots")
        action.option_strings = ["--no-plot"]
        run._option_string_actions["--no-plot"] = action
        return p
    return build_parser


MUTANTS.append(
    Mutant("cli_flag_renamed_docs_stale", "a CLI flag renamed while README/docs still show the old one",
           {"refit_verify.cli:build_parser": _run_flag_renamed},
           area="report", killers=("suites/pr/test_docs_commands.py::test_every_documented_command_line_parses",)))

MUTANTS.append(
    Mutant("first_screen_hides_gate_failure", "a green PASS first screen over a report that `refit-verify gate` fails",
           {"refit_verify.report.summary:FirstScreen.gate": lambda original: property(lambda self: "pass")},
           area="report", killers=("suites/pr/test_report_browser.py::test_first_screen_says_when_the_gate_fails_a_passing_run",
                                   f"{WORDS}::test_passing_run_says_when_the_gate_would_fail")))

MUTANTS.append(
    Mutant("digest_diff_not_linked", "`diff e.json g.json` leaves reports/latest-diff on an older state-dict diff",
           {"refit_verify.cli:_link_latest": lambda original: (
               lambda out, name="latest": None if name == "latest-diff" else original(out, name))},
           area="report", killers=(f"{WORDS}::test_digest_diff_takes_reports_latest_diff",)))
