"""The sharded refit on real GPUs: one process per GPU over NCCL, engine ranks at tp=2 (and 4/8 where the
machine has them), bitwise per rank against the single-process sharded reference."""

from __future__ import annotations

import pytest
import torch

from refit_verify.layout import Layout
from refit_verify.refit.sharded_processes import compare_with_reference, reference_digests, run_process_refit

GPUS = torch.cuda.device_count() if torch.cuda.is_available() else 0


@pytest.mark.parametrize("tp", [2, 4, 8])
@pytest.mark.parametrize("path", ["before", "after"])
def test_nccl_ranks_hold_the_reference_bytes(tp, path):
    if GPUS < tp:
        pytest.skip(f"needs {tp} GPUs for tp={tp} over NCCL, this machine has {GPUS}")
    layout = Layout(tp=tp)
    run = run_process_refit("tiny-qwen3-moe", layout, path=path, backend="nccl")
    assert compare_with_reference(run, reference_digests("tiny-qwen3-moe", layout, path=path)) == []
