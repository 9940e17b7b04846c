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
