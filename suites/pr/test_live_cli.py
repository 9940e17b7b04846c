"""Done-when of the live check on a tiny Llama checkpoint: expect -> digest of an engine dump -> diff.

The engine dump is what the reference engine holds after an FP8-before refit of the same weights.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from refit_verify.cli import main
from refit_verify.live.digest import sample_indices
from refit_verify.live.dump import write_rank_dump
from refit_verify.model import load_config, synthesize_weights
from refit_verify.refit.run import run_refit

R0 = "tp0.ep0.pp0"
FUSED = "model.layers.0.mlp.gate_up_proj.weight"
BLOCK = (3, 1)  # scale block changed in the dump; gate_up is 1536 x 256 -> 12 x 2 blocks
FLAT = BLOCK[0] * 2 + BLOCK[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("live")
    cfg = load_config("tiny-llama", layers=1)
    w = synthesize_weights(cfg, 0)
    save_file({k: v.contiguous() for k, v in w.items()}, str(d / "ckpt.safetensors"))
    params = run_refit(cfg, w, paths=("before",)).states["before"].params()
    write_rank_dump(params, d / "dump")
    bad = dict(params)
    s = bad[FUSED + "_scale_inv"].clone()
    s[BLOCK] *= 2
    bad[FUSED + "_scale_inv"] = s
    write_rank_dump(bad, d / "bad")
    return d


def _cli(*argv):
    return main([str(a) for a in argv])


def test_expect_digest_diff_equal(run, capsys):
    assert _cli("expect", run / "ckpt.safetensors", "--out", run / "e.json") == 0
    assert _cli("digest", run / "dump", "--out", run / "g.json") == 0
    assert _cli("diff", run / "e.json", run / "g.json", "--out", run / "r0", "-q") == 0
    assert "EQUAL" in capsys.readouterr().out
    rep = json.loads((run / "r0" / "report.json").read_text())
    assert rep["verdict"] == "pass" and rep["jobs"][0]["metrics"]["mismatched_blocks"] == 0


def test_one_scale_block_named_and_nothing_else(run, capsys):
    _cli("expect", run / "ckpt.safetensors", "--out", run / "e.json")
    assert _cli("digest", run / "bad", "--out", run / "b.json") == 0
    capsys.readouterr()
    assert _cli("diff", run / "e.json", run / "b.json", "--out", run / "r1") == 1
    out = capsys.readouterr().out
    assert f"{R0}/{FUSED}: 1 block(s) differ; first block {FLAT} = {BLOCK}" in out
    rep = json.loads((run / "r1" / "report.json").read_text())
    job = rep["jobs"][0]
    assert [f["case"] for f in job["failures"]] == [f"{R0}/{FUSED}"]
    assert [(b["tensor"], b["block"]) for b in job["tables"]["blocks"]] == [(FUSED, FLAT)]


def test_truncated_and_foreign_files_exit_2(run, capsys):
    _cli("expect", run / "ckpt.safetensors", "--out", run / "e.json")
    text = (run / "e.json").read_text()
    (run / "t.json").write_text(text[: len(text) // 3])
    (run / "f.json").write_text(json.dumps({"format": "something-else", "version": 1}))
    capsys.readouterr()
    assert _cli("diff", run / "e.json", run / "t.json", "--out", run / "r2") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "t.json: not a readable JSON digest file" in err[0]
    assert _cli("diff", run / "f.json", run / "e.json", "--out", run / "r2") == 2
    assert "f.json: not a refit-verify digest file" in capsys.readouterr().err


def test_different_sampling_is_incompatible(run, capsys):
    _cli("expect", run / "ckpt.safetensors", "--out", run / "e.json")
    assert _cli("digest", run / "dump", "--out", run / "s.json", "--sample", "2") == 0
    capsys.readouterr()
    assert _cli("diff", run / "e.json", run / "s.json", "--out", run / "r3") == 2
    assert "incompatible digest files" in capsys.readouterr().err


def _seed_sampling(block: int, wanted: bool) -> int:
    for seed in range(100):
        hit = block in sample_indices(24, 2, seed, FUSED, R0).tolist()
        if hit == wanted:
            return seed
    raise AssertionError("no seed found")


@pytest.mark.parametrize("sampled", [True, False])
def test_sampled_mode_catches_block_when_sampled(run, capsys, sampled):
    seed = str(_seed_sampling(FLAT, sampled))
    opts = ["--sample", "2", "--sample-seed", seed]
    _cli("expect", run / "ckpt.safetensors", "--out", run / "se.json", *opts)
    _cli("digest", run / "bad", "--out", run / "sb.json", *opts)
    capsys.readouterr()
    rc = _cli("diff", run / "se.json", run / "sb.json", "--out", run / "r4")
    out = capsys.readouterr().out
    rep = json.loads((run / "r4" / "report.json").read_text())
    m = rep["jobs"][0]["metrics"]
    n_tensors = len(json.loads((run / "se.json").read_text())["ranks"][R0])
    assert f"of {m['total_blocks']} blocks compared (sampled: 2 per tensor, seed {seed})" in out
    assert m["compared_blocks"] < m["total_blocks"] and m["compared_blocks"] <= 2 * n_tensors
    if sampled:
        assert rc == 1 and f"{R0}/{FUSED}: 1 block(s) differ; first block {FLAT}" in out
    else:
        assert rc == 0


def test_stale_and_missing_parameters_named(run, capsys):
    from safetensors.torch import load_file

    params = load_file(str(run / "dump" / f"{R0}.safetensors"))
    stale = "model.layers.0.self_attn.o_proj.weight"
    params[stale] = torch.zeros_like(params[stale])
    del params["model.norm.weight"]
    params["model.layers.0.extra.weight"] = torch.ones(4)
    write_rank_dump(params, run / "odd")
    _cli("expect", run / "ckpt.safetensors", "--out", run / "e.json")
    _cli("digest", run / "odd", "--out", run / "o.json")
    capsys.readouterr()
    assert _cli("diff", run / "e.json", run / "o.json", "--out", run / "r5") == 1
    out = capsys.readouterr().out
    assert f"{R0}/model.norm.weight: never written" in out
    assert f"{R0}/model.layers.0.extra.weight: extra" in out
    assert f"{R0}/{stale}: 4 block(s) differ" in out
    job = json.loads((run / "r5" / "report.json").read_text())["jobs"][0]
    assert job["metrics"]["mismatched_blocks"] == 4
    assert [(b["tensor"], b["block"]) for b in job["tables"]["blocks"]] == [(stale, i) for i in range(4)]
