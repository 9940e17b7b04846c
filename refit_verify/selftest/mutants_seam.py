"""Mutants of the engine seam and the one comparison result (compare.bitwise, refit.run, engine adapters)."""

from __future__ import annotations

import functools

from refit_verify.selftest.mutant import Mutant


def _first_chunk_detail(original):
    # per-block detail gathered from the first row chunk only: later blocks' drift never reaches heatmaps
    @functools.wraps(original)
    def detail(ca, cb, chunks, *a, **k):
        return original(ca, cb, chunks[:1], *a, **k)

    return detail


MUTANTS = [
    Mutant("compare_detail_first_chunk_only", "chunked compare keeps per-block counts and ulp histogram of the "
           "first row chunk only (an 8B tensor spans many chunks)",
           {"refit_verify.compare.bitwise:_code_detail": _first_chunk_detail}, area="compare",
           killers=("suites/pr/test_one_comparison.py::test_row_chunks_do_not_change_the_result",)),
]


def _floors_refit_below_compare(original):
    # compare and refit swapped: the table no longer matches the code (refit imports compare)
    floors = [list(f) for f in original]
    i, j = next(k for k, f in enumerate(floors) if "compare" in f), next(k for k, f in enumerate(floors) if "refit" in f)
    floors[i].remove("compare"), floors[j].remove("refit")
    floors[i].append("refit"), floors[j].append("compare")
    return tuple(tuple(f) for f in floors)


MUTANTS.append(
    Mutant("layering_floor_table_wrong", "floor table that says refit sits below compare: imports that go up "
           "would be declared legal and legal ones reported", {"refit_verify.selftest.layering:FLOORS":
                                                               _floors_refit_below_compare},
           area="compare", killers=("suites/pr/test_layering.py::test_imports_go_down_the_floors",)))


def _commit_of_cwd(original):
    # the old behaviour: `git rev-parse HEAD` wherever the user happens to run, i.e. their project's commit
    def commit(package_dir=None):
        import subprocess

        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    return commit


def _policy_without(metric):
    def factory(original):
        @functools.wraps(original)
        def load(path=None):
            p = original(path)
            p.rules.pop(metric, None)
            return p
        return load
    return factory


MUTANTS += [
    Mutant("report_commit_of_cwd", "the report records the commit of the repository around the working "
           "directory (the user's project), not refit-verify's own",
           {"refit_verify.report.env:project_git_commit": _commit_of_cwd}, area="report",
           killers=("suites/pr/test_report_git_commit.py",)),
    Mutant("policy_rule_missing", "a figure a job emits (hazards_undetected) has no rule: the gate passes "
           "whatever its value", {"refit_verify.report.policy:load_policy": _policy_without("hazards_undetected")},
           area="report",
           killers=("suites/pr/test_policy_coverage.py::test_every_emitted_figure_has_a_rule_or_is_reported",)),
]
