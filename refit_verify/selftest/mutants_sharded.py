"""Sharded/MoE-area mutants: real ways an MoE config or a sharded engine goes wrong, swapped in."""

from __future__ import annotations

from refit_verify.selftest.mutant import Mutant

C = "refit_verify.model.config"
CONFIG_TESTS = "suites/pr/test_model_moe_config.py"


def _mlp_only_ignored(original):
    # Qwen3-MoE mlp_only_layers dropped: a layer the engine keeps dense is treated as routed experts
    def is_moe_layer(self, layer):
        if self.style == "qwen3_moe":
            return self.num_experts > 0 and (layer + 1) % self.sparse_step == 0
        return original(self, layer)
    return is_moe_layer


def _first_dense_off_by_one(original):
    # DeepSeek-V3 first_k_dense_replace read as "last dense layer" (layer > k instead of >= k)
    def is_moe_layer(self, layer):
        if self.style == "deepseek_v3":
            return layer > self.first_k_dense and layer % self.layer_freq == 0
        return original(self, layer)
    return is_moe_layer


def _w13_scale_rows_joint(original):
    # w13 scale rows sized ceil(2I/128) over the fused pair instead of 2 * ceil(I/128) per shard
    def moe_engine_shapes(self, layer, local_experts, tp=1):
        out = original(self, layer, local_experts, tp)
        i = self.moe.moe_intermediate_size // tp
        key = f"model.layers.{layer}.mlp.experts.w13_weight_scale_inv"
        out[key] = (local_experts, -(-2 * i // 128), out[key][2])
        return out
    return moe_engine_shapes


MUTANTS = [
    Mutant("moe_mlp_only_layers_ignored", "Qwen3-MoE mlp_only_layers ignored: a dense layer exported as experts "
           "(scope mismatch between trainer and engine)", {f"{C}:MoESpec.is_moe_layer": _mlp_only_ignored},
           "sharded", killers=(f"{CONFIG_TESTS}::test_qwen3_mlp_only_layers_and_sparse_step",)),
    Mutant("moe_first_dense_off_by_one", "DeepSeek-V3 first_k_dense_replace off by one: layer k kept dense",
           {f"{C}:MoESpec.is_moe_layer": _first_dense_off_by_one}, "sharded",
           killers=(f"{CONFIG_TESTS}::test_deepseek_v3_first_dense_layers_and_shared_expert",)),
    Mutant("moe_w13_scale_rows_joint", "FusedMoE w13 scale grid sized over the fused pair, not per shard "
           "(vLLM fp8.py sizes it w13_num_shards * ceil(I/128))", {f"{C}:ModelConfig.moe_engine_shapes":
           _w13_scale_rows_joint}, "sharded",
           killers=(f"{CONFIG_TESTS}::test_fused_moe_engine_shapes_scale_rows_per_shard",)),
]


# -- the sharded reference engine (refit/sharded_engine.py, placement_sharded.py, sharded_run.py) ----------
P = "refit_verify.refit.placement_sharded"
E = "refit_verify.refit.sharded_engine"
R = "refit_verify.refit.sharded_run"
ENGINE_TESTS = "suites/pr/test_sharded_engine.py"
JOB_TESTS = "suites/pr/test_sharded_job.py"


def _scale_slice_from_rank0(original):
    # every rank reads the first ranks' scale blocks: the TP slice of scales ignores the rank
    def rank_slice(t, dim, shard_rank, local, block, is_scale, tensor, shard=None):
        return original(t, dim, 0 if is_scale else shard_rank, local, block, is_scale, tensor, shard)
    return rank_slice


def _expert_id_off_by_one(original):
    def expert_range(num_experts, ep_size, ep_rank):
        first, count = original(num_experts, ep_size, ep_rank)
        return (first + 1, count) if ep_size > 1 else (first, count)
    return expert_range


def _always_stage_local(original):
    def __init__(self, *args, **kwargs):
        args = list(args)
        if len(args) >= 8:
            args[7] = "local"
        else:
            kwargs["stage_names"] = "local"
        original(self, *args, **kwargs)
    return __init__


def _skip_expert_down_scale(original):
    def _load_expert(self, route, name, t, is_scale, pre, recipe):
        if route.wid == "w2":
            return []  # neither codes nor scale of down_proj loaded, on either path
        return original(self, route, name, t, is_scale, pre, recipe)
    return _load_expert


def _plain_storage_replaced(original):
    def _load_plain(self, name, t, is_scale):
        notes = original(self, name, t, is_scale)
        if not is_scale:
            self.plain[name] = t.detach().clone()  # a loader that rebinds instead of copying in place
        return notes
    return _load_plain


def _plain_accumulates(original):
    def _load_plain(self, name, t, is_scale):
        before = self.plain[name].clone() if name in self.plain and not is_scale else None
        notes = original(self, name, t, is_scale)
        if before is not None:
            self.plain[name].add_(before)  # in place, but the previous refit leaks into this one
        return notes
    return _load_plain


def _fp8_names_first_rank_only(original):
    def fp8_hf_names(self):
        return next(iter(self.ranks.values())).fp8_hf_names()
    return fp8_hf_names


def _no_misplacement_check(original):
    return lambda self, path: []


def _ledger_counts_once(original):
    def _write(self, key, source):
        if source not in self.writes[key]:
            self.writes[key].append(source)
    return _write


def _no_collision_check(original):
    def receive(self, batch):
        batch = list(batch)
        original(self, batch)
        self.findings = [f for f in self.findings if f.hazard != "name_collision"]
    return receive


def _kv_not_replicated(original):
    def qkv_partition(num_heads, num_kv_heads, tp):
        part = original(num_heads, num_kv_heads, tp)
        return type(part)(part.num_heads, part.num_kv_heads, 1)
    return qkv_partition


def _expert_scales_min_fill(original):
    def _build_experts(self, layer):
        original(self, layer)
        for name, t in self.experts.items():
            if name.endswith("_scale_inv") and f"layers.{layer}." in name:
                t.fill_(torch.finfo(torch.float32).min)
    return _build_experts


def _quantization_shared_per_refit(original):
    # the per-rank FP8-after quantization shared by name for the whole refit, not per arrived tensor:
    # a name that arrives twice (stage-local indices) is loaded with the first tensor's bytes
    def receive(self, batch):
        if not self._seen:  # first batch of a refit
            self._mutant_cache = {}
        cls = type(next(iter(self.ranks.values())))
        cls.qcache = property(lambda store: self._mutant_cache, lambda store, value: None)
        try:
            original(self, batch)
        finally:
            del cls.qcache
    return receive


import torch  # noqa: E402  (used by the factories above)

MUTANTS += [
    Mutant("sharded_scale_slice_rank0", "TP slice of block scales ignores the rank: every rank dequantizes with "
           "rank 0's scale blocks (vLLM #52997 class)", {f"{P}:rank_slice": _scale_slice_from_rank0}, "sharded",
           killers=(f"{ENGINE_TESTS}::test_tp_slices_codes_and_scales_as_vllm",
                    f"{ENGINE_TESTS}::test_moe_tp2_ep2_bitwise_on_every_rank")),
    Mutant("sharded_expert_id_off_by_one", "expert-parallel ownership off by one: rank r loads expert first+1 "
           "(NeMo-RL #2744, verl #7443 class)", {f"{P}:expert_range": _expert_id_off_by_one}, "sharded",
           killers=(f"{ENGINE_TESTS}::test_moe_tp2_ep2_bitwise_on_every_rank",
                    f"{ENGINE_TESTS}::test_ep_places_whole_experts_linearly")),
    Mutant("sharded_stage_local_names", "pipeline stages export stage-local layer indices (NeMo-RL #3259)",
           {f"{R}:ShardedTrainerExporter.__init__": _always_stage_local}, "sharded",
           killers=(f"{ENGINE_TESTS}::test_pp2_global_names_clean",)),
    Mutant("sharded_skipped_expert_down", "the loader skips the experts' down_proj: w2 scales silently stay 1.0 and "
           "both refit paths agree (only the write ledger sees it)", {f"{E}:RankStore._load_expert":
           _skip_expert_down_scale}, "sharded", killers=(f"{ENGINE_TESTS}::test_moe_tp2_ep2_bitwise_on_every_rank",)),
    Mutant("sharded_storage_replaced", "a refit rebinds parameters to new tensors instead of copying in place "
           "(CUDA graphs keep the old storage)", {f"{E}:RankStore._load_plain": _plain_storage_replaced}, "sharded",
           killers=(f"{JOB_TESTS}::test_idempotent_and_storage_stable",)),
    Mutant("sharded_not_idempotent", "a refit leaks the previous step's values (A -> B -> A differs from A)",
           {f"{E}:RankStore._load_plain": _plain_accumulates}, "sharded",
           killers=(f"{JOB_TESTS}::test_idempotent_and_storage_stable",)),
    Mutant("sharded_fp8_names_rank0_only", "the FP8 name list is taken from rank 0 only: later pipeline stages' "
           "FP8 weights go out unquantized", {f"{E}:ShardedReferenceEngine.fp8_hf_names":
           _fp8_names_first_rank_only}, "sharded", killers=(f"{ENGINE_TESTS}::test_pp2_global_names_clean",)),
    Mutant("sharded_misplacement_unchecked", "the silent scale-misplacement check is off",
           {f"{E}:RankStore.misplaced_findings": _no_misplacement_check}, "sharded",
           killers=(f"{ENGINE_TESTS}::test_quantize_before_or_after_gather_on_a_192_row_partition",)),
    Mutant("sharded_ledger_counts_once", "the write ledger counts a part once however often it is written",
           {f"{E}:RankStore._write": _ledger_counts_once}, "sharded",
           killers=(f"{ENGINE_TESTS}::test_pp2_stage_local_names_collide",)),
    Mutant("sharded_collision_unchecked", "a source name arriving twice in one refit goes unreported",
           {f"{E}:ShardedReferenceEngine.receive": _no_collision_check}, "sharded",
           killers=(f"{ENGINE_TESTS}::test_pp2_stage_local_names_collide",
                    f"{JOB_TESTS}::test_job_pp2_stage_local_names_report_collision")),
    Mutant("sharded_quantization_shared_by_name", "ranks share on-load quantization by name across the refit: a "
           "second tensor under the same name gets the first one's bytes", {f"{E}:ShardedReferenceEngine.receive":
           _quantization_shared_per_refit}, "sharded",
           killers=(f"{ENGINE_TESTS}::test_pp2_stage_local_names_collide",)),
    Mutant("sharded_kv_not_replicated", "kv heads not replicated when tp exceeds them: k/v read at tp_rank, "
           "not tp_rank // replicas", {f"{P}:qkv_partition": _kv_not_replicated}, "sharded",
           killers=(f"{ENGINE_TESTS}::test_rules_pinned_from_vllm_source",)),
    Mutant("sharded_expert_scales_min_fill", "FusedMoE block scales created with the linear layers' float32-min "
           "fill instead of torch.ones (vLLM fp8.py)", {f"{E}:RankStore._build_experts": _expert_scales_min_fill},
           "sharded", killers=(f"{ENGINE_TESTS}::test_never_loaded_expert_scale_stays_one",)),
]


def _rank_drops_scales(original):
    # a worker that keeps only the FP8 codes of what arrives: its scales stay at the placeholder fill
    def load(store, name, t, pre, recipe):
        return [] if name.endswith("_scale_inv") else original(store, name, t, pre, recipe)
    return load


MUTANTS.append(
    Mutant("process_rank_drops_scales", "an engine worker process that loads the FP8 codes of its shard but "
           "not their scales (a rank-local loader bug the single-process simulation cannot show)",
           {"refit_verify.refit.sharded_processes:_load": _rank_drops_scales}, area="sharded",
           killers=("suites/pr/test_sharded_processes.py::test_two_processes_hold_the_reference_bytes_on_every_rank",)))
