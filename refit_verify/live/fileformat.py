"""The digest file (docs/DIGEST.md): JSON, versioned, one record per (rank, parameter)."""

from __future__ import annotations

import json
import os
import tempfile

import torch

from refit_verify.errors import BadInputError
from refit_verify.layout import Layout, Rank
from refit_verify.live.digest import DIGEST_VERSION, block_digests, lanes_hex, sample_indices, tensor_digest

FORMAT = "refit-verify-digest"
SCALE_SUFFIX = "_scale_inv"
# Unquantized tensors (norms, embeddings) are digested as raw bytes in runs of this many bytes.
RAW_RUN = 4096


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
    """Read and validate a digest file; BadInputError (exit 2) naming what is wrong."""
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise BadInputError(f"{path}: not a readable JSON digest file ({e})") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BadInputError(f"{path}: not a refit-verify digest file (format != {FORMAT!r})")
    if doc.get("version") != DIGEST_VERSION:
        raise BadInputError(f"{path}: digest version {doc.get('version')!r}, this tool reads {DIGEST_VERSION}")
    ranks = doc.get("ranks")
    if not isinstance(ranks, dict):
        raise BadInputError(f"{path}: 'ranks' missing or not an object")
    for label, params in ranks.items():
        for name, rec in (params or {}).items():
            _check_record(path, label, name, rec)
    return doc


def _check_record(path, label, name, rec):
    where = f"{path}: {label}/{name}"
    if not isinstance(rec, dict) or not isinstance(rec.get("blocks"), str):
        raise BadInputError(f"{where}: record without a 'blocks' string")
    want = len(rec["indices"]) if "indices" in rec else rec.get("n_blocks")
    if not isinstance(want, int) or len(rec["blocks"]) != 16 * want:
        raise BadInputError(f"{where}: {len(rec['blocks']) // 16} block digests, expected {want} "
                            "(truncated file?)")
