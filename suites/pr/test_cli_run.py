"""`run`: reports written after each job, errors contained, interrupted runs marked incomplete."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from refit_verify.cli import build_parser, main
from refit_verify.jobs import JobResult, register_job

ROOT = Path(__file__).resolve().parents[2]


@register_job("test_boom", suites=())  # suites=(): only runs when named with --job
def _boom(ctx):
    raise ValueError("job bug")


@register_job("test_interrupt", suites=())
def _interrupt(ctx):
    raise KeyboardInterrupt


@register_job("test_gpu_only", suites=(), needs=("cuda",))
def _gpu(ctx):
    return JobResult("test_gpu_only")


def load(out):
    return json.loads((Path(out) / "report.json").read_text())


def test_run_writes_complete_report_with_plots(tmp_path, monkeypatch):
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    out = tmp_path / "r"
    assert main(["run", "--config", "tiny-llama", "--job", "cast_semantics", "--job", "refit_pipeline", "--layers", "1", "--out", str(out), "-q"]) == 0
    rep = load(out)
    assert rep["schema"] == "refit-verify/report@1" and rep["status"] == "complete" and rep["verdict"] == "pass"
    env = rep["environment"]
    assert env["torch"] and "vllm" in env and env["cast_semantics"]["cpu"]["overflow"] in ("saturate", "nan")
    assert rep["seeds"] == {"base": 0} and "run --config tiny-llama --job cast_semantics" in rep["command"]
    drift = next(j for j in rep["jobs"] if j["name"] == "refit_pipeline")
    assert drift["metrics"]["fp8_tensors"] == 4 and len(drift["tables"]["tensors"]) == 4
    assert all(f["value"] == 0 for f in drift["figures"] if f["metric"].startswith("refit_"))
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3 and html.rstrip().endswith("</html>")
    assert "| refit_pipeline |" in (out / "report.md").read_text()
    assert "refit-verify run" in summary.read_text()
    assert main(["gate", str(out)]) == 0


def test_mismatching_trainer_recipe_fails_with_repro(tmp_path):
    out = tmp_path / "r"
    rc = main(["run", "--config", "tiny-llama", "--job", "refit_pipeline", "--set", "trainer_recipe=nemo_rl", "--set", "whatif=0", "--layers", "1", "--out", str(out), "-q", "--no-plots"])
    assert rc == 1
    job = load(out)["jobs"][0]
    assert job["verdict"] == "fail" and "mismatch in block" in job["failures"][0]["reason"]
    assert "--set trainer_recipe=nemo_rl" in job["failures"][0]["repro"]
    assert main(["gate", str(out)]) == 1


def test_job_exception_becomes_error_and_report_is_written(tmp_path):
    out = tmp_path / "r"
    assert main(["run", "--job", "test_boom", "--job", "cast_semantics", "--out", str(out), "-q", "--no-plots"]) == 1
    rep = load(out)
    assert rep["status"] == "complete"
    boom = rep["jobs"][0]
    assert boom["verdict"] == "error" and "ValueError: job bug" in boom["reason"] and "_boom" in boom["reason"]
    assert rep["jobs"][1]["verdict"] == "pass"
    assert (out / "report.html").exists()


def test_interrupt_leaves_incomplete_report(tmp_path):
    out = tmp_path / "r"
    rc = main(["run", "--job", "cast_semantics", "--job", "test_interrupt", "--job", "quantizer_matrix",
               "--out", str(out), "-q", "--no-plots"])
    assert rc == 130
    rep = load(out)
    assert rep["status"] == "incomplete" and "KeyboardInterrupt" in rep["interrupted"]
    assert [j["name"] for j in rep["jobs"]] == ["cast_semantics"]
    assert rep["not_run"] == ["test_interrupt", "quantizer_matrix"]
    assert "incomplete" in (out / "report.md").read_text().lower()


def test_gpu_job_skips_with_reason_on_cpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("has CUDA")
    out = tmp_path / "r"
    assert main(["run", "--job", "test_gpu_only", "--out", str(out), "-q", "--no-plots"]) == 0
    job = load(out)["jobs"][0]
    assert job["verdict"] == "skipped" and "CUDA" in job["reason"]


def test_sigterm_leaves_incomplete_report(tmp_path):
    mod = tmp_path / "slow_jobs.py"
    mod.write_text(textwrap.dedent('''
        import time
        from refit_verify.jobs import JobResult, register_job

        @register_job("fast", suites=("slowtest",))
        def fast(ctx):
            return JobResult("fast")

        @register_job("slow", suites=("slowtest",))
        def slow(ctx):
            time.sleep(60)
            return JobResult("slow")
    '''))
    out = tmp_path / "r"
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{tmp_path}", REFIT_VERIFY_JOB_MODULES="slow_jobs")
    proc = subprocess.Popen([sys.executable, "-m", "refit_verify", "run", "--job", "fast", "--job", "slow",
                             "--out", str(out), "-q", "--no-plots"], env=env, cwd=tmp_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if load(out)["jobs"]:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 143
    rep = load(out)
    assert rep["status"] == "incomplete" and "SIGTERM" in rep["interrupted"]
    assert [j["name"] for j in rep["jobs"]] == ["fast"] and rep["not_run"] == ["slow"]


def test_every_command_has_help(capsys):
    for cmd in ("run", "check", "diff", "gate"):
        with pytest.raises(SystemExit) as e:
            build_parser().parse_args([cmd, "--help"])
        assert e.value.code == 0
        assert "usage: refit-verify " + cmd in capsys.readouterr().out


@pytest.mark.parametrize("cmd,module", [("selftest", "refit_verify.selftest.run"), ("bench", "refit_verify.bench")])
def test_delegates_say_not_available(cmd, module, capsys):
    import importlib.util

    if importlib.util.find_spec(module) is not None:
        pytest.skip(f"{module} present in this build")
    assert main([cmd, "--help"]) == 2
    assert "not available in this build" in capsys.readouterr().err


def test_cli_startup_is_light():
    code = "import sys, refit_verify.cli; sys.exit(1 if 'torch' in sys.modules or 'matplotlib' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(ROOT))).returncode == 0


def _corrupt_model(tmp_path):
    d = tmp_path / "corrupt"
    d.mkdir()
    (d / "config.json").write_text('{"hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 1, '
                                   '"vocab_size": 32}')
    (d / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}")
    return d


@pytest.mark.parametrize("argv,names", [
    (["--layers", "0"], "--layers 0"),
    (["--layers", "-1"], "--layers -1"),
    (["--set", "trainer_recipie=nemo_rl"], "trainer_recipie"),
    (["--set", "trainer_recipe=no_such_recipe"], "no_such_recipe"),
    (["--set", "prompts=many"], "prompts=many"),
    (["--model", "{tmp}/nope"], "nope"),
    (["--model", "{tmp}/corrupt"], "model.safetensors"),
    (["--model", "{tmp}/broken.json"], "broken.json"),
    (["--config", "no-such-config"], "no-such-config"),
])
def test_bad_run_arguments_exit_2_at_once_naming_them(tmp_path, capsys, argv, names):
    _corrupt_model(tmp_path)
    (tmp_path / "broken.json").write_text('{"hidden_size": 64')
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    start = time.monotonic()
    assert main(["run", *argv, "--out", str(tmp_path / "r"), "-q", "--no-plots"]) == 2
    assert time.monotonic() - start < 20  # not the suite's minute on a model it cannot read
    err = capsys.readouterr().err
    assert names in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_bad_model_still_leaves_an_incomplete_report(tmp_path):
    out = tmp_path / "r"
    assert main(["run", "--model", str(_corrupt_model(tmp_path)), "--out", str(out), "-q", "--no-plots"]) == 2
    rep = load(out)
    assert rep["status"] == "incomplete" and "model.safetensors" in rep["interrupted"]
    assert not (out / ".refit-verify.lock").exists()


def test_out_pointing_at_a_file_and_a_held_out_lock_are_refused(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["run", "--job", "cast_semantics", "--out", str(f), "-q"]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err
    out = tmp_path / "r"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / ".refit-verify.lock").write_text(str(holder.pid))
        assert main(["run", "--job", "cast_semantics", "--out", str(out), "-q", "--no-plots"]) == 2
        assert f"another run (pid {holder.pid})" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    # its holder gone, the lock is stale: the next run takes it over, and releases it
    assert main(["run", "--job", "cast_semantics", "--out", str(out), "-q", "--no-plots"]) == 0
    assert not (out / ".refit-verify.lock").exists()


def test_sigterm_in_the_first_seconds_leaves_a_report_folder(tmp_path):
    out = tmp_path / "r"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "refit_verify", "run", "--job", "cast_semantics",
                             "--out", str(out), "-q", "--no-plots"], env=env, cwd=tmp_path)
    deadline = time.monotonic() + 30
    while not (out / "report.json").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 143
    rep = load(out)
    assert rep["status"] == "incomplete" and rep["interrupted"]
