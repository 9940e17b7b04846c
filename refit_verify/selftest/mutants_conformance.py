"""Mutants the real-vLLM conformance suite (suites/conformance) must kill.

They live in area "conformance": the PR kill matrix skips them (the PR suite has no vLLM to hold
the reference against); suites/selftest/test_conformance_kill_matrix.py runs them in the `vllm`
tox env, each against the conformance files named in TARGETS.
"""

from __future__ import annotations

import dataclasses

import functools

import torch

from refit_verify.selftest.mutant import Mutant

P = "refit_verify.fp8.presets"
V = "refit_verify.engine.vllm_cpu"


def _recipe(attr: str, **changes):
    return {f"{P}:{attr}": lambda original: original.replace(**changes)}


def _place_exact(original):
    """The reference loader's 'vllm' scale placement silently replaced by the correct rule."""
    from refit_verify.refit.placement import place_block_scales_first_row_owner

    @functools.wraps(original)
    def mutated(fused_scale, shard_scale, offset_rows, size_rows, block_n, tensor=None, shard=None):
        place_block_scales_first_row_owner(fused_scale, shard_scale, offset_rows, size_rows, block_n)
    return mutated


def _exact_mode(original):
    """Every reference EngineLinear built in the correct ("exact", per-row scale) mode, whatever
    placement was asked for: the reference then no longer reproduces vLLM's mis-scale nor its raise."""
    func = original.__func__

    def create(cls, prefix, spec, fp8, placement, block=(128, 128)):
        return func(cls, prefix, spec, fp8, "exact", block)
    return classmethod(create)


def _value_cast_bytes(original):
    return lambda t: t  # uint8 bytes reach the fp8 parameter as numbers: copy_ value-casts them


def _pretend_online_quant(original):
    """A harness that assumes vLLM quantizes BF16 on load (quantizes for it, hiding the hazard)."""
    @functools.wraps(original)
    def mutated(model, weights, process=False):
        from refit_verify.fp8 import quantize

        out = []
        for n, t in weights:
            if n.endswith(".weight") and t.dim() == 2 and ".layers." in n and t.dtype == torch.bfloat16:
                q = quantize(t, "vllm_per_block", name=n)
                out += [(n, q.data), (n + "_scale_inv", q.scale_inv)]
            else:
                out.append((n, t))
        return original(model, out, process)
    return mutated


def _no_findings(original):
    return lambda *a, **k: []


MUTANTS = [
    Mutant("act_native_ue8m0_pow", "native activation UE8M0 as torch.pow(2, .) instead of vLLM's torch.exp2: "
           "NaN groups get the other NaN sign (found by this suite)",
           _recipe("VLLM_ACT_GROUP_NATIVE_UE8M0", pow2="float_ceil"), area="conformance"),
    Mutant("act_native_refuses_partial_group", "native activation path assumed to need K % 128 == 0; vLLM "
           "zero-pads the last group (found by this suite)",
           _recipe("VLLM_ACT_GROUP_NATIVE", padding="none"), area="conformance"),
    Mutant("weight_ue8m0_bits_for_float", "vLLM weight UE8M0 modelled with DeepGEMM's bit rule "
           "(FACTS.md §3: differs one ulp above a power of two)",
           _recipe("VLLM_PER_BLOCK_UE8M0", pow2="bits_ceil"), area="conformance"),
    Mutant("weight_quantize_div", "x / sf instead of vLLM's x * (1/sf) (FACTS.md §3 operation order)",
           _recipe("VLLM_PER_BLOCK", quantize_op="div"), area="conformance"),
    Mutant("engine_block_64", "engine quantization_config weight_block_size [64,64] while the trainer "
           "quantizes 128x128 (block-size mismatch between trainer and engine)",
           {f"{V}:BLOCK": lambda original: [64, 64]}, area="conformance"),
    Mutant("driver_uint8_value_cast", "packed-transport uint8 bytes handed to load_weights as numbers "
           "(FACTS.md §5 view(uint8); tools/probe_vllm_cpu.py hazard)",
           {f"{V}:_as_fp8": _value_cast_bytes}, area="conformance"),
    Mutant("assume_vllm_quantizes_on_load", "harness assumes vLLM 0.33 quantizes BF16 on load (it value-casts): "
           "FP8-after against real vLLM would look healthy",
           {f"{V}:load_weights_into": _pretend_online_quant}, area="conformance"),
    Mutant("ref_placement_exact", "reference loader swapped to the correct ('exact', per-row) placement mode: "
           "no longer reproduces vLLM's raise (64-row KV) nor its silent mis-scale (3072/192/128)",
           {"refit_verify.refit.loader:EngineLinear.create": _exact_mode}, area="conformance"),
    Mutant("ref_placement_no_raise", "reference 'vllm' placement writes blocks by first-row owner instead of "
           "vLLM's ceil-rounded narrow: same bytes where it loads, but vLLM's raise is not reproduced",
           {"refit_verify.refit.placement:place_scale_vllm": _place_exact}, area="conformance"),
    Mutant("vllm_refit_hides_no_online_quant", "run --engine vllm reports FP8-after against stock vLLM as "
           "healthy (no finding for the value-cast BF16)",
           {"refit_verify.engine.vllm_refit:no_online_quant_findings": _no_findings}, area="conformance"),
]

# mutant -> conformance files that must kill it (each run stops at the first failure)
_Q = "suites/conformance/test_quantizer_conformance.py"
_L = "suites/conformance/test_loader_vllm_pins.py"
_M = "suites/conformance/test_model_vllm_pins.py"
_R = "suites/conformance/test_loader_conformance.py"
TARGETS = {
    "act_native_ue8m0_pow": [_Q],
    "act_native_refuses_partial_group": [_Q],
    "weight_ue8m0_bits_for_float": [_Q],
    "weight_quantize_div": [_Q],
    "engine_block_64": [_L, _M],
    "driver_uint8_value_cast": [_L, _M],
    "assume_vllm_quantizes_on_load": [_M],
    "ref_placement_exact": [_R],
    "ref_placement_no_raise": [_R],
    "vllm_refit_hides_no_online_quant": [_R],
    "live_extension_stale_params": ["suites/conformance/test_live_vllm.py"],  # declared in mutants_live
}

# mutant -> module it needs (the reference pipeline, branch refit): skipped, with the reason, until present
NEEDS = {"ref_placement_exact": "refit_verify.refit.loader", "ref_placement_no_raise": "refit_verify.refit.placement", "vllm_refit_hides_no_online_quant": "refit_verify.refit.run"}

# Only suites run against the real vLLM can kill these; the CPU kill matrix lists them as not run.
MUTANTS = [dataclasses.replace(m, needs=("vllm",)) for m in MUTANTS]
