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
