"""A minimal Llama-family forward (RMSNorm, RoPE, GQA, SwiGLU; Qwen3 q/k norm; narrow v heads).

It runs from either parameter naming:
- HF (trainer side): q_proj/k_proj/v_proj, gate_proj/up_proj, ... in BF16 (or float32);
- engine (vLLM side): fused `qkv_proj` / `gate_up_proj`, each a float8_e4m3fn `weight` plus a
  float32 `weight_scale_inv` [ceil(N/128), ceil(K/128)]; an engine weight without a scale runs
  as a BF16 linear, as vLLM does for layers it keeps unquantized. A `weight_scale_inv_rows` [N, Kb]
  beside it (the loader's "exact" placement) takes precedence: each row uses its own shard's scale.
Activations are float32 by default so that the only precision loss is the one under test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import torch

from refit_verify.errors import BadInputError
from refit_verify.model import linear as lin
from refit_verify.model.config import ModelConfig


class Linear:
    """One engine or HF linear; FP8 ones cache their dequantized weight for the emulated GEMM."""

    def __init__(self, name: str, weight: torch.Tensor, scale_inv: torch.Tensor | None, backend: str,
                 act_recipe, dtype: torch.dtype, row_scale: torch.Tensor | None = None):
        self.name, self.backend, self.act_recipe, self.dtype = name, backend, act_recipe, dtype
        self.fp8 = scale_inv is not None
        if weight.dtype == torch.float8_e4m3fn and scale_inv is None:
            raise BadInputError("float8 weight without weight_scale_inv", name)
        if self.fp8:
            lin.check_weight(weight, scale_inv, name)
            self.weight, self.scale_inv = weight, scale_inv
            self.w_dequant = lin.dequantize_weight(weight, scale_inv) if backend == "emulated" else None
            if row_scale is not None:  # exact placement: each row dequantized with its own shard's scale
                if backend != "emulated":
                    raise BadInputError("per-row scales (exact placement) run on the emulated backend only", name)
                self.w_dequant = lin.dequantize_weight_rows(weight, row_scale, name)
        else:
            self.weight = weight.to(dtype)

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fp8:
            return x.to(self.dtype) @ self.weight.t()
        y = lin.w8a8_linear(x.to(self.dtype), self.weight, self.scale_inv, backend=self.backend,
                            act_recipe=self.act_recipe, name=self.name, w_dequant=self.w_dequant)
        return y.to(self.dtype)


def split_fused(y: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    """Undo the engine's row fusion on the output side: q|k|v or gate|up, in shard order."""
    return list(y.split(sizes, -1))


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    # HF order: normalize in float32, cast back, then scale by the gain
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight.to(x.dtype) * xf.to(x.dtype)


def rope_tables(head_dim: int, seq_len: int, theta: float, dtype, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    # computed on CPU in float32 whatever the device, so every backend sees the same tables
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    freqs = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)
    emb = torch.cat([freqs, freqs], -1)
    return emb.cos().to(device=device, dtype=dtype), emb.sin().to(device=device, dtype=dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], -1)  # the "rotate half" convention of HF Llama
    return x * cos + rotated * sin


@dataclass
class Layer:
    input_norm: torch.Tensor
    post_norm: torch.Tensor
    qkv: list  # [Linear] fused, or [q, k, v]
    o: Linear
    gate_up: list  # [Linear] fused, or [gate, up]
    down: Linear
    q_norm: torch.Tensor | None = None
    k_norm: torch.Tensor | None = None


