"""Model-area mutants: each is a real way a W8A8 forward or its metrics go wrong, swapped in."""

from __future__ import annotations

import dataclasses

import torch

from refit_verify.fp8.presets import get_recipe
from refit_verify.fp8.quantize import quantize
from refit_verify.selftest.mutant import Mutant

L = "refit_verify.model.linear"


def _act_divided(original):
    # activation scale applied the wrong way round (divide where dequant multiplies)
    def dequantize_act(a):
        m, k = a.data.shape
        return (a.data.float().reshape(m, k // 128, 128) / a.scale_inv[..., None]).reshape(m, k)
    return dequantize_act


def _scale_transposed(original):
    # the (N/128, K/128) grid read in the other order: transposed, or scrambled when not square
    return lambda w, scale_inv: original(w, scale_inv.t().reshape(scale_inv.shape))


def _as_e5m2(original):
    return lambda w, scale_inv: original(w.view(torch.float8_e5m2), scale_inv)


def _per_token(original):
    # one scale per token instead of per 1x128 group (a per-token-row kernel wired in by mistake)
    def quantize_act(x2d, recipe="vllm_act_group", name=None):
        r = get_recipe(recipe)
        qt = quantize(x2d, r.replace(name=r.name + "_per_token", block=(1, x2d.shape[1])), name)
        return original.__globals__["ActQuant"](qt.data, qt.scale_inv.repeat(1, x2d.shape[1] // 128))
    return quantize_act


def _ue8m0_acts(original):
    # DeepGEMM-style power-of-two activation scales where the engine uses plain amax/448
    return lambda x2d, recipe="vllm_act_group", name=None: original(x2d, "vllm_act_group_ue8m0", name)


def _swap_kv(original):
    def split_fused(y, sizes):
        parts = original(y, sizes)
        return [parts[0], parts[2], parts[1]] if len(parts) == 3 and sizes[1] == sizes[2] else parts
    return split_fused


def _swap_gate_up(original):
    return lambda y, sizes: original(y, sizes)[::-1] if len(sizes) == 2 else original(y, sizes)


def _scale_rows_rolled(original):
    # block-scale rows of the fused qkv filed one block off (FACTS.md §4: misfiled shard scales)
    def build_engine_params(*args, **kw):
        out = original(*args, **kw)
        return {k: (v.roll(1, 0) if k.endswith("qkv_proj.weight_scale_inv") else v) for k, v in out.items()}
    return build_engine_params


def _greedy_rule_ignored(original):
    return lambda *a, **k: dataclasses.replace(original(*a, **k), topk_consistent=True, violations=[])


def _gen_kl_is_full_kl(original):
    # reporting the full-distribution KL under NeMo-RL's sampled-token gen_kl_error name
    return lambda *a, **k: (lambda d: dataclasses.replace(d, gen_kl_error=d.kl_mean))(original(*a, **k))


def _rope_wrong_half(original):
    # rotate-half with the halves not swapped (GPT-J interleave confusion) breaks HF conformance
    def apply_rope(x, cos, sin):
        half = x.shape[-1] // 2
        return x * cos + torch.cat([-x[..., :half], x[..., half:]], -1) * sin
    return apply_rope


def _nondeterministic(original):
    # an accumulation order that changes run to run (split-K / atomics): same bytes, different logits
    def emulated_gemm(*args, **kw):
        y = original(*args, **kw)
        return y + y.abs().max() * 1e-5 * torch.randn(y.shape, dtype=y.dtype)
    return emulated_gemm


def _stale_engine(original):
    # the refit never lands: the engine keeps serving the first weights it loaded
    memo = {}

    def build_engine_params(*args, **kw):
        if "first" not in memo:
            memo["first"] = original(*args, **kw)
        return memo["first"]
    return build_engine_params


MUTANTS = [
    Mutant("act_scale_divided", "activation group scale applied as a divisor in dequant (scale vs scale_inv "
           "confusion, FACTS.md §2 stores the dequantizing factor)", {f"{L}:dequantize_act": _act_divided}, "model"),
    Mutant("weight_scale_transposed", "weight_scale_inv grid read transposed / in the wrong order (native GEMM "
           "scale layouts differ across torch releases)", {f"{L}:dequantize_weight": _scale_transposed}, "model"),
    Mutant("fp8_bytes_as_e5m2", "FP8 bytes reinterpreted as float8_e5m2", {f"{L}:dequantize_weight": _as_e5m2}, "model"),
    Mutant("act_per_token_not_group", "per-token activation scale instead of vLLM's 1x128 groups",
           {f"{L}:quantize_act": _per_token}, "model"),
    Mutant("act_ue8m0_scales", "UE8M0 activation scales where the engine uses amax/448 (FACTS.md §3)",
           {f"{L}:quantize_act": _ue8m0_acts}, "model"),
    Mutant("qkv_split_k_v_swapped", "fused qkv output split with k and v swapped",
           {"refit_verify.model.llama:split_fused": _swap_kv}, "model"),
    Mutant("gate_up_swapped", "gate_up_proj halves swapped (silu applied to up)",
           {"refit_verify.model.llama:split_fused": _swap_gate_up}, "model"),
    Mutant("qkv_scale_rows_misfiled", "fused scale rows filed one block off (vLLM ceil placement, FACTS.md §4)",
           {"refit_verify.model.weights:build_engine_params": _scale_rows_rolled}, "model"),
    Mutant("greedy_topk_rule_ignored", "greedy comparison that never applies vLLM's top-k rule",
           {"refit_verify.model.logits:compare_greedy": _greedy_rule_ignored}, "model"),
    Mutant("gen_kl_is_full_kl", "gen_kl_error computed as full KL instead of NeMo-RL's sampled-token k3",
           {"refit_verify.model.logits:compare_logits": _gen_kl_is_full_kl}, "model"),
    Mutant("gemm_nondeterministic", "GEMM whose result varies run to run (split-K, atomics)",
           {f"{L}:emulated_gemm": _nondeterministic}, "model"),
    Mutant("refit_not_applied", "engine keeps the weights it first loaded; later refits are lost",
           {"refit_verify.model.weights:build_engine_params": _stale_engine}, "model"),
    Mutant("rope_wrong_half", "RoPE rotate-half without swapping halves",
           {"refit_verify.model.llama:apply_rope": _rope_wrong_half}, "model"),
]

# Mutants only an optional dependency's check can kill: the selftest skips them with this reason.
REQUIRES = {"rope_wrong_half": "transformers"}
