"""Mutants of the live-run digest: each models a checksum that would let a wrong refit pass."""

from __future__ import annotations

import functools

import torch

from refit_verify.errors import BadInputError
from refit_verify.layout import Layout, Rank
from refit_verify.selftest.mutant import Mutant

D = "refit_verify.live.digest"
K = ("suites/pr/test_live_digest.py",)


def _ignore_scale(original):
    @functools.wraps(original)
    def mutated(scale):
        return torch.zeros_like(original(scale))
    return mutated


def _unshared_seed(original):
    calls = iter(range(1, 1 << 30))

    @functools.wraps(original)
    def mutated(n_blocks, k, seed, name, rank_label):
        return original(n_blocks, k, seed + next(calls), name, rank_label)
    return mutated


def _no_position(original):
    @functools.wraps(original)
    def mutated(x, c):
        if x.dim() == 1 and x.dtype == torch.int64 and x.numel() > 1 and bool((x == torch.arange(
                x.numel(), device=x.device)).all()):
            return torch.zeros_like(x)
        return original(x, c)
    return mutated


def _ignore_extra(original):
    @functools.wraps(original)
    def mutated(expected, engine):
        d = original(expected, engine)
        d.extra = []
        return d
    return mutated


def _skip_edge_tile(original):
    @functools.wraps(original)
    def mutated(gm, gn, words_per_block):
        tiles = list(original(gm, gn, words_per_block))
        return [t for t in tiles if not (t[3] == gn and t[2] > 0)] or tiles
    return mutated


def _unfused(original):
    @functools.wraps(original)
    def mutated(name):
        return None
    return mutated


def _concat_scales(original):
    @functools.wraps(original)
    def mutated(prefix, shards, block, fp8):
        weight = torch.cat([d for d, _ in shards], 0)
        return weight, (torch.cat([s for _, s in shards], 0) if fp8 else None)
    return mutated


def _accept_incompatible(original):
    @functools.wraps(original)
    def mutated(a, b, pa, pb):
        return None
    return mutated


def _first_block_only(original):
    @functools.wraps(original)
    def mutated(expected, engine, repro):
        job, d = original(expected, engine, repro)
        job.tables["blocks"] = job.tables["blocks"][:1]
        job.metrics["mismatched_blocks"] = min(1, job.metrics["mismatched_blocks"])
        return job, d
    return mutated


def _params_snapshot_once(original):
    cache = {}

    @functools.wraps(original)
    def mutated(model):
        if id(model) not in cache:
            cache[id(model)] = {n: t.clone() for n, t in original(model).items()}
        return cache[id(model)]
    return mutated


def _first_tensor_only(original):
    @functools.wraps(original)
    def mutated(expected, engine):
        d = original(expected, engine)
        if d.blocks:
            first = d.blocks[0][:2]
            d.blocks = [b for b in d.blocks if b[:2] == first]
        return d
    return mutated


def _kv_swapped(original):
    out = dict(original)
    out["self_attn.k_proj"], out["self_attn.v_proj"] = original["self_attn.v_proj"], original["self_attn.k_proj"]
    return out


def _no_wait(original):
    @functools.wraps(original)
    def mutated(self, name):
        return name not in self.held
    return mutated


C = "refit_verify.live.compare"
KC = ("suites/pr/test_live_compare.py",)

E = "refit_verify.live.expect"
KE = "suites/pr/test_live_expect.py"
KL = "suites/pr/test_live_cli.py"

