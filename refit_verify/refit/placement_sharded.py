"""What each engine rank takes from a whole (gathered) HF tensor: vLLM 0.33's sharding rules, as data.

Pure functions, no engine state. Facts from the installed vLLM 0.33 source (restated in
docs/SHARDED.md):

- Column-parallel linears (`MergedColumnParallelLinear`, `QKVParallelLinear`, `weight_loader_v2`):
  a shard of global size `S_g` holds `S = S_g // tp` rows per rank at rank-local offset
  `sum(previous) // tp`; the weight takes rows `[shard_rank * S, +S)` of the HF tensor. For a block
  scale (`BlockQuantScaleParameter`) offset and size are each rounded up to blocks
  (`adjust_block_scale_shard`) and the HF scale is narrowed at `shard_rank * ceil(S/128)` blocks:
  right only when `S % 128 == 0`; otherwise a rank silently gets a neighbour block, or `narrow`
  raises when that runs past the end.
- QKV: `num_heads = H // tp`; when `tp >= KV` each kv head is replicated on `tp // KV` ranks
  (`num_kv_head_replicas`), one kv head per rank; q's shard rank is `tp_rank`, k's and v's is
  `tp_rank // num_kv_head_replicas`.
- Row-parallel linears (`RowParallelLinear`): the weight takes columns `[tp_rank * K, +K)`,
  `K = K_g // tp`; the scale takes block columns `[tp_rank * ceil(K/128), +ceil(K/128))`.
- Create-time validation (`validate_fp8_block_shape`, tp > 1): a row-parallel `K % 128 != 0` raises;
  merged layers with an odd partition skip validation (`allow_fp8_block_shape_mismatch`).
- FusedMoE (`routed_experts.py`, `Fp8MoEMethod.create_weights`): expert parallelism places experts
  linearly (`determine_expert_map`: `E // ep` each, the first `E % ep` ranks one more); without it
  each expert is tensor-sliced like a merged column (w1/w3) and a row (w2) linear; block scales are
  created with `torch.ones`; `validate_fp8_block_shape_moe` raises when `I // tp % 128 != 0`.
- Pipeline stages (`get_pp_indices`): `L // pp` layers each, the remainder added from the
  second-to-last stage backwards; parameter names keep global layer indices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from refit_verify.errors import BadInputError, LoadShapeError, ShardPlacementError
from refit_verify.refit.placement import ceil_div

COLUMN, ROW = 0, 1  # the dimension a linear is tensor-sliced along


@dataclass(frozen=True)
class QkvPartition:
    """Heads per rank of one QKVParallelLinear (vLLM's constructor arithmetic)."""

    num_heads: int
    num_kv_heads: int
    kv_replicas: int

    def shard_rank(self, shard_id, tp_rank: int) -> int:
        return tp_rank if shard_id == "q" else tp_rank // self.kv_replicas


def divide(total: int, parts: int, what: str) -> int:
    """vLLM's `divide` asserts divisibility at construction: the engine cannot be built otherwise."""
    if total % parts:
        raise BadInputError(f"{what} = {total} is not divisible by {parts}: vLLM cannot build this layer "
                            "(assertion in vllm.distributed.utils.divide)")
    return total // parts


def qkv_partition(num_heads: int, num_kv_heads: int, tp: int) -> QkvPartition:
    heads = divide(num_heads, tp, "num_attention_heads")
    if tp >= num_kv_heads:
        return QkvPartition(heads, 1, divide(tp, num_kv_heads, "tp over num_key_value_heads"))
    return QkvPartition(heads, divide(num_kv_heads, tp, "num_key_value_heads"), 1)


def narrow_checked(t: torch.Tensor, dim: int, start: int, length: int, tensor: str, shard=None) -> torch.Tensor:
    """torch `narrow` as vLLM calls it; its RuntimeError becomes a typed ShardPlacementError."""
    try:
        return t.narrow(dim, start, length)
    except RuntimeError as exc:
        err = ShardPlacementError(str(exc), tensor, shard)
        err.cause_type, err.cause_message = type(exc).__name__, str(exc)
        raise err from exc


def rank_slice(t: torch.Tensor, dim: int, shard_rank: int, local: int, block: int, is_scale: bool,
               tensor: str, shard=None) -> torch.Tensor:
    """The part of a whole HF tensor (or its block scale) one rank loads: vLLM's narrow, not the exact one."""
    size = ceil_div(local, block) if is_scale else local
    return narrow_checked(t, dim, shard_rank * size, size, tensor, shard)


def exact_scale_blocks(local: int, shard_rank: int, block: int) -> tuple[int, int]:
    """The HF scale blocks a rank's rows really fall in (what a correct loader would read)."""
    lo = shard_rank * local
    return lo // block, ceil_div(lo + local, block)


def expert_range(num_experts: int, ep_size: int, ep_rank: int) -> tuple[int, int]:
    """(first global expert, count) on one EP rank: vLLM's linear placement."""
    base, rem = divmod(num_experts, ep_size)
    count = base + 1 if ep_rank < rem else base
    return ep_rank * base + min(ep_rank, rem), count


def pp_layer_range(num_layers: int, pp_rank: int, pp_size: int) -> tuple[int, int]:
    """[start, end) decoder layers on one pipeline stage (vLLM get_pp_indices without an override)."""
    parts = [num_layers // pp_size] * pp_size
    for i in range(2, num_layers % pp_size + 2):
        parts[-i] += 1
    start = sum(parts[:pp_rank])
    return start, start + parts[pp_rank]


def row_parallel_validation(k_local: int, tp: int, block: int) -> Optional[str]:
    """vLLM's create-time message for a row-parallel layer, or None when it builds."""
    if tp > 1 and k_local % block:
        return f"Weight input_size_per_partition = {k_local} is not divisible by weight quantization block_k = {block}."
    return None


def moe_validation(i_local: int, tp: int, block: tuple[int, int]) -> Optional[str]:
    """vLLM's validate_fp8_block_shape_moe message, or None."""
    if i_local % block[0]:
        return (f"The output_size of gate's and up's weight = {i_local} is not divisible by weight "
                f"quantization block_n = {block[0]}.")
    if tp > 1 and i_local % block[1]:
        return (f"The input_size of down's weight = {i_local} is not divisible by weight quantization "
                f"block_k = {block[1]}.")
    return None


def check_shape(t: torch.Tensor, expected: tuple, tensor: str, shard=None) -> None:
    if tuple(t.shape) != tuple(expected):
        raise LoadShapeError(f"got {tuple(t.shape)}, the rank's parameter expects {tuple(expected)}", tensor, shard)
