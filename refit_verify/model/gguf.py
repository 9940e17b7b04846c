"""A trained model from a GGUF file: config from its metadata, BF16 master weights by dequantizing its tensors.

The master weights are whatever the file holds, dequantized (for SmolLM2-135M-Instruct.Q4_1.gguf: Q4_1
linears and a Q8_0 embedding), then cast to BF16: a real trained model, not the original BF16 checkpoint.
llama.cpp stores q/k projection rows permuted for its interleaved RoPE; they are un-permuted here so the
tensors are in HF layout (half-split RoPE), which is what the trainer and vLLM hold.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from refit_verify.errors import BadInputError
from refit_verify.model.config import ModelConfig
from refit_verify.model.fetch import SMOLLM2_GGUF, WheelFile, ensure_file

# Names resolved to a GGUF file shipped in a PyPI wheel (installed package, cache, or fetched: fetch.py).
KNOWN_GGUF: dict[str, WheelFile] = {
    "smollm2-135m": SMOLLM2_GGUF,
}

_LAYER_NAMES = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


def resolve_gguf(name_or_path: str, progress: Callable[[str], None] = lambda m: None) -> Path | None:
    """A known model name -> its .gguf path (fetched once if needed); a .gguf path -> itself; else None."""
    if name_or_path in KNOWN_GGUF:
        return ensure_file(KNOWN_GGUF[name_or_path], progress)
    p = Path(name_or_path)
    return p if p.suffix == ".gguf" else None


def _field(reader, key: str, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def gguf_config(reader, name: str) -> ModelConfig:
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise BadInputError(f"GGUF architecture {arch!r} is not llama", name)
    a = lambda k, d=None: _field(reader, f"llama.{k}", d)  # noqa: E731
    heads = int(a("attention.head_count"))
    hidden = int(a("embedding_length"))
    names = {t.name for t in reader.tensors}
    embd = next(t for t in reader.tensors if t.name == "token_embd.weight")
    return ModelConfig(
        name=name, hidden_size=hidden, intermediate_size=int(a("feed_forward_length")),
        num_hidden_layers=int(a("block_count")), num_attention_heads=heads,
        num_key_value_heads=int(a("attention.head_count_kv", heads)),
        head_dim=int(a("attention.key_length", hidden // heads)),
        vocab_size=int(a("vocab_size", int(embd.shape[-1]))),
        rms_norm_eps=float(a("attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=float(a("rope.freq_base", 10000.0)),
        tie_word_embeddings="output.weight" not in names,
        source=f"GGUF {_field(reader, 'general.name', '')}, dequantized to BF16",
    )


def unpermute_qk(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Undo llama.cpp's convert permute (rows interleaved per head pair) -> HF half-split rows."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def hf_name(gguf_name: str) -> str:
    base, _, suffix = gguf_name.rpartition(".")
    if base in _TOP_NAMES:
        return f"{_TOP_NAMES[base]}.{suffix}"
    parts = base.split(".")
    if len(parts) == 3 and parts[0] == "blk" and parts[2] in _LAYER_NAMES:
        return f"model.layers.{parts[1]}.{_LAYER_NAMES[parts[2]]}.{suffix}"
    raise BadInputError("GGUF tensor name has no HF counterpart", gguf_name)


def load_gguf(path: str | Path, name: str | None = None,
              layers: int | None = None) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """(ModelConfig, {HF name: BF16 tensor}) from a llama-architecture GGUF file.

    `layers` cuts the depth before dequantizing (full width, first N decoder layers).
    """
    import numpy as np
    from gguf import GGUFReader
    from gguf.quants import dequantize

    p = Path(path)
    if not p.exists():
        raise BadInputError("GGUF file not found", str(p))
    reader = GGUFReader(str(p))
    cfg = gguf_config(reader, name or p.stem)
    if layers is not None:
        cfg = cfg.with_layers(layers)
    known = set(cfg.hf_shapes())
    out: dict[str, torch.Tensor] = {}
    for t in reader.tensors:
        n = hf_name(t.name)
        if n not in known:
            continue
        arr = dequantize(t.data, t.tensor_type)
        shape = tuple(int(d) for d in reversed(t.shape))  # GGUF lists dims innermost first
        w = torch.from_numpy(np.array(arr, dtype=np.float32).reshape(shape))
        if n.endswith("self_attn.q_proj.weight"):
            w = unpermute_qk(w, cfg.num_attention_heads)
        elif n.endswith("self_attn.k_proj.weight"):
            w = unpermute_qk(w, cfg.num_key_value_heads)
        out[n] = w.to(torch.bfloat16)
    return cfg, out


def dequantized_cache_file(p: Path) -> Path:
    """Keyed by the GGUF's path, size and mtime: a changed file is dequantized again."""
    import hashlib

    from refit_verify.model.fetch import cache_root

    st = p.stat()
    key = hashlib.sha256(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_root() / "models" / "dequantized" / f"{p.stem}-{key}.bf16.safetensors"


_MEMO: dict = {}


def load_gguf_cached(path: str | Path, name: str | None = None,
                     layers: int | None = None) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """load_gguf, with the dequantized BF16 tensors kept as safetensors in the cache (GGUF parsing and
    dequantizing take ~10 s, the cached file ~0.5 s) and in memory for the jobs of one run.

    The tensors returned are shared between callers: read them, never write into them."""
    import json
    import os
    import tempfile

    from safetensors import safe_open
    from safetensors.torch import save_file

    from refit_verify.model.config import from_dict

    p = Path(path)
    if not p.exists():
        raise BadInputError("GGUF file not found", str(p))
    f = dequantized_cache_file(p)
    key = (str(f), name)
    if key not in _MEMO:
        if f.exists():
            with safe_open(str(f), "pt") as sf:
                cfg = from_dict(json.loads(sf.metadata()["config"]))
                weights = {k: sf.get_tensor(k) for k in sf.keys()}
        else:
            cfg, weights = load_gguf(p, name)
            f.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=f.parent, suffix=".part")
            os.close(fd)
            try:
                save_file(weights, tmp, metadata={"config": json.dumps(cfg.to_dict()), "gguf": str(p)})
                os.chmod(tmp, 0o644)
                os.replace(tmp, f)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        if name is not None and cfg.name != name:
            import dataclasses

            cfg = dataclasses.replace(cfg, name=name)
        _MEMO.clear()  # one model at a time: a 135M model is ~270 MB of BF16
        _MEMO[key] = (cfg, weights)
    cfg, weights = _MEMO[key]
    if layers is not None:
        cfg = cfg.with_layers(layers)
        known = set(cfg.hf_shapes())
        weights = {n: t for n, t in weights.items() if n in known}
    return cfg, weights
