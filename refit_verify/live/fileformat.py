"""The digest file (docs/DIGEST.md): JSON, versioned, one record per (rank, parameter)."""

from __future__ import annotations

import json
import os
import re
import tempfile

import torch

from refit_verify.errors import BadInputError
from refit_verify.layout import Layout, Rank
from refit_verify.live.digest import DIGEST_VERSION, block_digests, lanes_hex, sample_indices, tensor_digest

FORMAT = "refit-verify-digest"
SCALE_SUFFIX = "_scale_inv"
# Unquantized tensors (norms, embeddings) are digested as raw bytes in runs of this many bytes.
RAW_RUN = 4096
_RANK_LABEL = re.compile(r"^tp(\d+)\.ep(\d+)\.pp(\d+)$")
_HEX = re.compile(r"^[0-9a-f]*$")


def _dtype(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def _lanes(data, scale, block, idx):
    """Block digests of a 2-D parameter, or of a 3-D one (FusedMoE experts [E, rows, cols] with scales
    [E, row blocks, col blocks]): experts in order, each expert's blocks row-major."""
    if data.dim() != 3:
        return block_digests(data, scale, block, indices=idx)
    if scale is None or scale.dim() != 3 or scale.shape[0] != data.shape[0]:
        raise BadInputError(f"expert parameter {tuple(data.shape)} needs a [experts, row blocks, col blocks] "
                            f"scale, got {None if scale is None else tuple(scale.shape)}")
    lanes = torch.cat([block_digests(data[e], scale[e], block) for e in range(data.shape[0])], 0)
    return lanes if idx is None else lanes.index_select(0, idx.to(lanes.device))


def _record(data, scale, block, name, rank, sample):
    n_blocks = block_digests_count(data, block)
    idx = None if sample is None else sample_indices(n_blocks, sample["k"], sample["seed"], name, rank.label)
    lanes = _lanes(data, scale, block, idx)
    rec = {"shape": list(data.shape), "dtype": _dtype(data), "block": list(block), "n_blocks": n_blocks,
           "blocks": "".join(lanes_hex(lanes))}
    if scale is not None:
        rec["scale_dtype"], rec["scale_shape"] = _dtype(scale), list(scale.shape)
    if idx is None:
        rec["tensor"] = tensor_digest(lanes, data.shape, rec["dtype"])
    else:
        rec["indices"] = idx.tolist()
    return rec


def block_digests_count(data: torch.Tensor, block) -> int:
    bm, bn = block
    experts = data.shape[0] if data.dim() == 3 else 1
    return experts * -(-data.shape[-2] // bm) * -(-data.shape[-1] // bn)


def digest_rank(params: dict, block, rank: Rank = Rank(), sample: dict | None = None) -> dict:
    """{param name: record} for one rank's {engine name: tensor}; X.weight pairs with X.weight_scale_inv."""
    out = {}
    for name, t in sorted(params.items()):
        if name.endswith(SCALE_SUFFIX):
            continue
        scale = params.get(name + SCALE_SUFFIX)
        if scale is not None:
            out[name] = _record(t, scale, tuple(block), name, rank, sample)
        else:
            raw = t.detach().contiguous().view(torch.uint8).reshape(1, -1)
            runs = -(-raw.shape[1] // RAW_RUN)
            rec = _record(raw, torch.zeros(runs, dtype=torch.uint8, device=raw.device), (1, RAW_RUN),
                          name, rank, sample)
            rec.update(shape=list(t.shape), dtype=_dtype(t), raw=True)
            out[name] = rec
    return out


def digest_document(per_rank: dict, recipe: str, block, layout: Layout, role: str,
                    sample: dict | None = None) -> dict:
    """per_rank: {Rank: {engine name: tensor}} (or an iterable of such pairs, digested one rank at a time)
    -> the whole digest document."""
    pairs = per_rank.items() if hasattr(per_rank, "items") else per_rank
    return {"format": FORMAT, "version": DIGEST_VERSION, "role": role, "recipe": recipe,
            "block": list(block), "layout": layout.to_dict(), "sample": sample,
            "ranks": {r.label: digest_rank(p, block, r, sample) for r, p in pairs}}


def write_document(doc: dict, path) -> None:
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".digest.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, path)


def load_document(path) -> dict:
    """Read and validate a digest file; BadInputError (exit 2) naming what is wrong. Every field the
    comparison reads is checked here, so a malformed file is refused rather than read as differences."""
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise BadInputError(f"{path}: not a readable JSON digest file ({e})") from e
    _check_header(path, doc)
    layout = Layout(**doc["layout"])
    for label, params in doc["ranks"].items():
        _check_rank(path, label, params, layout)
        for name, rec in params.items():
            _check_record(path, label, name, rec)
    return doc


def _malformed(where, what):
    return BadInputError(f"{where}: {what} (malformed digest file)")


def _is_int(v, minimum=0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= minimum


def _is_ints(v, n=None, minimum=0) -> bool:
    return isinstance(v, list) and (n is None or len(v) == n) and all(_is_int(x, minimum) for x in v)


def _check_header(path, doc) -> None:
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BadInputError(f"{path}: not a refit-verify digest file (format != {FORMAT!r})")
    if doc.get("version") != DIGEST_VERSION:
        raise BadInputError(f"{path}: digest version {doc.get('version')!r}, this tool reads {DIGEST_VERSION}")
    if not isinstance(doc.get("ranks"), dict):
        raise BadInputError(f"{path}: 'ranks' missing or not an object")
    if not isinstance(doc.get("recipe"), str):
        raise _malformed(path, f"'recipe' must be a recipe name, got {doc.get('recipe')!r}")
    if not _is_ints(doc.get("block"), 2, 1):
        raise _malformed(path, f"'block' must be [rows, cols] of positive integers, got {doc.get('block')!r}")
    lay = doc.get("layout")
    if not (isinstance(lay, dict) and set(lay) == {"tp", "ep", "pp"} and all(_is_int(v, 1) for v in lay.values())):
        raise _malformed(path, f"'layout' must be {{tp, ep, pp}} of positive integers, got {lay!r}")
    sample = doc.get("sample")
    if sample is not None and not (isinstance(sample, dict) and set(sample) == {"k", "seed"}
                                   and _is_int(sample["k"], 1) and _is_int(sample["seed"], -(1 << 63))):
        raise _malformed(path, f"'sample' must be null or {{k >= 1, seed}} (integers), got {sample!r}")


def _check_rank(path, label, params, layout: Layout) -> None:
    m = _RANK_LABEL.match(label) if isinstance(label, str) else None
    if m is None:
        raise _malformed(f"{path}: rank {label!r}", "a rank label is tpN.epN.ppN")
    if any(int(i) >= n for i, n in zip(m.groups(), (layout.tp, layout.ep, layout.pp))):
        raise _malformed(f"{path}: rank {label}", f"outside the file's layout tp={layout.tp} ep={layout.ep} "
                         f"pp={layout.pp}")
    if not isinstance(params, dict):
        raise _malformed(f"{path}: rank {label}", "parameters must be an object {name: record}")


def _check_record(path, label, name, rec):
    where = f"{path}: {label}/{name}"
    if not isinstance(rec, dict) or not isinstance(rec.get("blocks"), str):
        raise BadInputError(f"{where}: record without a 'blocks' string")
    if not _is_ints(rec.get("shape")) or not isinstance(rec.get("dtype"), str) or not _is_ints(rec.get("block"), 2, 1):
        raise _malformed(where, "record needs 'shape' (integers), 'dtype' and 'block' ([rows, cols] >= 1)")
    n = rec.get("n_blocks")
    if not _is_int(n):
        raise _malformed(where, f"'n_blocks' must be a count, got {n!r}")
    shape, (bm, bn) = rec["shape"], rec["block"]
    if not rec.get("raw") and len(shape) in (2, 3):
        grid = (shape[0] if len(shape) == 3 else 1) * -(-shape[-2] // bm) * -(-shape[-1] // bn)
        if n != grid:
            raise _malformed(where, f"'n_blocks' {n} but shape {shape} has {grid} blocks of {[bm, bn]}")
    idx = rec.get("indices")
    if idx is not None and not (_is_ints(idx) and idx == sorted(set(idx)) and all(i < n for i in idx)):
        raise _malformed(where, f"'indices' must be distinct sorted block numbers below {n}, got {idx!r}")
    want = len(idx) if idx is not None else n
    if len(rec["blocks"]) != 16 * want:
        raise BadInputError(f"{where}: {len(rec['blocks']) // 16} block digests, expected {want} "
                            "(truncated file?)")
    if not _HEX.match(rec["blocks"]):
        raise _malformed(where, "'blocks' must hold 16 lowercase hex digits per block")
