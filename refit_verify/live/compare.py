"""Compare two digest documents: blocks that differ, parameters never written or extra, metadata."""

from __future__ import annotations

from dataclasses import dataclass, field

_META = ("recipe", "block", "layout", "sample")


@dataclass
class DigestDiff:
    meta: list = field(default_factory=list)  # (key, expected value, engine value)
    missing: list = field(default_factory=list)  # (rank, name): expected, never written
    extra: list = field(default_factory=list)  # (rank, name): in the engine only
    shape: list = field(default_factory=list)  # (rank, name, what, expected, engine)
    blocks: list = field(default_factory=list)  # (rank, name, block index, expected hex, engine hex)
    compared_blocks: int = 0

    @property
    def equal(self) -> bool:
        return not (self.meta or self.missing or self.extra or self.shape or self.blocks)

    def to_dict(self) -> dict:
        return {"equal": self.equal, "compared_blocks": self.compared_blocks,
                "meta": [list(m) for m in self.meta], "missing": [list(m) for m in self.missing],
                "extra": [list(m) for m in self.extra], "shape": [list(m) for m in self.shape],
                "blocks": [{"rank": r, "tensor": n, "block": b, "expected": e, "engine": g}
                           for r, n, b, e, g in self.blocks]}


def _split(s: str) -> list[str]:
    return [s[i:i + 16] for i in range(0, len(s), 16)]


def _compare_record(diff, rank, name, e, g):
    for key in ("shape", "dtype", "block", "n_blocks", "scale_dtype", "scale_shape", "indices"):
        if e.get(key) != g.get(key):
            diff.shape.append((rank, name, key, e.get(key), g.get(key)))
            return
    idx = e.get("indices") or range(e["n_blocks"])
    for i, a, b in zip(idx, _split(e["blocks"]), _split(g["blocks"])):
        diff.compared_blocks += 1
        if a != b:
            diff.blocks.append((rank, name, i, a, b))


def compare_documents(expected: dict, engine: dict) -> DigestDiff:
    diff = DigestDiff()
    for key in _META:
        if expected.get(key) != engine.get(key):
            diff.meta.append((key, expected.get(key), engine.get(key)))
    er, gr = expected["ranks"], engine["ranks"]
    for rank in sorted(set(er) | set(gr)):
        e, g = er.get(rank) or {}, gr.get(rank) or {}
        diff.missing += [(rank, n) for n in sorted(set(e) - set(g))]
        diff.extra += [(rank, n) for n in sorted(set(g) - set(e))]
        for name in sorted(set(e) & set(g)):
            _compare_record(diff, rank, name, e[name], g[name])
    return diff
