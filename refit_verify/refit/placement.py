"""Where a shard's rows and block scales land inside a fused engine parameter (FACTS.md §4).

Two scale placements:

- "vllm": vLLM 0.33's rule. A shard at row `offset` with `size` rows writes its scale into block
  rows `[ceil(offset/128), ceil(offset/128) + ceil(size/128))` of the fused `[ceil(N/128), Kb]`
  tensor, via torch `narrow` (so it raises "start (s) + length (l) exceeds dimension size (d)."
  when that runs past the end). Correct only when every boundary but the last is block aligned;
  otherwise rows get a neighbour's scale without any error.
- "exact": the definition of correct used by this harness. A 128-row block that straddles two
  shards cannot hold both shards' scales, so the loader keeps the scale per row: row r of shard i
  (at offset o_i) uses `scale_i[(r - o_i) // 128]`, stored as `weight_scale_inv_rows` `[N, Kb]`.
  The block-layout `weight_scale_inv` is still filled (block b takes the scale of the shard owning
  its first row) for kernels that need it; it is right wherever no block straddles shards.
"""

from __future__ import annotations

import torch

from refit_verify.errors import LoadShapeError, ShardPlacementError


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def write_scale(dst: torch.Tensor, src: torch.Tensor) -> None:
    """Every scale write goes through here, so 'never written' has one place to go wrong."""
    dst.copy_(src)


def vllm_scale_block_range(offset_rows: int, size_rows: int, block_n: int) -> tuple[int, int]:
    """(start block, number of blocks) as vLLM computes them: both rounded up."""
    return ceil_div(offset_rows, block_n), ceil_div(size_rows, block_n)


def place_scale_vllm(fused_scale, shard_scale, offset_rows, size_rows, block_n, tensor=None, shard=None) -> None:
    start, length = vllm_scale_block_range(offset_rows, size_rows, block_n)
    try:
        dst = fused_scale.narrow(0, start, length)  # vLLM narrows the parameter first: this is what raises
        src = shard_scale.narrow(0, 0, length)
    except RuntimeError as exc:
        err = ShardPlacementError(str(exc), tensor, shard)
        err.cause_type, err.cause_message = type(exc).__name__, str(exc)
        raise err from exc
    if dst.shape != src.shape:
        raise LoadShapeError(f"scale block rows {start}..{start + length - 1} are {tuple(dst.shape)}, "
                             f"the shard scale is {tuple(src.shape)}", tensor, shard)
    write_scale(dst, src)


def place_row_scales_exact(row_scale, shard_scale, offset_rows, size_rows, block_n, tensor=None, shard=None) -> None:
    expanded = shard_scale.repeat_interleave(block_n, 0)[:size_rows]
    dst = row_scale.narrow(0, offset_rows, size_rows)
    if dst.shape != expanded.shape:
        raise LoadShapeError(f"row scales {tuple(dst.shape)} vs shard scale expanded {tuple(expanded.shape)}",
                             tensor, shard)
    write_scale(dst, expanded)


def place_block_scales_first_row_owner(fused_scale, shard_scale, offset_rows, size_rows, block_n) -> None:
    first, end = ceil_div(offset_rows, block_n), ceil_div(offset_rows + size_rows, block_n)
    if end > first:
        src_rows = (torch.arange(first, end) * block_n - offset_rows) // block_n
        write_scale(fused_scale[first:end], shard_scale[src_rows])


def place_rows(weight, shard, offset_rows, tensor=None, shard_id=None) -> None:
    """Weight rows land exactly (both modes); copy_ casts whatever dtype arrives, as vLLM's does."""
    if shard.shape[0] > weight.shape[0] - offset_rows or shard.shape[1:] != weight.shape[1:]:
        raise LoadShapeError(f"shard {tuple(shard.shape)} does not fit rows {offset_rows}.. of "
                             f"{tuple(weight.shape)}", tensor, shard_id)
    weight.narrow(0, offset_rows, shard.shape[0]).copy_(shard)