MUTANTS = [
    Mutant("digest_ignores_scale", "block digest hashes the FP8 bytes only: a wrong weight_scale_inv "
           "(misplaced or stale scale block) passes", {f"{D}:_scale_words": _ignore_scale}, area="live",
           killers=K),
    Mutant("sampled_unshared_seed", "sampled mode draws its blocks from a per-process seed: trainer and "
           "engine digest different blocks", {f"{D}:sample_indices": _unshared_seed}, area="live",
           killers=K),
    Mutant("digest_position_blind", "block digest is an order-free sum: swapped elements inside a block "
           "pass", {f"{D}:_mix": _no_position}, area="live", killers=K),
    Mutant("digest_diff_ignores_extra", "digest diff reports missing parameters but not ones the engine "
           "holds that the trainer never sent", {f"{C}:compare_documents": _ignore_extra}, area="live",
           killers=KC),
    Mutant("digest_tile_skips_edge", "tiled digest misses the last column tile of each row of tiles (the "
           "classic edge-tile bug of a blocked kernel): those blocks are never hashed",
           {f"{D}:_chunks": _skip_edge_tile}, area="live",
           killers=("suites/pr/test_live_digest.py::test_tiled_fast_path_equals_definition",)),
    Mutant("expect_unfused_names", "trainer-side expectation keeps HF names (q_proj/k_proj/v_proj, gate_proj/"
           "up_proj) instead of the engine's fused qkv_proj/gate_up_proj: every fused parameter reads as missing",
           {f"{E}:_fuse_target": _unfused}, area="live",
           killers=(f"{KE}::test_engine_names_and_fusing", f"{KL}::test_expect_digest_diff_equal")),
    Mutant("expect_scales_concatenated", "fused scale built by concatenating the shards' scales, not by vLLM's "
           "block-rounded placement (differs whenever a shard boundary is not a multiple of 128)",
           {f"{E}:_fused_parameter": _concat_scales}, area="live",
           killers=(f"{KE}::test_unaligned_shards_follow_vllm_placement",)),
    Mutant("digest_diff_accepts_incompatible", "diff of digest files taken with different blocks or sampling "
           "compares them anyway instead of refusing (exit 2)",
           {"refit_verify.live.commands:_incompatible": _accept_incompatible}, area="live",
           killers=(f"{KL}::test_different_sampling_is_incompatible",)),
    Mutant("digest_diff_table_first_block_only", "the diff report keeps only the first differing block",
           {"refit_verify.live.commands:diff_job": _first_block_only}, area="live",
           killers=(f"{KL}::test_stale_and_missing_parameters_named",)),
    Mutant("live_extension_stale_params", "worker extension digests a copy of the parameters taken at its first "
           "call (load time) instead of what the engine holds now: every later refit looks unchanged",
           {"refit_verify.live.vllm:model_parameters": _params_snapshot_once}, area="conformance", needs=("vllm",),
           killers=("suites/conformance/test_live_vllm.py",)),
    Mutant("digest_diff_first_tensor_only", "digest diff stops at the first tensor with differing blocks: a second "
           "bad tensor in the same step goes unreported", {f"{C}:compare_documents": _first_tensor_only}, area="live",
           killers=(f"{KE}::test_reference_engine_stale_shard_and_skipped_parameter_named",)),
    Mutant("expect_kv_order_swapped", "trainer-side fusion puts v before k in qkv_proj (the engine loads q, k, v)",
           {f"{E}:FUSED_SHARDS": _kv_swapped}, area="live",
           killers=(f"{KE}::test_expect_equals_both_refit_paths",
                    f"{KE}::test_reference_engine_stale_shard_and_skipped_parameter_named")),
    Mutant("expect_bucket_does_not_wait_for_scale", "bucketed expectation digests an FP8 weight before its "
           "scale arrives (the scale travels in the next bucket): it is quantized again as if BF16",
           {f"{E}:Expectation._waits": _no_wait}, area="live",
           killers=(f"{KE}::test_bucketed_expectation_waits_for_shards_and_scales",)),
]


def _experts_as_one(original):
    # a 3-D expert parameter digested as if only its first expert existed
    def lanes(data, scale, block, idx):
        if data.dim() == 3:
            data, scale = data[:1], scale[:1]
        return original(data, scale, block, idx)
    return lanes


MUTANTS.append(
    Mutant("digest_sees_first_expert_only", "FusedMoE expert parameters digested for expert 0 only: a wrong "
           "scale of any other local expert passes the live check",
           {"refit_verify.live.fileformat:_lanes": _experts_as_one}, area="live",
           killers=("suites/pr/test_live_sharded.py::test_expect_sharded_matches_engine_dump_and_names_an_altered_rank",)))


