"""`expect(named_tensors, recipe, layout, config=...)` for a sharded engine, in memory: the same document
the CLI's `expect --tp` writes, from a Layout and the model's config alone (no placement to write)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from safetensors.torch import save_file

from refit_verify.cli import main
from refit_verify.errors import BadInputError
from refit_verify.layout import Layout
from refit_verify.live.compare import compare_documents
from refit_verify.live.dump import write_rank_dump
from refit_verify.live.expect import Expectation, expect
from refit_verify.live.fileformat import digest_document
from refit_verify.model import synthesize_weights
from refit_verify.model.config import from_dict
from refit_verify.refit.exporter import TrainerExporter
from refit_verify.refit.sharded_run import run_sharded_refit

# a Llama that tp=2 can hold in block FP8: q/k/v 512/256/256 rows, o_proj 512 and down_proj 768 columns
HF = {"model_type": "llama", "hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 1,
      "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 128, "vocab_size": 1024}
TP2 = Layout(tp=2)


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    d = tmp_path_factory.mktemp("tp2")
    cfg = from_dict(HF, "llama-tp2")
    w = synthesize_weights(cfg, 0)
    save_file({k: v.contiguous() for k, v in w.items()}, str(d / "model.safetensors"))
    (d / "config.json").write_text(json.dumps(HF))
    return d, cfg, w


@pytest.fixture(scope="module")
def doc(llama):
    """The in-memory expectation at tp=2, computed once (the sharded reference takes a few seconds)."""
    return expect(llama[2], "vllm_per_block", TP2, config=HF)


def test_in_memory_expect_equals_the_cli_for_tp2(llama, doc):
    d, cfg, w = llama
    assert main(["expect", str(d), "--tp", "2", "--out", str(d / "cli.json")]) == 0  # config.json found
    cli = json.loads((d / "cli.json").read_text())
    assert json.loads(json.dumps(doc)) == cli
    assert sorted(doc["ranks"]) == ["tp0.ep0.pp0", "tp1.ep0.pp0"]
    qkv = doc["ranks"]["tp1.ep0.pp0"]["model.layers.0.self_attn.qkv_proj.weight"]
    assert qkv["shape"] == [512, 256] and qkv["scale_shape"] == [4, 2]  # this rank's half of q, k, v
    assert expect(w, layout=TP2, config=str(d / "config.json")) == doc  # a config.json path: the same


def test_in_memory_expect_tp2_matches_an_engine_that_quantized_on_load(llama, doc, tmp_path):
    d, cfg, w = llama
    after = run_sharded_refit(cfg, TP2, w, paths=("after",)).states["after"]
    for rank in TP2.ranks():
        write_rank_dump(after.params(rank), tmp_path, rank)
    assert main(["digest", str(tmp_path), "--out", str(tmp_path / "g.json")]) == 0
    engine = json.loads((tmp_path / "g.json").read_text())
    assert compare_documents(json.loads(json.dumps(doc)), engine).equal
    # and one scale block of rank 1's gate_up_proj altered: that rank, tensor and block only
    params = dict(after.params(TP2.ranks()[1]))
    name = "model.layers.0.mlp.gate_up_proj.weight"
    s = params[name + "_scale_inv"].clone()
    s[1, 0] *= 2
    params[name + "_scale_inv"] = s
    got = digest_document({TP2.ranks()[0]: after.params(TP2.ranks()[0]), TP2.ranks()[1]: params},
                          "vllm_per_block", (128, 128), TP2, "engine")
    diff = compare_documents(doc, got)
    assert [(r, n, b) for r, n, b, _, _ in diff.blocks] == [("tp1.ep0.pp0", name, 2)]


def test_sharded_expectation_by_bucket_and_from_the_fp8_payload(llama, doc):
    d, cfg, w = llama
    sent = list(TrainerExporter(w, "before", "vllm_per_block"))
    ex = Expectation(layout=TP2, config=cfg)  # a ModelConfig: the same
    for i in range(0, len(sent), 3):  # a weight's scale often in the next bucket
        ex.add(sent[i:i + 3])
    assert ex.document() == doc


def test_sharded_expect_needs_the_config_and_names_what_is_missing(llama):
    d, cfg, w = llama
    with pytest.raises(BadInputError, match="pass config="):
        expect(w, layout=TP2)
    part = {n: t for n, t in w.items() if n != "model.layers.0.self_attn.v_proj.weight"}
    with pytest.raises(BadInputError, match="only part of this parameter") as e:
        expect(part, layout=TP2, config=HF)
    assert e.value.tensor == "model.layers.0.self_attn.qkv_proj.weight"
    # a parameter never given is left out (the engine's copy then reads as extra), as with one rank
    no_norm = {n: t for n, t in w.items() if n != "model.norm.weight"}
    doc = expect(no_norm, layout=TP2, config=HF)
    assert all("model.norm.weight" not in p for p in doc["ranks"].values())


def test_hf_config_object_accepted(llama, doc):
    """An HF PretrainedConfig (`model.config`) is read through its `to_dict()`."""
    d, cfg, w = llama
    hf = SimpleNamespace(to_dict=lambda: dict(HF))
    assert expect(w, layout=TP2, config=hf) == doc
