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


def _policy_with_stale_rule(original):
    @functools.wraps(original)
    def load(path=None):
        from refit_verify.report.policy import Rule

        p = original(path)
        p.rules["rollout_probs_diff_mean"] = Rule("rollout_probs_diff_mean", max=0.01, source="verl")
        return p
    return load


def _module_level_imports_only(original):
    # imports inside functions (the lazy ones) escape the layering check
    def rooms(tree, known):
        import ast

        return original(ast.Module(body=[n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))],
                                   type_ignores=[]), known)
    return rooms


def _floor_forgotten(original):
    return tuple(tuple(r for r in rooms if r != "live") for rooms in original)


def _no_block_detail(original):
    # a comparison that keeps the verdict but drops the per-block counts (what made the job re-compare)
    @functools.wraps(original)
    def compare_states(a, b):
        out = original(a, b)
        for c in out:
            c.block_mismatch_counts = None
        return out
    return compare_states


MUTANTS += [
    Mutant("policy_rule_never_emitted", "the policy gates a figure no job emits (verl's rollout_probs_diff_mean): "
           "a rule that can never fire", {"refit_verify.report.policy:load_policy": _policy_with_stale_rule},
           area="report", killers=("suites/pr/test_policy_coverage.py::test_no_rule_for_a_figure_never_emitted",)),
    Mutant("layering_misses_lazy_imports", "the layering check reads module-level imports only: an upward "
           "import inside a function goes unseen", {"refit_verify.selftest.layering:imported_rooms":
                                                     _module_level_imports_only}, area="compare",
           killers=("suites/pr/test_layering.py::test_upward_import_is_reported",)),
    Mutant("layering_room_forgotten", "a room (live) on no floor: its imports are never checked",
           {"refit_verify.selftest.layering:FLOORS": _floor_forgotten}, area="compare",
           killers=("suites/pr/test_layering.py::test_every_room_is_on_a_floor",)),
    Mutant("private_check_blind", "the private-access check finds nothing",
           {"refit_verify.selftest.layering:private_accesses": lambda original: (lambda root: [])}, area="compare",
           killers=("suites/pr/test_layering.py::test_private_access_is_reported",)),
    Mutant("run_drops_block_detail", "the run's comparisons keep verdicts but drop per-block counts: heatmaps "
           "empty, or a second compare to get them back", {"refit_verify.refit.run:compare_states": _no_block_detail},
           area="compare", killers=("suites/pr/test_one_comparison.py::test_stream_run_and_diff_return_one_type",)),
]
