"""Files the harness writes for people to read or share: the permissions a user's umask allows, not 0600."""

from __future__ import annotations

import os
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_shareable(path) -> None:
    """rw for everyone the umask allows (safetensors and mkstemp create files 0600)."""
    os.chmod(path, 0o666 & ~_umask())


def save_safetensors(tensors: dict, path) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    make_shareable(path)
    return path
