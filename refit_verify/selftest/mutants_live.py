"""Mutants of the live-run digest: each models a checksum that would let a wrong refit pass."""

from __future__ import annotations

import functools

import torch

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


C = "refit_verify.live.compare"
KC = ("suites/pr/test_live_compare.py",)

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
]
