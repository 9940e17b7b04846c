"""Lazy view of an FP8 state dict on disk: one safetensors file, or a folder of them (shards).

Headers are read up front (names, dtypes, shapes); tensors are loaded one at a time on demand, so a
full-size checkpoint diff does not need two copies in memory. A corrupt shard is recorded as an
issue naming the file; its tensors then show up as missing, each by name.
"""

from __future__ import annotations

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
    issues: list[tuple[str, str]] = field(default_factory=list)  # (file or tensor, message)

    def get(self, name: str):
        from safetensors import safe_open

        e = self.entries[name]
        with safe_open(e.file, framework="pt") as f:
            return f.get_tensor(name)


def open_state_dict(path) -> StateDict:
    from safetensors import safe_open

    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("*.safetensors"))
        if not files:
            raise BadInputError(f"{p}: folder holds no *.safetensors files")
    elif p.exists():
        files = [p]
    else:
        raise BadInputError(f"{p}: no such file or folder")
    sd = StateDict(str(p))
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as h:
                for name in h.keys():
                    sl = h.get_slice(name)
                    entry = Entry(str(f), sl.get_dtype(), tuple(sl.get_shape()))
                    if name in sd.entries:
                        sd.issues.append((name, f"duplicate tensor in {Path(sd.entries[name].file).name} and {f.name}"))
                        continue
                    sd.entries[name] = entry
        except Exception as exc:  # safetensors raises its own error types (and OSError) for bad files
            sd.issues.append((f.name, f"unreadable safetensors file: {type(exc).__name__}: {exc}"))
    return sd
