"""Engine dumps on disk: safetensors of the engine's parameter names, one file (or folder) per rank.

A dump is a `.safetensors` file (one rank), or a folder. In a folder, files or subfolders named by a
rank label (`tp0.ep0.pp0.safetensors`, `tp1.ep0.pp0/`) hold that rank; any other `*.safetensors`
in it together hold the single rank of an unsharded engine. The layout is read from the labels.
"""

from __future__ import annotations

import re
from pathlib import Path

from refit_verify.errors import BadInputError
from refit_verify.layout import Layout, Rank

_LABEL = re.compile(r"^tp(\d+)\.ep(\d+)\.pp(\d+)(?:\.safetensors)?$")


def rank_of(label: str):
    m = _LABEL.match(label)
    return Rank(*(int(g) for g in m.groups())) if m else None


def read_files(files, where) -> dict:
    from safetensors.torch import load_file

    out = {}
    for f in files:
        try:
            part = load_file(str(f))
        except Exception as exc:  # safetensors raises its own types for corrupt files
            raise BadInputError(f"{f}: unreadable safetensors file ({type(exc).__name__}: {exc})") from exc
        dup = sorted(set(part) & set(out))
        if dup:
            raise BadInputError(f"{where}: {dup[0]} appears in more than one file")
        out.update(part)
    return out


def rank_sources(path) -> dict:
    """{Rank: [safetensors files]} of a dump."""
    p = Path(path)
    if p.is_file():
        return {Rank(): [p]}
    if not p.is_dir():
        raise BadInputError(f"{p}: no such file or folder")
    ranked, plain = {}, []
    for child in sorted(p.iterdir()):
        r = rank_of(child.name)
        if r is not None and child.is_dir():
            ranked[r] = sorted(child.glob("*.safetensors"))
        elif r is not None:
            ranked[r] = [child]
        elif child.suffix == ".safetensors":
            plain.append(child)
    if ranked and plain:
        raise BadInputError(f"{p}: mixes per-rank files ({ranked and next(iter(ranked)).label}) with "
                            f"unranked ones ({plain[0].name})")
    if not ranked and not plain:
        raise BadInputError(f"{p}: folder holds no *.safetensors files")
    return ranked or {Rank(): plain}


def layout_of(ranks) -> Layout:
    return Layout(*(max(getattr(r, k) for r in ranks) + 1 for k in ("tp", "ep", "pp")))


def iter_dump(path):
    """(layout, iterator of (Rank, {name: tensor})): one rank in memory at a time."""
    sources = rank_sources(path)
    layout = layout_of(sources)
    return layout, ((r, read_files(files, path)) for r, files in sorted(sources.items(), key=lambda x: x[0].label))


def write_rank_dump(params: dict, folder, rank: Rank = Rank()) -> Path:
    """Write one rank's {engine name: tensor} as `<folder>/<rank label>.safetensors` (CPU copies)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{rank.label}.safetensors"
    tmp = folder / f".{rank.label}.safetensors.tmp"
    save_file({n: t.detach().to("cpu").contiguous() for n, t in params.items()}, str(tmp))
    tmp.replace(path)
    return path

