"""Mutants of the run jobs (refit_pipeline, refit_hazards, logits_drift) and of `check --exporter`.

Each names the check of suites/pr/test_jobs.py that fails under it.
"""

from __future__ import annotations

import functools

from refit_verify.selftest.mutant import Mutant

J = "suites/pr/test_jobs.py"


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
    Mutant("cuda_parity_never_fails", "cuda_parity lists CPU/CUDA byte differences but never fails, even "
           "for presets measured bit-identical on both (FACTS.md §3: parity is to be tested, not assumed)",
           {"refit_verify.jobs.builtin:parity_failure": lambda original: (lambda *a, **k: None)}, area="jobs",
           killers=("suites/pr/test_cuda_parity.py::test_measured_parity_lost_fails_naming_preset_and_case",)),
    Mutant("pipeline_job_self_compare", "refit_pipeline compares the FP8-before store with itself: every "
           "per-tensor row and heatmap shows zero drift whatever the engine got",
           {"refit_verify.refit.run:compare_states": _self_compare}, area="jobs",
           killers=(J + "::test_refit_pipeline_recipe_drift_fails_with_heatmap_and_repro",)),
    Mutant("hazards_job_never_checks", "refit_hazards lists findings but never checks the expected hazards "
           "were detected (a loader that stops reporting misplaced scales stays green)",
           {"refit_verify.jobs.refit:hazard_mismatch": _no_hazard_check}, area="jobs",
           killers=(J + "::test_refit_hazards_expected_detected_and_undetected_fails",)),
    Mutant("logits_same_engine", "logits_drift builds both FP8 models from the FP8-before engine: "
           "before-vs-after parity can never fail", {"refit_verify.jobs.model:engine_params": _same_engine},
           area="jobs",
           killers=(J + "::test_logits_drift_sees_before_after_difference",)),
    Mutant("dump_without_scales", "engine dump for `diff` omits weight_scale_inv (scales never compared)",
           {"refit_verify.jobs.refit:dump_fp8_store": _dump_without_scales}, area="jobs",
           killers=(J + "::test_diff_of_pipeline_dumps",)),
    Mutant("exporter_check_names_only", "check --exporter compares names, shapes and dtypes, not bytes",
           {"refit_verify.refit.usercheck:_compare": _names_only}, area="jobs",
           killers=(J + "::test_check_exporter",)),
]
