"""Digest comparison names exactly the changed block, missing and extra parameters, metadata."""

import torch

from refit_verify.fp8.quantize import quantize
from refit_verify.layout import Layout, Rank
from refit_verify.live.compare import compare_documents
from refit_verify.live.fileformat import digest_document

R0 = "tp0.ep0.pp0"


def _params():
    g = torch.Generator().manual_seed(7)
    q = quantize((torch.randn(256, 384, generator=g) * 0.02).to(torch.bfloat16), "vllm_per_block")
    return {"a.weight": q.data, "a.weight_scale_inv": q.scale_inv, "n.weight": torch.ones(8)}


def _doc(p, **kw):
    return digest_document({Rank(): p}, "vllm_per_block", (128, 128), Layout(), "x", **kw)


def test_equal_and_one_scale_block():
    p = _params()
    assert compare_documents(_doc(p), _doc(p)).equal
    q = dict(p)
    s = p["a.weight_scale_inv"].clone()
    s[1, 0] *= 2
    q["a.weight_scale_inv"] = s
    d = compare_documents(_doc(p), _doc(q))
    assert [(r, n, b) for r, n, b, _, _ in d.blocks] == [(R0, "a.weight", 3)]
    assert not (d.missing or d.extra or d.meta or d.shape)


def test_missing_extra_and_meta():
    p = _params()
    q = {k: v for k, v in p.items() if k != "n.weight"}
    q["x.weight"] = torch.zeros(4)
    e = _doc(p)
    g = digest_document({Rank(): q}, "other", (128, 128), Layout(), "x")
    d = compare_documents(e, g)
    assert d.missing == [(R0, "n.weight")] and d.extra == [(R0, "x.weight")]
    assert [m[0] for m in d.meta] == ["recipe"] and not d.equal


def test_sampled_compare_counts_blocks():
    p = _params()
    d = compare_documents(_doc(p, sample={"k": 2, "seed": 1}), _doc(p, sample={"k": 2, "seed": 1}))
    assert d.equal and d.compared_blocks == 2 + 1
