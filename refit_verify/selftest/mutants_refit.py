"""Mutants of the refit area: each models a real refit bug (FACTS.md §4, §5).

Each is killed by a scenario of refit_verify/refit/scenarios.py, run by suites/pr/test_refit_scenarios.py.
"""

from __future__ import annotations

import torch

from refit_verify.selftest.mutant import Mutant


def _scenario(name: str) -> str:
    return f"suites/pr/test_refit_scenarios.py::test_scenario_passes_on_reference[{name}]"


def _per_batch_detection(original):
    def is_batch_prequantized(names, refit_prequantized):
        return any(n.endswith("_scale_inv") for n in names)  # ignores the metadata decision
    return is_batch_prequantized


def _heuristic_instead_of_loader(original):
    from refit_verify.refit.selection import heuristic_selection

    def loader_selection(loader, **options):
        return heuristic_selection(**options)
    return loader_selection


def _substring_match(original):
    def matches_pattern(name, pattern):
        return pattern in name
    return matches_pattern


def _vllm_rule_in_exact_mode(original):
    def place_row_scales_exact(row_scale, shard_scale, offset_rows, size_rows, block_n, tensor=None, shard=None):
        start = -(-offset_rows // block_n)  # offsets and sizes rounded up to whole blocks, as vLLM does
        length = -(-size_rows // block_n)
        lo, hi = start * block_n, min((start + length) * block_n, row_scale.shape[0])
        row_scale[lo:hi] = shard_scale.repeat_interleave(block_n, 0)[: hi - lo]
    return place_row_scales_exact


def _never_write_scale(original):
    def write_scale(dst, src):
        return None
    return write_scale


def _requant_always(original):
    def deepgemm_requant_applies(ue8m0, n, k, output_dtype=torch.bfloat16):
        return True
    return deepgemm_requant_applies


def _send_as_is(original):
    def sendable(t, make_contiguous=True):
        return t
    return sendable


def _consumer_split_off_by_one(original):
    def plan_buckets(metadata, bucket_bytes=64 << 20, alignment=512):
        return original(metadata, bucket_bytes - 1, alignment)  # '<' where the producer uses '<='
    return plan_buckets


def _drop_last_partial_bucket(original):
    def unpack_stream(plan, buffers):
        from refit_verify.refit.transport import unpack_bucket

        received = list(buffers)
        if received and received[-1][1].numel() < plan.bucket_bytes:
            received = received[:-1]
        for index, buf in received:
            yield unpack_bucket(plan.buckets[index], buf)
    return unpack_stream


def _fp8_as_e5m2(original):
    def tensor_from_bytes(raw, dtype, shape):
        return original(raw, torch.float8_e5m2 if dtype == torch.float8_e4m3fn else dtype, shape)
    return tensor_from_bytes


def _first_rank_only(original):
    def compare_states(a, b):
        from refit_verify.refit.engine import EngineState

        first = next(iter(a.ranks))
        return original(EngineState(a.layout, {first: a.ranks[first]}, a.findings, a.meta), b)
    return compare_states


MUTANTS = [
    Mutant("refit_compare_first_rank_only", "a sharded engine's state compared on rank 0 only: a wrong shard on "
           "another tp/ep/pp rank goes unseen", {"refit_verify.refit.run:compare_states": _first_rank_only},
           area="loader", killers=(
           "suites/pr/test_engine_seam.py::test_compare_states_names_the_rank_that_differs",
           _scenario("compare_states_every_rank"))),
    Mutant("refit_per_batch_detection", "NeMo-RL first revision: pre-quantized detected per batch by any _scale_inv "
           "name; a weight whose scale lands in the next bucket is re-quantized as BF16 (FACTS.md §5)",
           {"refit_verify.refit.loader:is_batch_prequantized": _per_batch_detection}, area="loader", killers=(_scenario("metadata_detection_with_split_scale"),)),
    Mutant("refit_router_first_layer_by_heuristic", "name heuristic instead of asking the engine: MoE router and "
           "BF16 first layer get quantized (FACTS.md §5)",
           {"refit_verify.refit.selection:loader_selection": _heuristic_instead_of_loader}, area="exporter", killers=(_scenario("loader_selection_moe_router"),)),
    Mutant("refit_ignore_substring", "ignored-layer pattern matched as a substring: 'mlp.gate' swallows "
           "gate_proj/gate_up_proj (FACTS.md §5)",
           {"refit_verify.refit.selection:matches_pattern": _substring_match}, area="exporter", killers=(_scenario("ignore_pattern_components"),)),
    Mutant("refit_exact_placement_rounds_up", "correct placement replaced by vLLM's block-rounded offsets: "
           "3072/192/128 qkv rows 3264..3327 get k's scale (FACTS.md §4)",
           {"refit_verify.refit.placement:place_row_scales_exact": _vllm_rule_in_exact_mode}, area="loader", killers=(_scenario("exact_placement_mimo"),)),
    Mutant("refit_scale_placeholder_kept", "weight_scale_inv never written: finfo(float32).min fill stays "
           "(FACTS.md §4)", {"refit_verify.refit.placement:write_scale": _never_write_scale}, area="loader", killers=(_scenario("scales_written"),)),
    Mutant("refit_ue8m0_requant_always", "UE8M0 requantization on load regardless of configuration, after "
           "non-pow2 scales were sent (FACTS.md §4, DeepGEMM E8M0)",
           {"refit_verify.refit.postload:deepgemm_requant_applies": _requant_always}, area="loader",
           killers=(_scenario("no_requant_without_ue8m0"), "suites/pr/test_loader.py::test_deepgemm_requant_condition")),
    Mutant("refit_noncontiguous_sent", "cropped (non-contiguous) quantizer output sent to the packed transport "
           "(FACTS.md §3: slicing the padded result)",
           {"refit_verify.refit.exporter:sendable": _send_as_is}, area="exporter", killers=(_scenario("cropped_recipe_sent_contiguous"),)),
    Mutant("refit_bucket_split_off_by_one", "consumer rebuilds the bucket split with '<' where the producer "
           "uses '<=': an exactly full bucket splits differently", {
               "refit_verify.refit.transport:plan_buckets": _consumer_split_off_by_one}, area="transport", killers=(_scenario("bucket_split_exact_fit"),)),
    Mutant("refit_last_partial_bucket_ignored", "receiver loop stops at the last full bucket; the final partial "
           "bucket is never loaded", {"refit_verify.refit.transport:unpack_stream": _drop_last_partial_bucket},
           area="transport", killers=(_scenario("roundtrip_small_buckets"),)),
    Mutant("refit_fp8_bytes_as_e5m2", "receiver views FP8 bytes as float8_e5m2 instead of e4m3fn",
           {"refit_verify.refit.transport:tensor_from_bytes": _fp8_as_e5m2}, area="transport", killers=(_scenario("roundtrip_small_buckets"),)),
]