def _no_sharded_sink(original):
    # a sharded layout served by the single-rank placement: one rank's whole model, no slicing
    def sink(config, recipe, layout):
        return None
    return sink


def _keep_partial(original):
    # parameters the trainer never (fully) wrote kept in the expectation with the engine's placeholder bytes
    def written(self, rank, params):
        return dict(params)
    return written


KX = "suites/pr/test_live_expect_layout.py"
MUTANTS += [
    Mutant("expect_sharded_layout_ignored", "in-memory expect with a tp=2 layout digests the unsharded model "
           "as one rank (the placement is built only by the CLI)",
           {f"{E}:_sharded_sink": _no_sharded_sink}, area="live",
           killers=(f"{KX}::test_in_memory_expect_equals_the_cli_for_tp2",)),
    Mutant("expect_sharded_keeps_unwritten", "sharded expect keeps a parameter the trainer gave only in part "
           "(a fused shard or a scale missing) with the engine's placeholder bytes, instead of refusing",
           {"refit_verify.live.expect_sharded:ShardedSink._written": _keep_partial}, area="live",
           killers=(f"{KX}::test_sharded_expect_needs_the_config_and_names_what_is_missing",)),
]


def _rank_tp_pp_only(original):
    # the worker labelled by its tensor and pipeline position only: every data-parallel expert group
    # reports the same label, and the expectation gives each the experts of group 0
    def rank(tp, pp=(0, 1), dp=(0, 1), pcp=(0, 1), expert_parallel=False, has_experts=True):
        return Rank(tp=tp[0], pp=pp[0]), Layout(tp=tp[1], pp=pp[1])
    return rank


def _ep_ignores_pcp(original):
    def rank(tp, pp=(0, 1), dp=(0, 1), pcp=(0, 1), expert_parallel=False, has_experts=True):
        r, layout = original(tp, pp, dp, pcp, expert_parallel, has_experts)
        return (Rank(r.tp, dp[0], r.pp) if layout.ep > 1 else r), layout
    return rank


KR = "suites/pr/test_live_vllm_rank.py"
MUTANTS += [
    Mutant("live_rank_without_expert_parallel", "the vLLM worker's rank label carries tp and pp only: with "
           "expert parallelism over data-parallel ranks, two workers holding different experts share a label",
           {"refit_verify.live.vllm:parallel_rank": _rank_tp_pp_only}, area="live",
           killers=(f"{KR}::test_expert_parallel_rank_is_vllms_flat_expert_rank",
                    f"{KR}::test_worker_reads_groups_and_its_expert_parallel_flag")),
    Mutant("live_rank_ep_ignores_context_parallel", "expert group index taken from the data-parallel rank alone: "
           "prefill-context-parallel ranks of one data-parallel rank collide",
           {"refit_verify.live.vllm:parallel_rank": _ep_ignores_pcp}, area="live",
           killers=(f"{KR}::test_expert_parallel_rank_is_vllms_flat_expert_rank",)),
]


def _sample_dropped(original):
    def digests(self, recipe="vllm_per_block", sample=None):
        return original(self, recipe, None)
    return digests


def _codes_ignored(original):
    @functools.wraps(original)
    def sums(data, block):
        sums, grid = original(data, block)
        return [torch.zeros_like(x) for x in sums], grid
    return sums


def _sampled_codes_ignored(original):
    @functools.wraps(original)
    def words(data, block, indices):
        return torch.zeros_like(original(data, block, indices))
    return words


