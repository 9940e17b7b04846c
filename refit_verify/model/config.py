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


BLOCK = 128


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class MoESpec:
    """Routed (and shared) experts, as the HF config.json of Qwen3-MoE or DeepSeek-V3 declares them."""

    style: str  # "qwen3_moe" or "deepseek_v3": which HF keys and which vLLM layer rule apply
    num_experts: int
    moe_intermediate_size: int
    experts_per_tok: int = 1
    sparse_step: int = 1  # Qwen3-MoE decoder_sparse_step
    mlp_only_layers: tuple[int, ...] = ()  # Qwen3-MoE: layers kept dense
    first_k_dense: int = 0  # DeepSeek-V3 first_k_dense_replace
    layer_freq: int = 1  # DeepSeek-V3 moe_layer_freq
    n_shared_experts: int = 0  # DeepSeek-V3: one shared MLP of n * moe_intermediate_size
    shared_expert_intermediate_size: int = 0  # Qwen-MoE style shared expert (+ shared_expert_gate)

    def is_moe_layer(self, layer: int) -> bool:
        """vLLM's own rule (qwen3_moe.py / deepseek_v2.py decoder layer constructors)."""
        if self.style == "deepseek_v3":
            return layer >= self.first_k_dense and layer % self.layer_freq == 0
        return layer not in self.mlp_only_layers and self.num_experts > 0 and (layer + 1) % self.sparse_step == 0

    @property
    def shared_intermediate(self) -> int:
        if self.style == "deepseek_v3":
            return self.n_shared_experts * self.moe_intermediate_size
        return self.shared_expert_intermediate_size


def moe_from_hf(raw: dict) -> Optional[MoESpec]:
    """Read the MoE keys of an HF config.json (either family); None for a dense model."""
    if raw.get("moe") is not None:
        m = dict(raw["moe"])
        m["mlp_only_layers"] = tuple(m.get("mlp_only_layers", ()))
        return MoESpec(**m)
    if raw.get("n_routed_experts"):
        return MoESpec("deepseek_v3", raw["n_routed_experts"], raw["moe_intermediate_size"],
                       raw.get("num_experts_per_tok", 1), first_k_dense=raw.get("first_k_dense_replace", 0),
                       layer_freq=raw.get("moe_layer_freq", 1), n_shared_experts=raw.get("n_shared_experts") or 0)
    if raw.get("num_experts"):
        return MoESpec("qwen3_moe", raw["num_experts"], raw["moe_intermediate_size"],
                       raw.get("num_experts_per_tok", 1), sparse_step=raw.get("decoder_sparse_step", 1),
                       mlp_only_layers=tuple(raw.get("mlp_only_layers") or ()),
                       shared_expert_intermediate_size=raw.get("shared_expert_intermediate_size") or 0)
    return None


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
    moe: Optional[MoESpec] = None  # routed experts replace the dense MLP on the layers moe.is_moe_layer picks
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

    def is_moe_layer(self, layer: int) -> bool:
        return self.moe is not None and self.moe.is_moe_layer(layer)

    def layer_linears(self, layer: Optional[int] = None) -> list[LinearSpec]:
        """Dense engine linears of a decoder layer; on an MoE layer the MLP is the experts (moe_shapes)."""
        h, i = self.hidden_size, self.intermediate_size
        moe_layer = layer is not None and self.is_moe_layer(layer)
        specs = [
            LinearSpec("self_attn.qkv_proj", (
                ShardSpec("self_attn.q_proj", "q", self.q_size),
                ShardSpec("self_attn.k_proj", "k", self.kv_size),
                ShardSpec("self_attn.v_proj", "v", self.v_size),
            ), h),
            LinearSpec("self_attn.o_proj", (ShardSpec("self_attn.o_proj", None, h),),
                       self.num_attention_heads * (self.v_head_dim or self.head_dim)),
        ]
        if not moe_layer:
            specs += _mlp_linears("mlp", h, i)
        elif self.moe.shared_intermediate:
            prefix = "mlp.shared_experts" if self.moe.style == "deepseek_v3" else "mlp.shared_expert"
            specs += _mlp_linears(prefix, h, self.moe.shared_intermediate)
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
            for spec in self.layer_linears(layer):
                for s in spec.shards:
                    out[p + s.hf_suffix + ".weight"] = (s.rows, spec.in_features)
            if self.is_moe_layer(layer):
                out.update(self.moe_hf_shapes(layer))
            if self.qk_norm:
                out[p + "self_attn.q_norm.weight"] = (self.head_dim,)
                out[p + "self_attn.k_norm.weight"] = (self.head_dim,)
            out[p + "post_attention_layernorm.weight"] = (self.hidden_size,)
            if self.moe_router_experts and not self.is_moe_layer(layer):
                out[p + "mlp.gate.weight"] = (self.moe_router_experts, self.hidden_size)
        out["model.norm.weight"] = (self.hidden_size,)
        if not self.tie_word_embeddings:
            out["lm_head.weight"] = (self.vocab_size, self.hidden_size)
        return out

    def moe_hf_shapes(self, layer: int) -> dict[str, tuple[int, ...]]:
        """Trainer-side (HF per-expert) names of one MoE layer: router, experts, shared-expert gate."""
        m, h = self.moe, self.hidden_size
        p = f"model.layers.{layer}.mlp."
        out = {p + "gate.weight": (m.num_experts, h)}
        if m.style == "deepseek_v3":
            out[p + "gate.e_score_correction_bias"] = (m.num_experts,)
        for e in range(m.num_experts):
            out[f"{p}experts.{e}.gate_proj.weight"] = (m.moe_intermediate_size, h)
            out[f"{p}experts.{e}.up_proj.weight"] = (m.moe_intermediate_size, h)
            out[f"{p}experts.{e}.down_proj.weight"] = (h, m.moe_intermediate_size)
        if m.style == "qwen3_moe" and m.shared_expert_intermediate_size:
            out[p + "shared_expert_gate.weight"] = (1, h)
        return out

    def moe_engine_shapes(self, layer: int, local_experts: int, tp: int = 1) -> dict[str, tuple[int, ...]]:
        """vLLM FusedMoE block-FP8 parameters of one layer on one rank (fp8.py Fp8MoEMethod.create_weights).

        Scales are sized per shard (w13: 2 * ceil(I/128) rows, not ceil(2I/128)) and created with torch.ones.
        """
        m, h = self.moe, self.hidden_size
        i = m.moe_intermediate_size // tp
        p = f"model.layers.{layer}.mlp.experts."
        return {
            p + "w13_weight": (local_experts, 2 * i, h),
            p + "w2_weight": (local_experts, h, i),
            p + "w13_weight_scale_inv": (local_experts, 2 * _cdiv(i, BLOCK), _cdiv(h, BLOCK)),
            p + "w2_weight_scale_inv": (local_experts, _cdiv(h, BLOCK), _cdiv(i, BLOCK)),
        }

    def to_dict(self) -> dict:
        return asdict(self)


def _mlp_linears(prefix: str, h: int, i: int) -> list[LinearSpec]:
    return [
        LinearSpec(f"{prefix}.gate_up_proj", (ShardSpec(f"{prefix}.gate_proj", 0, i),
                                               ShardSpec(f"{prefix}.up_proj", 1, i)), h),
        LinearSpec(f"{prefix}.down_proj", (ShardSpec(f"{prefix}.down_proj", None, h),), i),
    ]


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
    kw["moe"] = moe_from_hf(raw)
    kw.setdefault("intermediate_size", kw["moe"].moe_intermediate_size if kw["moe"] else 4 * raw["hidden_size"])
    return ModelConfig(**kw)
