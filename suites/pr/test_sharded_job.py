"""`refit-verify run --job sharded_refit --tp/--ep/--pp`: exit codes, per-rank report sections, invariants."""

import json
from pathlib import Path

from refit_verify.cli import main
from refit_verify.layout import Layout
from refit_verify.model.config import from_dict
from refit_verify.refit.sharded_run import refit_invariants

SMALL = from_dict({"hidden_size": 256, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 2,
                   "num_key_value_heads": 2, "head_dim": 128, "vocab_size": 128}, default_name="small")


def run(tmp_path, *args):
    out = tmp_path / "r"
    rc = main(["run", "--job", "sharded_refit", "--out", str(out), "-q", "--no-plots", *args])
    return rc, json.loads((Path(out) / "report.json").read_text())["jobs"][0]


def test_job_passes_tp2_ep2_with_rank_sections(tmp_path):
    rc, job = run(tmp_path, "--config", "tiny-qwen3-moe", "--layers", "1", "--tp", "2", "--ep", "2",
                  "--set", "invariants=0")  # the invariants have their own test below
    assert rc == 0 and job["verdict"] == "pass", job.get("failures")
    labels = [r.label for r in Layout(2, 2).ranks()]
    assert all(f"rank {label}" in job["tables"] for label in labels)
    picture = {row["tensor"]: row for row in job["tables"]["rank_x_tensor"]}
    assert picture["model.layers.0.mlp.experts.3.w13_weight"]["tp1.ep1.pp0"] == "."
    assert picture["model.layers.0.mlp.experts.3.w13_weight"]["tp0.ep0.pp0"] == " "  # expert 3 lives on EP rank 3
    assert "--tp 2 --ep 2" in job["repro"]


def test_job_fails_on_kv64_naming_tensor_and_rank(tmp_path):
    rc, job = run(tmp_path, "--config", "odd-kv64", "--tp", "2", "--set", "invariants=0")
    assert rc == 1
    cases = {f["case"] for f in job["failures"]}
    assert "tp1.ep0.pp0/before/placement_raised: model.layers.0.self_attn.v_proj.weight_scale_inv" in cases


def test_job_pp2_stage_local_names_report_collision(tmp_path):
    path = tmp_path / "small.json"
    path.write_text(json.dumps({k: v for k, v in SMALL.to_dict().items() if k not in ("moe",)}))
    rc, job = run(tmp_path, "--config", str(path), "--pp", "2", "--set", "stage_names=local", "--set", "invariants=0")
    assert rc == 1
    hazards = {f["case"].split("/")[2].split(":")[0] for f in job["failures"]}
    assert {"name_collision", "written_twice", "never_loaded"} <= hazards


def test_idempotent_and_storage_stable():
    assert refit_invariants(SMALL, Layout(tp=2, pp=2)) == []


def test_job_trainer_quant_both_reports_the_gather_hazard(tmp_path):
    path = tmp_path / "inter192.json"
    path.write_text(json.dumps({"hidden_size": 256, "intermediate_size": 192, "num_hidden_layers": 1,
                                "num_attention_heads": 2, "num_key_value_heads": 2, "head_dim": 128, "vocab_size": 128}))
    rc, job = run(tmp_path, "--config", str(path), "--tp", "2", "--set", "trainer_quant=both", "--set", "invariants=0")
    assert rc == 1
    gather = [f for f in job["failures"] if "quantizing before and after the trainer's all-gather" in f["reason"]]
    # each rank's 96-row slice shares a 128-row block with the other rank's rows when quantized whole
    assert {f["case"].split("/")[0] for f in gather} == {"tp0.ep0.pp0", "tp1.ep0.pp0"}
