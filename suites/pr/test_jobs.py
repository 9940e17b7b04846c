"""The run jobs refit_pipeline, refit_hazards, logits_drift; diff of the pipeline's two dumps; check --exporter.

Each check has a mutant in refit_verify/selftest/mutants_jobs.py that names it as its killer.
"""

from __future__ import annotations

import contextlib
import io
import json
import textwrap

import pytest
from safetensors.torch import load_file, save_file

from refit_verify.cli import main
from refit_verify.jobs import JobContext
from refit_verify.jobs import model as mjobs
from refit_verify.jobs import refit as rjobs

ZERO_CTX = dict(config="tiny-llama", layers=1)


def ctx(**options):
    return JobContext(options={"whatif": "0", **options}, **ZERO_CTX)


def figs(res, metric):
    return {f.subject: f.value for f in res.figures if f.metric == metric}


def test_refit_pipeline_identical_paths():
    res = rjobs.refit_pipeline(ctx())
    assert res.verdict == "pass", res.failures[:3]
    code, scale = figs(res, "refit_code_mismatch"), figs(res, "refit_scale_mismatch")
    assert "model.layers.0.self_attn.qkv_proj.weight" in code and "lm_head.weight" in code
    assert set(code.values()) == {0} and set(scale.values()) == {0}
    sqnr = figs(res, "sqnr_db")
    assert {s.split(":")[0] for s in sqnr} == {"fp8_before", "fp8_after"} and min(sqnr.values()) > 28
    rows = res.tables["tensors"]
    assert len(rows) == 4 and all(r["equal"] and r["sqnr_db"] > 28 for r in rows)
    assert res.tables["scale_ulp"] == [{"ulp_diff": 0, "count": sum(r["n_blocks"] for r in rows)}]
    assert res.tables["block_mismatch"] == [] and res.metrics["bitwise_equal"] is True


def test_refit_pipeline_recipe_drift_fails_with_heatmap_and_repro():
    res = rjobs.refit_pipeline(ctx(trainer_recipe="nemo_rl"))
    assert res.verdict == "fail"
    heat = res.tables["block_mismatch"]
    assert heat and "trainer=nemo_rl vs engine=vllm_per_block" == heat[0]["label"]
    assert sum(r["n_scale_mismatch"] for r in res.tables["tensors"]) > 0
    assert any(not r["equal"] for r in res.tables["tensors"])
    assert max(figs(res, "refit_scale_mismatch").values()) > 0
    f = res.failures[0]
    assert "bitwise_mismatch" in f.case and "--set trainer_recipe=nemo_rl" in f.repro and "--layers 1" in f.repro


def test_refit_pipeline_whatif_rows():
    res = rjobs.refit_pipeline(JobContext(layers=1))
    rows = {r["trainer"]: r for r in res.tables["whatif"]}
    assert "vllm_per_block" not in rows and rows["nemo_rl"]["n_scale_mismatch"] > 0
    assert res.tables["block_mismatch"][0]["label"].startswith("what-if trainer=nemo_rl")


def test_refit_hazards_expected_detected_and_undetected_fails():
    res = rjobs.refit_hazards(JobContext())
    assert res.verdict == "pass", res.failures[:3]
    rows = res.tables["findings"]
    assert {"odd-kv64", "odd-mimo", "odd-gate-up-320", "tiny-moe-router/heuristic"} <= {r["scenario"] for r in rows}
    assert all(r.get("expected", True) for r in rows if "hazard" in r)
    assert set(figs(res, "hazards_undetected").values()) == {0}
    # a hazard expected where the loader does not produce it: the job must say so
    scen = rjobs.HAZARD_SCENARIOS
    try:
        rjobs.HAZARD_SCENARIOS = (("tiny-llama/misplaced?", "tiny-llama", {}, {"scale_misplaced"}),)
        bad = rjobs.refit_hazards(JobContext())
    finally:
        rjobs.HAZARD_SCENARIOS = scen
    assert bad.verdict == "fail" and "not detected" in bad.failures[0].reason
    assert "--set hazard_scenarios=tiny-llama/misplaced?" in bad.failures[0].repro


def test_logits_drift_figures():
    res = mjobs.logits_drift(JobContext())
    assert res.verdict == "pass", res.failures[:3]
    for subj in ("bf16 vs fp8_before", "bf16 vs fp8_after"):
        assert 0 < figs(res, "gen_kl_error")[subj] < 0.003
        assert 1 < figs(res, "token_mult_prob_error")[subj] < 1.1
    cos, top1 = figs(res, "logits_cosine"), figs(res, "top1_match")
    assert len(cos) == 4 and all("fp8_before vs fp8_after" in s for s in cos)
    assert min(cos.values()) > 0.9999 and set(top1.values()) == {1.0}
    kl = res.tables["logits_kl"]
    assert len(kl) == 24 and all(r["kl"] > 0 for r in kl) and res.metrics["fp8_before_vs_after_identical"]


