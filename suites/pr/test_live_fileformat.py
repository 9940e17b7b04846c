"""Digest file: round trip, raw tensors, sampled records, truncated/foreign files rejected (exit-2 errors)."""

import json

import pytest
import torch

from refit_verify.errors import BadInputError
from refit_verify.fp8.quantize import quantize
from refit_verify.layout import Layout, Rank
from refit_verify.live.fileformat import digest_document, load_document, write_document


def _params():
    g = torch.Generator().manual_seed(5)
    q = quantize((torch.randn(256, 384, generator=g) * 0.02).to(torch.bfloat16), "vllm_per_block")
    return {"l.qkv_proj.weight": q.data, "l.qkv_proj.weight_scale_inv": q.scale_inv,
            "norm.weight": torch.ones(384, dtype=torch.bfloat16)}


def test_round_trip_and_truncation(tmp_path):
    doc = digest_document({Rank(): _params()}, "vllm_per_block", (128, 128), Layout(), "engine")
    rec = doc["ranks"]["tp0.ep0.pp0"]
    assert set(rec) == {"l.qkv_proj.weight", "norm.weight"}
    assert rec["l.qkv_proj.weight"]["n_blocks"] == 6 and len(rec["l.qkv_proj.weight"]["blocks"]) == 96
    p = tmp_path / "d.json"
    write_document(doc, p)
    assert load_document(p) == json.loads(json.dumps(doc))
    text = p.read_text()
    (tmp_path / "t.json").write_text(text[: len(text) // 2])
    with pytest.raises(BadInputError, match="not a readable JSON"):
        load_document(tmp_path / "t.json")
    (tmp_path / "f.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(BadInputError, match="not a refit-verify digest"):
        load_document(tmp_path / "f.json")
    doc["ranks"]["tp0.ep0.pp0"]["l.qkv_proj.weight"]["blocks"] = "00" * 8
    write_document(doc, p)
    with pytest.raises(BadInputError, match="truncated"):
        load_document(p)


def test_sampled_document_has_indices():
    doc = digest_document({Rank(): _params()}, "vllm_per_block", (128, 128), Layout(), "engine",
                          sample={"k": 2, "seed": 3})
    rec = doc["ranks"]["tp0.ep0.pp0"]["l.qkv_proj.weight"]
    assert len(rec["indices"]) == 2 and len(rec["blocks"]) == 32 and "tensor" not in rec
