"""Mutants of the run jobs (refit_pipeline, refit_hazards, logits_drift) and of `check --exporter`.

suites/pr/test_jobs.py (KILLERS) proves each one makes at least one of its checks fail.
"""

from __future__ import annotations

import functools

from refit_verify.selftest.mutant import Mutant


def _self_compare(original):
    # the run diffs a state against itself (e.g. reads both sides from the same path's dict)
    return functools.wraps(original)(lambda a, b: original(a, a))


def _no_hazard_check(original):
    return lambda expected, got: (set(), set())


def _same_engine(original):
    # both logits models built from the FP8-before store: FP8-before vs FP8-after is always "identical"
    return functools.wraps(original)(lambda r, path: original(r, "before"))


def _dump_without_scales(original):
    @functools.wraps(original)
    def dump(store, folder):
        from pathlib import Path

        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({p + ".weight": lin.weight.contiguous() for p, lin in store.linears.items() if lin.fp8},
                  str(folder / "model.safetensors"))
        return folder

    return dump


def _names_only(original):
    # the exporter check that looks at names, shapes and dtypes but never at the bytes
    from refit_verify.refit import usercheck

    return lambda name, ref, user, fp8: usercheck.shape_dtype_issue(name, ref[name], user[name])


MUTANTS = [
    Mutant("pipeline_job_self_compare", "the run compares the FP8-before engine state with itself: every "
           "per-tensor row and heatmap shows zero drift whatever the engine got",
           {"refit_verify.refit.run:compare_states": _self_compare}, area="jobs"),
    Mutant("hazards_job_never_checks", "refit_hazards lists findings but never checks the expected hazards "
           "were detected (a loader that stops reporting misplaced scales stays green)",
           {"refit_verify.jobs.refit:hazard_mismatch": _no_hazard_check}, area="jobs"),
    Mutant("logits_same_engine", "logits_drift builds both FP8 models from the FP8-before engine: "
           "before-vs-after parity can never fail", {"refit_verify.jobs.model:engine_params": _same_engine},
           area="jobs"),
    Mutant("dump_without_scales", "engine dump for `diff` omits weight_scale_inv (scales never compared)",
           {"refit_verify.jobs.refit:dump_fp8_store": _dump_without_scales}, area="jobs"),
    Mutant("exporter_check_names_only", "check --exporter compares names, shapes and dtypes, not bytes",
           {"refit_verify.refit.usercheck:_compare": _names_only}, area="jobs"),
]