KD = "suites/pr/test_live_docs.py"
MUTANTS += [
    Mutant("live_extension_ignores_sample", "the worker extension digests every block whatever `sample` the "
           "trainer used: the per-step guard of docs/LIVE.md never compares",
           {"refit_verify.live.vllm:RefitVerifyExtension.refit_verify_digests": _sample_dropped}, area="live",
           killers=(f"{KD}::test_rl_loop_snippet_runs_and_passes_a_correct_refit",)),
    Mutant("digest_codes_ignored", "digest (full and sampled) hashes only the scales: a weight the refit never "
           "sent (its scale sent) passes the RL-loop check of docs/LIVE.md",
           {f"{D}:_word_sums": _codes_ignored, f"{D}:_sampled_words": _sampled_codes_ignored}, area="live",
           killers=(f"{KD}::test_rl_loop_snippet_raises_naming_a_tensor_never_sent",)),
]


FF = "refit_verify.live.fileformat"
KERR = "suites/pr/test_live_errors.py"


def _record_blocks_only(original):
    # the old reader: a record is checked for its digest count only
    def check(path, label, name, rec):
        if not isinstance(rec, dict) or not isinstance(rec.get("blocks"), str):
            raise BadInputError(f"{path}: {label}/{name}: record without a 'blocks' string")
    return check


def _header_format_only(original):
    def check(path, doc):
        if not isinstance(doc, dict) or doc.get("format") != "refit-verify-digest":
            raise BadInputError(f"{path}: not a refit-verify digest file")
        if not isinstance(doc.get("ranks"), dict):
            raise BadInputError(f"{path}: 'ranks' missing or not an object")
        doc.setdefault("layout", {"tp": 1, "ep": 1, "pp": 1})
        if not isinstance(doc["layout"], dict):
            doc["layout"] = {"tp": 1, "ep": 1, "pp": 1}
    return check


def _foreign_accepted(original):
    def check(path, doc):
        if isinstance(doc, dict):
            doc = dict(doc, format="refit-verify-digest")
        return original(path, doc)
    return check


def _no_rank_check(original):
    def check(path, label, params, layout):
        return None
    return check


def _ignore_missing(original):
    @functools.wraps(original)
    def mutated(expected, engine):
        d = original(expected, engine)
        d.missing = []
        return d
    return mutated


def _ignore_meta(original):
    @functools.wraps(original)
    def mutated(expected, engine):
        d = original(expected, engine)
        d.meta = []
        return d
    return mutated


MUTANTS += [
    Mutant("digest_record_fields_unchecked", "the digest reader checks a record's digest count only: a record "
           "without its shape, a wrong n_blocks or non-hex digests is read as differences (exit 1) or crashes",
           {f"{FF}:_check_record": _record_blocks_only}, area="live", killers=(KERR,)),
    Mutant("digest_header_unchecked", "the digest reader checks format and ranks only: a wrong version, a "
           "malformed layout, block or sample is compared anyway",
           {f"{FF}:_check_header": _header_format_only}, area="live", killers=(KERR,)),
    Mutant("digest_foreign_file_accepted", "a JSON file of another format is read as a digest file",
           {f"{FF}:_check_header": _foreign_accepted}, area="live",
           killers=(f"{KL}::test_truncated_and_foreign_files_exit_2",)),
    Mutant("digest_rank_labels_unchecked", "rank labels are not checked against tpN.epN.ppN and the file's "
           "layout: a mislabelled rank reads as every parameter missing and extra",
           {f"{FF}:_check_rank": _no_rank_check}, area="live", killers=(KERR,)),
    Mutant("digest_diff_ignores_missing", "digest diff reports extra parameters but not ones the trainer sent "
           "and the engine never wrote", {f"{C}:compare_documents": _ignore_missing}, area="live",
           killers=(f"{KERR}::test_never_written_and_extra_parameters_each_named",
                    f"{KL}::test_stale_and_missing_parameters_named")),
    Mutant("digest_diff_ignores_meta", "digest diff ignores a recipe or layout disagreement between the files",
           {f"{C}:compare_documents": _ignore_meta}, area="live",
           killers=(f"{KERR}::test_recipe_disagreement_exits_1_naming_it",
                    f"{KERR}::test_layout_disagreement_exits_1_naming_it_and_the_ranks")),
]
