"""Lazy view of an FP8 state dict on disk: one safetensors file, or a folder of them (shards).

Headers are read up front (names, dtypes, shapes); tensors are loaded one at a time on demand, so a
full-size checkpoint diff does not need two copies in memory. A corrupt shard is recorded as an
issue naming the file; its tensors then show up as missing, each by name.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from refit_verify.errors import BadInputError

FP8_DTYPES = ("F8_E4M3",)


@dataclass(frozen=True)
class Entry:
    file: str
    dtype: str  # safetensors dtype string: F8_E4M3, F32, BF16, U8 ...
    shape: tuple


@dataclass
class StateDict:
    root: str
    entries: dict[str, Entry] = field(default_factory=dict)
    issues: list[tuple[str, str, str]] = field(default_factory=list)  # (file or tensor, kind, message)

    def get(self, name: str):
        from safetensors import safe_open

        e = self.entries[name]
        with safe_open(e.file, framework="pt") as f:
            return f.get_tensor(name)


# The engine fuses these HF linears into one parameter (rows concatenated in this order); an HF checkpoint
# given as `diff --source` has the parts, the engine dump has the fused name.
FUSED_PARTS = {"self_attn.qkv_proj": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
               "mlp.gate_up_proj": ("mlp.gate_proj", "mlp.up_proj")}


def source_tensor(source: StateDict, name: str):
    """`name` from the BF16 source, fusing HF parts when the source is a plain HF checkpoint; None if absent."""
    if name in source.entries:
        return source.get(name)
    for fused, parts in FUSED_PARTS.items():
        tail = f".{fused}.weight"
        if name.endswith(tail):
            prefix = name[: -len(tail)]
            names = [f"{prefix}.{p}.weight" for p in parts]
            if all(n in source.entries for n in names):
                import torch

                return torch.cat([source.get(n) for n in names], 0)
    return None


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def refusal(path: Path) -> str | None:
    """Why `path` is not opened at all: not a regular file (a FIFO would block), or pickle/zip content
    (torch.save runs code when loaded). Only the first bytes are read, never unpickled."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return f"cannot stat: {exc.strerror}"
    if not stat.S_ISREG(mode):
        return "not a regular file (FIFO, device or socket): refused, never opened"
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError as exc:
        return f"cannot read: {exc.strerror}"
    if head[:1] == b"\x80" or head[:2] == b"PK" or path.suffix in PICKLE_SUFFIXES:
        return "pickle/zip (torch.save) file: refused, never loaded (convert it to safetensors)"
    return None


def open_state_dict(path) -> StateDict:
    from safetensors import safe_open

    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("*.safetensors"))
        if not files:
            pickles = sorted(f.name for f in p.iterdir() if f.suffix in PICKLE_SUFFIXES)
            raise BadInputError(f"{p}: folder holds no *.safetensors files"
                                + (f" (pickle files refused, never loaded: {', '.join(pickles[:5])})" if pickles else ""))
    elif os.path.lexists(p):
        why = refusal(p)
        if why:
            raise BadInputError(f"{p}: {why}")
        files = [p]
    else:
        raise BadInputError(f"{p}: no such file or folder")
    sd = StateDict(str(p))
    for f in files:
        why = refusal(f)
        if why:
            sd.issues.append((f.name, "refused", why))
            continue
        try:
            with safe_open(str(f), framework="pt") as h:
                for name in h.keys():
                    sl = h.get_slice(name)
                    entry = Entry(str(f), sl.get_dtype(), tuple(sl.get_shape()))
                    if name in sd.entries:
                        sd.issues.append((name, "duplicate", f"duplicate tensor in {Path(sd.entries[name].file).name} "
                                          f"and {f.name}"))
                        continue
                    sd.entries[name] = entry
        except Exception as exc:  # safetensors raises its own error types (and OSError) for bad files
            sd.issues.append((f.name, "unreadable", f"unreadable safetensors file: {type(exc).__name__}: {exc}"))
    return sd