class KVCache:
    """Per-layer keys (after RoPE) and values of the tokens seen so far, for incremental decoding."""

    def __init__(self):
        self.k: dict[int, torch.Tensor] = {}
        self.v: dict[int, torch.Tensor] = {}
        self.length = 0

    def extend(self, index: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(all keys, all values, number of earlier positions) for layer `index` after appending k, v."""
        if index in self.k:
            k, v = torch.cat([self.k[index], k], 2), torch.cat([self.v[index], v], 2)
        self.k[index], self.v[index] = k, v
        return k, v, self.length


class LlamaModel:
    """Build once from a parameter dict, then `logits(input_ids)`; pure function of its inputs."""

    def __init__(self, cfg: ModelConfig, params: Mapping[str, torch.Tensor], *, backend: str = "emulated",
                 act_recipe="vllm_act_group", dtype: torch.dtype = torch.float32, device=None):
        if device is not None:
            params = {k: v.to(device) for k, v in params.items()}
        if cfg.moe_router_experts:
            raise BadInputError(f"{cfg.name}: MoE forward not implemented (dense Llama family only)")
        self.cfg, self.dtype = cfg, dtype
        self._make = lambda n, w, s, rows: Linear(n, w, s, backend, act_recipe, dtype, rows)
        self.embed = self._get(params, "model.embed_tokens.weight").to(dtype)
        head = params.get("lm_head.weight")
        if head is None and not cfg.tie_word_embeddings:
            raise BadInputError("missing parameter", "lm_head.weight")
        self.lm_head = self.embed if head is None else head.to(dtype)
        self.norm = self._get(params, "model.norm.weight")
        self.layers = [self._layer(params, i) for i in range(cfg.num_hidden_layers)]

    @staticmethod
    def _get(params, name):
        if name not in params:
            raise BadInputError("missing parameter", name)
        return params[name]

    def _lin(self, params, name: str) -> Linear:
        return self._make(name, self._get(params, name + ".weight"), params.get(name + ".weight_scale_inv"),
                          params.get(name + ".weight_scale_inv_rows"))

    def _layer(self, params, i: int) -> Layer:
        p = f"model.layers.{i}."
        engine = (p + "self_attn.qkv_proj.weight") in params
        if engine:
            qkv = [self._lin(params, p + "self_attn.qkv_proj")]
            gate_up = [self._lin(params, p + "mlp.gate_up_proj")]
        else:
            qkv = [self._lin(params, p + f"self_attn.{s}_proj") for s in "qkv"]
            gate_up = [self._lin(params, p + f"mlp.{s}_proj") for s in ("gate", "up")]
        qn = params.get(p + "self_attn.q_norm.weight") if self.cfg.qk_norm else None
        kn = params.get(p + "self_attn.k_norm.weight") if self.cfg.qk_norm else None
        if self.cfg.qk_norm and (qn is None or kn is None):
            raise BadInputError("qk_norm config without q_norm/k_norm weights", p + "self_attn")
        return Layer(self._get(params, p + "input_layernorm.weight"), self._get(params, p + "post_attention_layernorm.weight"),
                     qkv, self._lin(params, p + "self_attn.o_proj"), gate_up, self._lin(params, p + "mlp.down_proj"), qn, kn)

    def _attention(self, layer: Layer, h: torch.Tensor, cos, sin, cache: "KVCache | None" = None,
                   index: int = 0) -> torch.Tensor:
        cfg = self.cfg
        b, t, _ = h.shape
        if len(layer.qkv) == 1:
            q, k, v = split_fused(layer.qkv[0](h), [cfg.q_size, cfg.kv_size, cfg.v_size])
        else:
            q, k, v = (f(h) for f in layer.qkv)
        vd = cfg.v_head_dim or cfg.head_dim
        q = q.view(b, t, cfg.num_attention_heads, cfg.head_dim).transpose(1, 2)
        k = k.view(b, t, cfg.num_key_value_heads, cfg.head_dim).transpose(1, 2)
        v = v.view(b, t, cfg.num_key_value_heads, vd).transpose(1, 2)
        if layer.q_norm is not None:
            q, k = rms_norm(q, layer.q_norm, cfg.rms_norm_eps), rms_norm(k, layer.k_norm, cfg.rms_norm_eps)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        past = 0
        if cache is not None:
            k, v, past = cache.extend(index, k, v)
        groups = cfg.num_attention_heads // cfg.num_key_value_heads
        k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
        scores = (q @ k.transpose(-1, -2)).float() / math.sqrt(cfg.head_dim)
        causal = torch.ones(t, past + t, dtype=torch.bool, device=h.device).triu(past + 1)
        probs = scores.masked_fill(causal, float("-inf")).softmax(-1).to(v.dtype)
        out = (probs @ v).transpose(1, 2).reshape(b, t, cfg.num_attention_heads * vd)
        return layer.o(out)

    def _mlp(self, layer: Layer, h: torch.Tensor) -> torch.Tensor:
        if len(layer.gate_up) == 1:
            gate, up = split_fused(layer.gate_up[0](h), [self.cfg.intermediate_size] * 2)
        else:
            gate, up = (f(h) for f in layer.gate_up)
        return layer.down(torch.nn.functional.silu(gate) * up)

    @torch.no_grad()
    def logits(self, input_ids: torch.Tensor, cache: "KVCache | None" = None) -> torch.Tensor:
        """float32 logits [B, T, vocab] for token ids [B, T] (or [T]).

        With a `cache` the ids continue the sequence it holds (positions from cache.length on) and their
        keys/values are appended: greedy decoding then costs one token per step, not the whole prefix."""
        if input_ids.dim() == 1:
            input_ids = input_ids[None]
        input_ids = input_ids.to(self.embed.device)
        if int(input_ids.max()) >= self.cfg.vocab_size or int(input_ids.min()) < 0:
            raise BadInputError(f"token ids outside [0, {self.cfg.vocab_size})", "input_ids")
        past = cache.length if cache is not None else 0
        cos, sin = rope_tables(self.cfg.head_dim, past + input_ids.shape[1], self.cfg.rope_theta, self.dtype,
                               self.embed.device)
        cos, sin = cos[past:], sin[past:]
        h = self.embed[input_ids]
        eps = self.cfg.rms_norm_eps
        for i, layer in enumerate(self.layers):
            h = h + self._attention(layer, rms_norm(h, layer.input_norm, eps), cos, sin, cache, i)
            h = h + self._mlp(layer, rms_norm(h, layer.post_norm, eps))
        if cache is not None:
            cache.length += input_ids.shape[1]
        h = rms_norm(h, self.norm, eps)
        return (h @ self.lm_head.t()).float()


def forward(cfg: ModelConfig, params: Mapping[str, torch.Tensor], input_ids: torch.Tensor, **kw) -> torch.Tensor:
    """One-shot convenience: `LlamaModel(cfg, params, **kw).logits(input_ids)`."""
    return LlamaModel(cfg, params, **kw).logits(input_ids)
