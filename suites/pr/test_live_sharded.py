"""`expect --tp/--ep` for a sharded engine: per-rank expectations from the sharded reference engine, held
against a per-rank dump of an engine that refit through the other path (FP8-after)."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import save_file

from refit_verify.cli import main
from refit_verify.layout import Layout
from refit_verify.live.dump import write_rank_dump
from refit_verify.model import load_config
from refit_verify.model.weights import synthesize_weights
from refit_verify.refit.sharded_run import run_sharded_refit

CONFIG = "tiny-qwen3-moe"


@pytest.mark.parametrize("tp,ep", [(2, 2), (1, 2)])  # (1, 2): two whole experts per rank
def test_expect_sharded_matches_engine_dump_and_names_an_altered_rank(tmp_path, capsys, tp, ep):
    cfg = load_config(CONFIG)
    weights = synthesize_weights(cfg, 0)
    ckpt = tmp_path / "ckpt.safetensors"
    save_file({k: v.contiguous() for k, v in weights.items()}, str(ckpt))
    layout = Layout(tp=tp, ep=ep)
    after = run_sharded_refit(cfg, layout, weights, paths=("after",)).states["after"]
    dump = tmp_path / "dump"
    for rank in layout.ranks():
        write_rank_dump(after.params(rank), dump, rank)
    exp, eng = tmp_path / "expected.json", tmp_path / "engine.json"
    assert main(["expect", str(ckpt), "--tp", str(tp), "--ep", str(ep), "--config", CONFIG, "--out", str(exp)]) == 0
    assert main(["digest", str(dump), "--out", str(eng)]) == 0
    assert set(json.loads(exp.read_text())["ranks"]) == {r.label for r in layout.ranks()}
    assert main(["diff", str(exp), str(eng), "--out", str(tmp_path / "r0"), "-q"]) == 0
    # one scale block of one rank's fused expert parameter changed: that rank and tensor, nothing else
    rank = layout.ranks()[-1]
    params = dict(after.params(rank))
    name = next(n for n in params if n.endswith("w13_weight_scale_inv"))
    altered = params[name].clone()
    altered[-1].view(-1)[0] *= 2  # the last local expert: not only expert 0 is checked
    params[name] = altered
    write_rank_dump(params, dump, rank)
    assert main(["digest", str(dump), "--out", str(eng)]) == 0
    capsys.readouterr()
    assert main(["diff", str(exp), str(eng), "--out", str(tmp_path / "r1"), "-q"]) == 1
    out = capsys.readouterr().out
    assert name[: -len("_scale_inv")] in out and rank.label in out and "1 block(s) differ" in out, out
