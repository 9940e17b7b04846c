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


def build_engine_params(cfg: ModelConfig, hf: dict[str, torch.Tensor], recipe="vllm_per_block",
                        fp8_layers=None) -> dict[str, torch.Tensor]:
    """The engine-side parameter dict a correct refit leaves behind (vLLM names, fused rows).

    Each HF shard is quantized on its own and shards are stacked along rows, codes and block
    scales alike: exact only when every shard but the last is a multiple of 128 rows (otherwise
    vLLM's ceil-based scale placement misfiles blocks; FACTS.md §4), so that case is refused.
    Layers in `cfg.bf16_layers` (or outside `fp8_layers`) stay BF16 under the fused name.
    """
    from refit_verify.errors import BadInputError
    from refit_verify.fp8.quantize import quantize

    out: dict[str, torch.Tensor] = {}
    fused_hf: set[str] = set()
    for layer in range(cfg.num_hidden_layers):
        p = f"model.layers.{layer}."
        fp8 = layer not in cfg.bf16_layers and (fp8_layers is None or layer in fp8_layers)
        for spec in cfg.layer_linears():
            names = [p + s.hf_suffix + ".weight" for s in spec.shards]
            if not all(n in hf for n in names):
                continue
            fused_hf.update(names)
            target = p + spec.engine_suffix + ".weight"
            if not fp8:
                out[target] = torch.cat([hf[n].to(torch.bfloat16) for n in names], 0)
                continue
            for s in spec.shards[:-1]:
                if s.rows % 128:
                    raise BadInputError(f"shard {s.hf_suffix} has {s.rows} rows, not a multiple of 128: "
                                        "per-shard block scales cannot be stacked", target)
            qts = [quantize(hf[n], recipe, n) for n in names]
            out[target] = torch.cat([q.data.contiguous().view(torch.uint8) for q in qts], 0).view(torch.float8_e4m3fn)
            out[target + "_scale_inv"] = torch.cat([q.scale_inv for q in qts], 0)
    for name, t in hf.items():
        if name not in fused_hf:
            out[name] = t
    return out
