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
