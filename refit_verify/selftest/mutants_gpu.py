"""Mutants for the fast paths: the kernel spec, the emulation, the Triton launch, the streaming verifier.

Killers under suites/pr run on every PR; those under suites/nightly run where CUDA is
(tools/gpu_nightly.sh: `refit-verify selftest --lane gpu`).
"""

from __future__ import annotations

import dataclasses

import torch

from refit_verify.selftest.mutant import Mutant

PR = "suites/pr/test_kernels_emulation.py"
NIGHTLY = "suites/nightly/test_triton_exact.py"
FUSED_PR = "suites/pr/test_fused_interpreter.py::test_fused_matches_two_copy_in_interpreter"
FUSED_NIGHTLY = "suites/nightly/test_fused_verify.py::test_fused_matches_two_copy_path"


def _float_equal_codes(orig):
    # a float compare of fp8: -0.0 == +0.0, so a sign-of-zero difference goes unseen
    def codes(t):
        c = orig(t)
        return torch.where(c == 0x80, torch.zeros_like(c), c)

    return codes


def _skip_last(orig):
    def verify_stream(weights, *a, **kw):
        items = list(weights)
        return orig(items[:-1], *a, **kw)

    return verify_stream


def _flip(key):
    def factory(orig):
        def semantics(device):
            d = orig(device)
            d[key] = not d[key]
            return d

        return semantics

    return factory


def _zero_pad_for_nemo(orig):
    def kernel_spec(recipe, div_recip, cast_nan):
        return dataclasses.replace(orig(recipe, div_recip, cast_nan), pad_edge=False)

    return kernel_spec


def _nan_dropping_amax(orig):
    def amax_bits(tiles):
        return torch.nan_to_num(tiles.float().abs(), nan=0.0).amax(dim=(-2, -1), keepdim=True)

    return amax_bits


def _edge_value_off_by_one(orig):
    def table(xs, datas, scales):
        tab, even, aligned = orig(xs, datas, scales)
        tab = tab.clone()
        tab[:, 7] -= 1  # pads with x[-1, -2]
        return tab, even, aligned

    return table


def _fused_drops_scale_diffs(orig):
    def totals(*a, **kw):
        per_t, sums = orig(*a, **kw)
        per_t[:, 1] = 0
        return per_t, sums

    return totals


def _fused_no_full_rule_pass(orig):
    def run(self):
        orig(self)
        self.rec[:, 5:] = torch.where((self.rec[:, 4:5] == 2), 0, self.rec[:, 5:])  # pass 3's counts lost
        return self

    return run


def _no_fused_pair(orig):
    def pair(quantize_a, quantize_b):
        return None

    return pair


def _fused_counts_far_blocks(orig):
    def counted(cls, far):
        return cls == 1

    return counted


MUTANTS = [
    Mutant("verifier_compares_fp8_as_float", "fp8 compared as floats hides -0/+0 (ARCHITECTURE: compare bytes)",
           {"refit_verify.compare.bitwise:code_bytes": _float_equal_codes}, area="verifier",
           killers=(PR + "::test_verifier_sees_signed_zero",)),
    Mutant("verifier_ignores_scales", "scale_inv not compared: 1-ulp scale differences pass (FACTS.md §3 nemo vs vllm)",
           {"refit_verify.compare.bitwise:scale_bits": lambda o: (lambda s: torch.zeros(s.shape, dtype=torch.int32, device=s.device))},
           area="verifier",
           killers=(PR + "::test_verifier_sees_scale_only_difference",)),
    Mutant("verifier_skips_last_tensor", "off-by-one in the stream: the last tensor (lm_head side) never checked",
           {"refit_verify.compare.stream:verify_stream": _skip_last}, area="verifier",
           killers=(PR + "::test_verifier_checks_last_tensor",)),
    Mutant("kernel_assumes_true_division", "CUDA torch computes a/448 as a*(1/448); assuming division breaks parity",
           {"refit_verify.fp8.kernels.spec:device_semantics": _flip("div_recip")}, area="fp8",
           killers=(PR + "::test_emulation_matches_reference", NIGHTLY + "::test_kernel_bit_exact",)),
    Mutant("kernel_wrong_cast_overflow_rule", "torch 2.11 casts >=464 to NaN, 2.13 CPU saturates (FACTS.md §3)",
           {"refit_verify.fp8.kernels.spec:device_semantics": _flip("cast_nan")}, area="fp8",
           killers=(PR + "::test_emulated_cast_matches_torch", NIGHTLY + "::test_cast_helper_dense",)),
    Mutant("kernel_zero_pads_nemo", "NeMo pads with x[-1,-1], not zeros (FACTS.md §3 edge-pad example)",
           {"refit_verify.fp8.kernels.spec:kernel_spec": _zero_pad_for_nemo}, area="fp8",
           killers=(PR + "::test_emulation_matches_reference", NIGHTLY + "::test_kernel_bit_exact",)),
    Mutant("emulation_amax_drops_nan", "a float max reduction drops NaN (tl.max does)",
           {"refit_verify.fp8.kernels.emulate:amax_bits": _nan_dropping_amax}, area="fp8",
           killers=(PR + "::test_emulation_matches_reference",)),
    Mutant("triton_float_amax", "the Triton kernel reduces amax with tl.max on floats: NaN blocks get finite scales",
           {"refit_verify.fp8.kernels.triton_block:DEFAULT_LAUNCH":
            lambda o: {**o, "float_amax": True}}, area="fp8",
           killers=(NIGHTLY + "::test_kernel_nan_block_propagates",)),
    Mutant("grouped_edge_value_off_by_one", "grouped work table points NeMo's pad value one element early",
           {"refit_verify.fp8.kernels.grouped:_table": _edge_value_off_by_one}, area="fp8",
           killers=("suites/nightly/test_grouped_exact.py::test_grouped_matches_reference",)),
    Mutant("fused_verify_drops_scale_diffs", "fused verifier's per-tensor reduction loses scale-only differences",
           {"refit_verify.compare.fused:_tensor_totals": _fused_drops_scale_diffs}, area="verifier",
           needs=("triton",), killers=(FUSED_PR, FUSED_NIGHTLY)),
    Mutant("fused_verify_skips_full_rule", "fused verifier trusts the bare-cast screen everywhere: blocks with "
           "NaN/inf, overflow or partial edges (NeMo edge padding) are never compared by the full rule",
           {"refit_verify.fp8.kernels.fused_verify:FusedLaunch.run": _fused_no_full_rule_pass}, area="verifier",
           needs=("triton",), killers=(FUSED_PR, FUSED_NIGHTLY)),
    Mutant("fused_verify_not_used", "verify_stream keeps the two-copy path for two kernel-supported recipes "
           "(1.25 s / 3.2 s for Llama-3.1-8B on an H200 instead of milliseconds)",
           {"refit_verify.compare.stream:_fused_pair": _no_fused_pair}, area="verifier", needs=("cuda",),
           killers=("suites/nightly/test_fused_verify.py::test_fused_verifier_target_llama",)),
    Mutant("fused_verify_hist_ignores_far", "fused verifier takes every differing code of a fast-compared "
           "block as one fp8 step apart, also where some are further (pow2 vs exact scales)",
           {"refit_verify.compare.fused:_counted": _fused_counts_far_blocks}, area="verifier",
           needs=("triton",), killers=(FUSED_PR, FUSED_NIGHTLY)),
]
