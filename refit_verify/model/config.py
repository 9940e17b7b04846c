"""Model configs: the HF parameter names and shapes a refit moves, and how the engine fuses them."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Optional


@dataclass(frozen=True)
class ShardSpec:
    hf_suffix: str  # e.g. "self_attn.q_proj"
    shard_id: object  # "q"/"k"/"v", 0/1, or None for an unfused layer
    rows: int


@dataclass(frozen=True)
class LinearSpec:
    """One engine-side linear: `engine_suffix` holds the shards stacked along the output dim."""

    engine_suffix: str  # e.g. "self_attn.qkv_proj"
    shards: tuple[ShardSpec, ...]
    in_features: int

    @property
    def out_features(self) -> int:
        return sum(s.rows for s in self.shards)

    @property
    def fused(self) -> bool:
        return len(self.shards) > 1


@dataclass(frozen=True)
class ModelConfig:
    name: str
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    v_head_dim: Optional[int] = None  # MiMo-like: v heads narrower than q/k heads
    rms_norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    tie_word_embeddings: bool = False
    qk_norm: bool = False  # Qwen3: per-head RMSNorm on q and k
    moe_router_experts: Optional[int] = None  # adds mlp.gate.weight [E, hidden], kept BF16 by the engine
    bf16_layers: tuple[int, ...] = ()  # decoder layers the engine keeps in BF16 (first/last layer options)
    extra_linears: tuple = ()  # raw dicts for non-Llama fused layers (DeepSeek fused_qkv_a)
    note: str = ""
    source: str = ""

    def with_layers(self, n: int) -> "ModelConfig":
        """Depth cut: full width, fewer layers (what fits the machine)."""
        from dataclasses import replace

        return replace(self, num_hidden_layers=n, bf16_layers=tuple(i for i in self.bf16_layers if i < n))

    @property
    def q_size(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_key_value_heads * self.head_dim

    @property
    def v_size(self) -> int:
        return self.num_key_value_heads * (self.v_head_dim or self.head_dim)

    def layer_linears(self) -> list[LinearSpec]:
        h, i = self.hidden_size, self.intermediate_size
        specs = [
            LinearSpec("self_attn.qkv_proj", (
                ShardSpec("self_attn.q_proj", "q", self.q_size),
                ShardSpec("self_attn.k_proj", "k", self.kv_size),
                ShardSpec("self_attn.v_proj", "v", self.v_size),
            ), h),
            LinearSpec("self_attn.o_proj", (ShardSpec("self_attn.o_proj", None, h),),
                       self.num_attention_heads * (self.v_head_dim or self.head_dim)),
            LinearSpec("mlp.gate_up_proj", (ShardSpec("mlp.gate_proj", 0, i), ShardSpec("mlp.up_proj", 1, i)), h),
            LinearSpec("mlp.down_proj", (ShardSpec("mlp.down_proj", None, h),), i),
        ]
        for extra in self.extra_linears:
            specs.append(LinearSpec(extra["engine_suffix"], tuple(
                ShardSpec(s["hf_suffix"], s.get("shard_id"), s["rows"]) for s in extra["shards"]
            ), extra["in_features"]))
        return specs

    def hf_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every trainer-side (HF-named) parameter and its shape, in export order."""
        out: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (self.vocab_size, self.hidden_size)}
        for layer in range(self.num_hidden_layers):
            p = f"model.layers.{layer}."
            out[p + "input_layernorm.weight"] = (self.hidden_size,)
            for spec in self.layer_linears():
                for s in spec.shards:
                    out[p + s.hf_suffix + ".weight"] = (s.rows, spec.in_features)
            if self.qk_norm:
                out[p + "self_attn.q_norm.weight"] = (self.head_dim,)
                out[p + "self_attn.k_norm.weight"] = (self.head_dim,)
            out[p + "post_attention_layernorm.weight"] = (self.hidden_size,)
            if self.moe_router_experts:
                out[p + "mlp.gate.weight"] = (self.moe_router_experts, self.hidden_size)
        out["model.norm.weight"] = (self.hidden_size,)
        if not self.tie_word_embeddings:
            out["lm_head.weight"] = (self.vocab_size, self.hidden_size)
        return out

    def to_dict(self) -> dict:
        return asdict(self)


def _configs_dir() -> Path:
    return Path(str(resources.files("refit_verify") / "data" / "configs"))


def list_configs() -> list[str]:
    return sorted(p.stem for p in _configs_dir().glob("*.json"))


def load_config(name_or_path: str, layers: Optional[int] = None) -> ModelConfig:
    """A named config shipped with the package, or a JSON file (HF config.json keys accepted)."""
    path = _configs_dir() / f"{name_or_path}.json"
    if not path.exists():
        path = Path(name_or_path)
    if not path.exists():
        from refit_verify.errors import BadInputError

        raise BadInputError(f"unknown model config {name_or_path!r}; known: {', '.join(list_configs())}")
    raw = json.loads(path.read_text())
    cfg = from_dict(raw, default_name=path.stem)
    return cfg.with_layers(layers) if layers is not None else cfg


def from_dict(raw: dict, default_name: str = "model") -> ModelConfig:
    heads = raw["num_attention_heads"]
    known = {f for f in ModelConfig.__dataclass_fields__}
    kw = {k: v for k, v in raw.items() if k in known}
    kw.setdefault("name", default_name)
    kw.setdefault("num_key_value_heads", heads)
    kw.setdefault("head_dim", raw["hidden_size"] // heads)
    for key in ("bf16_layers", "extra_linears"):
        if key in kw:
            kw[key] = tuple(kw[key])
    return ModelConfig(**kw)
