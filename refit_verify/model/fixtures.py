"""Cached deterministic inputs for the model suites (weights are pure functions of the seed).

Only inputs are cached, never models: a mutant swapped into the forward or the linear must be
seen by a model built after the swap. Callers must not modify the returned tensors.
"""

from __future__ import annotations

import functools

import torch

from refit_verify.model.config import ModelConfig, load_config
from refit_verify.model.weights import build_engine_params, synthesize_weights

DEFAULT_CONFIG = "tiny-llama"


@functools.lru_cache(maxsize=4)
def config(name: str = DEFAULT_CONFIG) -> ModelConfig:
    return load_config(name)


@functools.lru_cache(maxsize=8)
def hf_weights(name: str = DEFAULT_CONFIG, seed: int = 0) -> dict[str, torch.Tensor]:
    return synthesize_weights(config(name), seed)


@functools.lru_cache(maxsize=8)
def engine_params(name: str = DEFAULT_CONFIG, seed: int = 0, recipe: str = "vllm_per_block") -> dict[str, torch.Tensor]:
    return build_engine_params(config(name), hf_weights(name, seed), recipe)
