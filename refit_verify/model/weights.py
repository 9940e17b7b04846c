"""Deterministic synthetic weights whose statistics resemble trained ones (not plain randn).

Linear weights get a per-output-channel log-normal gain and a few heavy input channels, the
outlier structure that decides FP8 block scales in real checkpoints. Each tensor derives its own
seed from (base seed, name), so one tensor can be regenerated alone.
"""

from __future__ import annotations

import math

import torch

from refit_verify.cases import case_seed
from refit_verify.model.config import ModelConfig


def synth_tensor(name: str, shape: tuple[int, ...], seed: int, dtype=torch.bfloat16) -> torch.Tensor:
    g = torch.Generator().manual_seed(case_seed(seed, name))
    if len(shape) == 1:  # norm gains around 1
        return (1.0 + 0.05 * torch.randn(shape, generator=g)).to(dtype)
    rows, cols = shape
    if "embed_tokens" in name or "lm_head" in name:
        return (0.02 * torch.randn(shape, generator=g)).to(dtype)
    w = torch.randn(shape, generator=g) / math.sqrt(cols)
    w *= torch.exp(0.3 * torch.randn(rows, 1, generator=g))  # per-output-channel gain
    n_heavy = max(1, cols // 512)
    heavy = torch.randperm(cols, generator=g)[:n_heavy]
    w[:, heavy] *= 8.0  # outlier input channels, as in trained LLM linears
    return w.to(dtype)


def synthesize_weights(cfg: ModelConfig, seed: int = 0, dtype=torch.bfloat16) -> dict[str, torch.Tensor]:
    return {name: synth_tensor(name, shape, seed, dtype) for name, shape in cfg.hf_shapes().items()}


def iter_synth_weights(cfg: ModelConfig, seed: int = 0, dtype=torch.bfloat16, device="cpu"):
    """Streaming form for full-size models: one tensor alive at a time."""
    for name, shape in cfg.hf_shapes().items():
        yield name, synth_tensor(name, shape, seed, dtype).to(device)
