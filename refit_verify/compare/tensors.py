"""Per-tensor rows shared by the model jobs and `diff`: one row, one heatmap, one scale histogram."""

from __future__ import annotations

from collections import Counter
from typing import Optional

import torch

from refit_verify.fp8 import format as fmt

HEATMAP_TENSORS = 6  # worst tensors that get a per-block heatmap (bounded report size)


def tensor_row(cmp, err_a: Optional[dict] = None, err_b: Optional[dict] = None, **extra) -> dict:
    """Flatten a TensorComparison (plus each side's error vs BF16, when known) into a table row."""
    row = {
        "tensor": cmp.tensor,
        "shape": list(cmp.shape),
        "equal": cmp.equal,
        "n_code_mismatch": cmp.n_code_mismatch,
        "code_mismatch_rate": cmp.code_mismatch_rate,
        "n_scale_mismatch": cmp.n_scale_mismatch,
        "n_blocks": cmp.n_blocks,
        "blocks_with_code_mismatch": len(cmp.mismatched_blocks(limit=None)),
        "nan_codes": list(cmp.nan_codes),
        "ulp_histogram": {str(k): v for k, v in cmp.ulp_histogram.items()},
        "first_mismatch": cmp.first_mismatch.describe() if cmp.first_mismatch else "",
    }
    for side, err in (("a", err_a), ("b", err_b)):
        if err:
            for k in ("sqnr_db", "rel_l2", "calc_diff", "cosine"):
                row[f"{k}_{side}"] = err[k]
    # the plot's SQNR column: side b (engine) when known, else side a
    if err_b or err_a:
        row["sqnr_db"] = (err_b or err_a)["sqnr_db"]
    row.update(extra)
    return row


def heatmap_rows(results: list) -> list[dict]:
    """Per-block code-mismatch counts for the worst tensors (most mismatching codes first)."""
    worst = sorted((r for r in results if r.n_code_mismatch > 0 and r.block_mismatch_counts is not None),
                   key=lambda r: (-r.n_code_mismatch, r.tensor))
    return [
        {"tensor": r.tensor, "block": list(r.block), "counts": r.block_mismatch_counts.tolist()}
        for r in worst[:HEATMAP_TENSORS]
    ]


def scale_ulp_counts(a_scale: torch.Tensor, b_scale: torch.Tensor) -> Counter:
    """Signed float32 ulp distance a - b per block, over blocks whose scales are both finite."""
    a, b = a_scale.float().flatten().cpu(), b_scale.float().flatten().cpu()
    ok = torch.isfinite(a) & torch.isfinite(b)
    d = fmt.ordered_f32(a[ok]) - fmt.ordered_f32(b[ok])
    # clip far outliers into one bucket each side: a histogram, not a log of every block
    d = d.clamp(-64, 64)
    vals, counts = torch.unique(d, return_counts=True)
    return Counter({int(v): int(c) for v, c in zip(vals, counts)})


def scale_ulp_rows(counter: Counter) -> list[dict]:
    return [{"ulp_diff": k, "count": counter[k]} for k in sorted(counter)]
