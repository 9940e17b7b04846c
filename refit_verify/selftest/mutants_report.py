"""Mutants of the report/CLI layer: each models a way a harness lies to its users.

suites/pr/test_report_mutants.py proves each one makes at least one report check fail.
"""

from __future__ import annotations

import functools

from refit_verify.selftest.mutant import Mutant


def _no_regressions(original):
    return lambda report, baseline, policy: []


def _naive_violates(original):
    # `value > max` / `value < min` let NaN through: every comparison with NaN is False
    def violates(value, rule):
        if rule.max is not None and value > rule.max:
            return f"{value} > {rule.max}"
        if rule.min is not None and value < rule.min:
            return f"{value} < {rule.min}"
        return None

    return violates


def _float_compare(original):
    """Compare fp8 as float values: -0 == +0 hides a byte change, NaN != NaN invents one."""
    import torch

    @functools.wraps(original)
    def compare(a_data, a_scale, b_data, b_scale, block=(128, 128), name="tensor"):
        if a_data.shape != b_data.shape:
            return original(a_data, a_scale, b_data, b_scale, block, name)
        fa, fb = a_data.float(), b_data.float()
        same_value = fa == fb
        ca, cb = a_data.view(torch.uint8), b_data.view(torch.uint8).clone()
        cb[same_value] = ca[same_value]  # value-equal counts as equal, whatever the bytes
        nan_pair = ~same_value & (ca == cb)
        cb[nan_pair] = ca[nan_pair] ^ 0x01  # value-unequal (NaN) counts as different
        return original(a_data, a_scale, cb.view(torch.float8_e4m3fn), b_scale, block, name)

    return compare


def _drop_pairing_issues(original):
    @functools.wraps(original)
    def pair(sd, side):
        out = original(sd, side)
        out.issues = []
        return out

    return pair


def _swallow_errors(original):
    @functools.wraps(original)
    def run_one(spec, ctx):
        res = original(spec, ctx)
        if res.verdict == "error":
            res.verdict, res.reason = "pass", ""
        return res

    return run_one


def _always_complete(original):
    @functools.wraps(original)
    def finish(self, status="complete", interrupted=None, step_summary=True):
        return original(self, "complete", None, step_summary)

    return finish


def _check_exit_zero(original):
    @functools.wraps(original)
    def cmd_check(args):
        original(args)
        return 0

    return cmd_check


MUTANTS = [
    Mutant("gate_ignores_regressions", "gate compares only absolute limits; a 3 dB SQNR drop inside the "
           "limit passes review (regression gating)", {"refit_verify.report.gate:find_regressions": _no_regressions},
           area="report"),
    Mutant("gate_nan_passes", "threshold written as `value > max`: NaN figures (a NaN-poisoned refit) pass",
           {"refit_verify.report.policy:violates": _naive_violates}, area="report"),
    Mutant("gate_ignores_incomplete", "a run killed half-way (CI timeout) gates green on the jobs it did finish",
           {"refit_verify.report.gate:check_status": lambda original: (lambda report, policy: [])}, area="report"),
    Mutant("diff_float_compare", "fp8 compared as float values instead of bytes: -0 == +0 and NaN != NaN "
           "(FACTS.md §2: NaN = 0x7F/0xFF)", {"refit_verify.compare.diff:compare_fp8": _float_compare}, area="report"),
    Mutant("diff_ignores_orphans", "missing or orphan _scale_inv silently skipped (FACTS.md §5: a scale in the "
           "next batch)", {"refit_verify.compare.diff:pair_tensors": _drop_pairing_issues}, area="report"),
    Mutant("run_swallows_job_errors", "a job that raises is reported as passing",
           {"refit_verify.jobs:run_one": _swallow_errors}, area="report"),
    Mutant("interrupted_report_complete", "an interrupted run's report claims status complete",
           {"refit_verify.report.document:ReportWriter.finish": _always_complete}, area="report"),
    Mutant("check_exit_zero", "`check` prints the mismatch but exits 0, so CI stays green",
           {"refit_verify.cli:cmd_check": _check_exit_zero}, area="report"),
]