def test_logits_drift_sees_before_after_difference():
    res = mjobs.logits_drift(JobContext(layers=1, options={"trainer_recipe": "nemo_rl", "greedy_steps": "0"}))
    assert res.metrics["fp8_before_vs_after_identical"] is False and res.metrics["fp8_before_vs_after_max_abs"] > 0
    assert min(figs(res, "logits_cosine").values()) < 1.0


def _quiet(*argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        rc = main(list(argv))
    return rc, out.getvalue()


def test_diff_of_pipeline_dumps(tmp_path):
    """Issue 5: zero drift between the two paths' dumps; exact drift after one block's scale is altered."""
    res = rjobs.refit_pipeline(ctx(dump_dir=str(tmp_path / "dump")))
    a, b = tmp_path / "dump" / "before", tmp_path / "dump" / "after"
    rc, out = _quiet("diff", str(a), str(b), "--out", str(tmp_path / "r0"), "-q", "--no-plots")
    assert rc == 0 and "ZERO DRIFT" in out, out
    rep = json.loads((tmp_path / "r0" / "report.json").read_text())["jobs"][0]
    assert rep["metrics"]["fp8_tensors_compared"] == res.metrics["fp8_tensors"] == 4
    state = load_file(str(b / "model.safetensors"))
    name = "model.layers.0.mlp.gate_up_proj.weight"
    s = state[name + "_scale_inv"].clone()
    s[3, 1] *= 2
    state[name + "_scale_inv"] = s
    c = tmp_path / "altered"
    c.mkdir()
    save_file(state, str(c / "model.safetensors"))
    rc, out = _quiet("diff", str(a), str(c), "--out", str(tmp_path / "r1"), "-q", "--no-plots")
    assert rc == 1 and name in out
    job = json.loads((tmp_path / "r1" / "report.json").read_text())["jobs"][0]
    assert job["metrics"]["n_scale_mismatch"] == 1 and job["metrics"]["n_code_mismatch"] == 0
    row = next(r for r in job["tables"]["tensors"] if r["tensor"] == name)
    assert "block (3, 1)" in row["first_mismatch"]


USER_EXPORTER = textwrap.dedent('''
    from refit_verify.fp8 import quantize
    LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

    def export(sd, recipe="vllm_per_block"):
        for n, w in sd.items():
            if n.endswith(".weight") and any(s in n for s in LINEARS):
                q = quantize(w, recipe, n)
                yield n, q.data
                yield n + "_scale_inv", q.scale_inv
            else:
                yield n, w

    def no_norm(sd):
        for n, t in export(sd):
            if n != "model.norm.weight":
                yield n, t
''')


def test_check_exporter(tmp_path):
    f = tmp_path / "exp.py"
    f.write_text(USER_EXPORTER)
    rc, out = _quiet("check", "--exporter", f"{f}:export")
    assert rc == 0 and "bit-identical" in out, out
    rc, out = _quiet("check", "--exporter", f"{f}:export", "--kwargs", '{"recipe": "nemo_rl"}', "--out", str(tmp_path / "r"))
    assert rc == 1 and "first: bytes:" in out and "scale mismatch in block" in out, out
    assert "reproduce: refit-verify check --exporter" in out
    rep = json.loads((tmp_path / "r" / "report.json").read_text())
    assert rep["jobs"][0]["verdict"] == "fail"
    rc, out = _quiet("check", "--exporter", f"{f}:no_norm")
    assert rc == 1 and "missing: tensor model.norm.weight" in out
    with pytest.raises(SystemExit) as exc:  # --loader was removed: a usage error, exit 2
        _quiet("check", "--loader", f"{f}:export")
    assert exc.value.code == 2


def test_diff_source_takes_a_plain_hf_checkpoint(tmp_path):
    """Issue 18: the engine dumps carry fused names (qkv_proj, gate_up_proj), an HF checkpoint the parts;
    the tool fuses them, so every FP8 tensor gets its error against the source and no issue is raised."""
    from refit_verify.model import load_config
    from refit_verify.model.weights import synthesize_weights

    rjobs.refit_pipeline(ctx(dump_dir=str(tmp_path / "dump")))
    cfg = load_config("tiny-llama")
    hf = tmp_path / "hf"
    hf.mkdir()
    save_file({k: v.contiguous() for k, v in synthesize_weights(cfg, 0).items()}, str(hf / "model.safetensors"))
    a, b = tmp_path / "dump" / "before", tmp_path / "dump" / "after"
    rc, out = _quiet("diff", str(a), str(b), "--source", str(hf), "--out", str(tmp_path / "r"), "-q", "--no-plots")
    assert rc == 0 and "ZERO DRIFT" in out, out
    job = json.loads((tmp_path / "r" / "report.json").read_text())["jobs"][0]
    fused = [r for r in job["tables"]["tensors"] if "qkv_proj" in r["tensor"] or "gate_up_proj" in r["tensor"]]
    assert fused and all(r.get("sqnr_db_a") is not None for r in fused), fused[0]
