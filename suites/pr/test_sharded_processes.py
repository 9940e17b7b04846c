"""The sharded refit with one process per engine rank (gloo on CPU): every rank holds, bitwise, what the
single-process sharded reference engine holds for the same layout and stream."""

from __future__ import annotations

import pytest

from refit_verify.layout import Layout
from refit_verify.refit.sharded_processes import (
    ProcessRefit, RankDigests, compare_with_reference, reference_digests, run_process_refit,
)


@pytest.mark.parametrize("path", ["before"])  # "after" too in the nightly GPU suite; each start costs seconds
def test_two_processes_hold_the_reference_bytes_on_every_rank(path):
    layout = Layout(tp=2)
    run = run_process_refit("tiny-llama", layout, path=path, layers=1, timeout_s=120)
    ref = reference_digests("tiny-llama", layout, path=path, layers=1)
    assert set(run.ranks) == {r.label for r in layout.ranks()}
    assert all(len(d.params) > 5 for d in run.ranks.values())
    assert compare_with_reference(run, ref) == []
    # the 64-row kv partition: vLLM's narrow raises on both ranks, named in each rank's notes
    assert any("v_proj.weight_scale_inv" in n for n in run.ranks["tp1.ep0.pp0"].ledger)


def test_compare_names_rank_and_parameter():
    ref = {"tp0.ep0.pp0": {"a": "1", "b": "2"}, "tp1.ep0.pp0": {"a": "3"}}
    run = ProcessRefit("before", "gloo", {"tp0.ep0.pp0": RankDigests("tp0.ep0.pp0", {"a": "1", "b": "X", "c": "4"}, [])})
    assert compare_with_reference(run, ref) == [
        "rank tp0.ep0.pp0: b: bytes differ from the single-process reference",
        "rank tp0.ep0.pp0: c: not held by the reference engine",
        "rank tp1.ep0.pp0: no digests came back",
    ]
