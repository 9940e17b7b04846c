"""`refit-verify diff` of digest files, error paths: a malformed or incompatible file exits 2 with one line
naming the file and what is wrong (never a crash, never read as differences); layout or recipe
disagreement and never-written / extra parameters exit 1 naming each."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from refit_verify.cli import main
from refit_verify.fp8 import quantize
from refit_verify.layout import Layout, Rank
from refit_verify.live.fileformat import digest_document, write_document

R0 = "tp0.ep0.pp0"
W = "l.mlp.down_proj.weight"


def _doc(recipe="vllm_per_block", layout=Layout(), ranks=None, **kw):
    g = torch.Generator().manual_seed(11)
    q = quantize((torch.randn(256, 384, generator=g) * 0.02).to(torch.bfloat16), "vllm_per_block")
    params = {W: q.data, W + "_scale_inv": q.scale_inv, "l.norm.weight": torch.ones(64, dtype=torch.bfloat16)}
    return digest_document({r: params for r in (ranks or [Rank()])}, recipe, (128, 128), layout, "engine", **kw)


MALFORMED = {  # name: (edit of a good document, phrase in the one error line)
    "wrong version": (lambda d: d.update(version=2), "digest version 2, this tool reads 1"),
    "ranks not an object": (lambda d: d.update(ranks=[1]), "'ranks' missing or not an object"),
    "rank not an object": (lambda d: d["ranks"].update({R0: [1]}), f"rank {R0}: parameters must be an object"),
    "bad rank label": (lambda d: d["ranks"].update({"rank0": d["ranks"].pop(R0)}), "a rank label is tpN.epN.ppN"),
    "rank outside layout": (lambda d: d["ranks"].update({"tp1.ep0.pp0": d["ranks"].pop(R0)}),
                            "rank tp1.ep0.pp0: outside the file's layout tp=1"),
    "layout not an object": (lambda d: d.update(layout=[1]), "'layout' must be {tp, ep, pp}"),
    "recipe missing": (lambda d: d.pop("recipe"), "'recipe' must be a recipe name"),
    "block not a pair": (lambda d: d.update(block="128"), "'block' must be [rows, cols]"),
    "sample malformed": (lambda d: d.update(sample={"k": "x"}), "'sample' must be null or"),
    "record without shape": (lambda d: d["ranks"][R0][W].pop("shape"), f"{R0}/{W}: record needs 'shape'"),
    "n_blocks not a count": (lambda d: d["ranks"][R0][W].update(n_blocks="6"), "'n_blocks' must be a count"),
    "n_blocks off the shape": (lambda d: d["ranks"][R0][W].update(n_blocks=1, blocks="0" * 16),
                               "'n_blocks' 1 but shape [256, 384] has 6 blocks"),
    "blocks not hex": (lambda d: d["ranks"][R0][W].update(blocks="z" * 96), "16 lowercase hex digits"),
    "blocks truncated": (lambda d: d["ranks"][R0][W].update(blocks="0" * 80), "5 block digests, expected 6"),
    "indices out of range": (lambda d: d["ranks"][R0][W].update(indices=[9]), "'indices' must be distinct sorted"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
@pytest.mark.parametrize("side", ["expected", "engine"])
def test_malformed_file_exits_2_naming_it(tmp_path, capsys, case, side):
    edit, phrase = MALFORMED[case]
    good, bad = _doc(), _doc()
    edit(bad)
    write_document(good, tmp_path / "good.json")
    write_document(bad, tmp_path / "bad.json")
    files = ["bad.json", "good.json"] if side == "expected" else ["good.json", "bad.json"]
    rc = main(["diff", *(str(tmp_path / f) for f in files), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "bad.json" in err[0] and phrase in err[0], err[0]


@pytest.mark.parametrize("key,value", [("sample", {"k": 2, "seed": 1}), ("block", [1, 32])])
def test_incompatible_files_exit_2(tmp_path, capsys, key, value):
    other = _doc()
    other[key] = value
    if key == "sample":  # a consistent sampled file: the first two blocks of each record
        for rec in other["ranks"][R0].values():
            rec["indices"], rec["blocks"] = [0, 1][:rec["n_blocks"]], rec["blocks"][:16 * min(2, rec["n_blocks"])]
    write_document(_doc(), tmp_path / "a.json")
    write_document(other, tmp_path / "b.json")
    assert main(["diff", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "incompatible digest files" in err and f"{key}=" in err, err


def _diff(tmp_path, capsys, expected, engine):
    write_document(expected, tmp_path / "e.json")
    write_document(engine, tmp_path / "g.json")
    capsys.readouterr()
    rc = main(["diff", str(tmp_path / "e.json"), str(tmp_path / "g.json"), "--out", str(tmp_path / "r")])
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    return rc, capsys.readouterr().out, [f["case"] for f in report["jobs"][0]["failures"]]


def test_recipe_disagreement_exits_1_naming_it(tmp_path, capsys):
    rc, out, cases = _diff(tmp_path, capsys, _doc(), _doc(recipe="nemo_rl"))
    assert rc == 1 and cases == ["<recipe>"]
    assert "recipe disagrees: expected 'vllm_per_block', engine 'nemo_rl'" in out


def test_layout_disagreement_exits_1_naming_it_and_the_ranks(tmp_path, capsys):
    tp2 = Layout(tp=2)
    rc, out, cases = _diff(tmp_path, capsys, _doc(), _doc(layout=tp2, ranks=tp2.ranks()))
    assert rc == 1 and "layout disagrees" in out
    assert cases == ["<layout>", f"tp1.ep0.pp0/{W}", "tp1.ep0.pp0/l.norm.weight"]  # rank 1's as extra


def test_never_written_and_extra_parameters_each_named(tmp_path, capsys):
    expected, engine = _doc(), copy.deepcopy(_doc())
    engine["ranks"][R0]["l.extra.weight"] = engine["ranks"][R0].pop("l.norm.weight")
    rc, out, cases = _diff(tmp_path, capsys, expected, engine)
    assert rc == 1
    assert f"{R0}/l.norm.weight: never written" in out and f"{R0}/l.extra.weight: extra" in out
    assert sorted(cases) == [f"{R0}/l.extra.weight", f"{R0}/l.norm.weight"]
