"""What a new user reads and keeps: the run headline, reports/latest, files others can open."""

from __future__ import annotations

import os
import stat

import torch

from refit_verify.cli import _counts_phrase, main
from refit_verify.jobs import JobResult, register_job


@register_job("test_words_noop", suites=())  # suites=(): only runs when named with --job
def _noop(ctx):
    return JobResult("test_words_noop", reason="nothing to do")


@register_job("test_words_fails", suites=())
def _fails(ctx):
    res = JobResult("test_words_fails")
    for i in range(5):
        res.fail(f"tp{i % 2}.ep0.pp0/before/scale_misplaced", f"rows (96, 127) of shard {i} read another block's scale")
    return res


def test_failed_run_names_what_failed_under_the_headline(tmp_path, capsys):
    """A FAIL headline alone says nothing: the failed job and its first failures follow it."""
    assert main(["run", "--job", "test_words_fails", "--job", "test_words_noop", "-q", "--no-plots",
                 "--out", str(tmp_path / "r")]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6, lines
    assert lines[0].startswith("FAIL: 2 jobs: 1 passed, 1 failed — report ")
    assert lines[1] == "  test_words_fails: fail (5 failure(s))"
    assert lines[2] == "    tp0.ep0.pp0/before/scale_misplaced: rows (96, 127) of shard 0 read another block's scale"
    assert lines[-1] == "    ... 2 more in the report", lines


@register_job("test_words_gate_breaker", suites=())
def _gate_breaker(ctx):
    res = JobResult("test_words_gate_breaker")
    res.figure("gen_kl_error", 0.0117, "bf16 vs fp8_before")  # the job passes; the default policy's max is 0.003
    return res


def test_passing_run_says_when_the_gate_would_fail(tmp_path, capsys):
    out = str(tmp_path / "r")
    assert main(["run", "--job", "test_words_gate_breaker", "-q", "--no-plots", "--out", out]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[0].startswith("PASS: 1 job: 1 passed"), lines
    assert lines[1] == f"  but `refit-verify gate {out}` fails: 1 figure(s) break the default policy"
    assert "gen_kl_error bf16 vs fp8_before: 0.0117 > max 0.003" in lines[2], lines
    assert main(["gate", out]) == 1


def test_headline_counts_jobs_not_verdict_words():
    assert _counts_phrase({"pass": 5, "fail": 0}) == "5 jobs: 5 passed"
    assert _counts_phrase({"pass": 4, "fail": 1, "error": 0}) == "5 jobs: 4 passed, 1 failed"
    assert _counts_phrase({"pass": 0}) == "no jobs ran"


def test_adhoc_job_run_does_not_take_reports_latest(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "full-run").mkdir()
    os.symlink("full-run", tmp_path / "reports" / "latest")
    assert main(["run", "--job", "test_words_noop", "-q", "--no-plots"]) == 0
    assert os.readlink(tmp_path / "reports" / "latest") == "full-run"
    assert (tmp_path / "reports" / "latest-job" / "report.json").exists()
    out = capsys.readouterr().out
    assert out.startswith("PASS: 1 job: 1 passed — report ")


def test_dumps_are_readable_by_others(tmp_path):
    from refit_verify.files import save_safetensors

    old = os.umask(0o022)
    try:
        path = save_safetensors({"w": torch.zeros(2)}, tmp_path / "dump.safetensors")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_presets_never_share_a_description():
    from refit_verify.cli import preset_lines
    from refit_verify.fp8 import PRESETS

    descriptions = [line[32:].strip() for line in preset_lines(PRESETS)]
    assert len(set(descriptions)) == len(descriptions), descriptions


def test_failure_line_names_the_tensor_once_and_keeps_the_detail():
    from refit_verify.cli import failure_line

    name = "model.layers.0.mlp.down_proj.weight"
    detail = "block (0, 1) element (3, 130): " + "x" * 300
    line = failure_line(name, f"{name}: {detail}")
    assert line.count(name) == 1 and line.endswith("x" * 300)


def test_progress_step_before_any_job_has_no_empty_prefix():
    import io

    from refit_verify.report.progress import Progress

    buf = io.StringIO()
    p = Progress(stream=buf)
    p.step("loading model")
    p.done("refit_pipeline", "pass", 0.0004)
    lines = buf.getvalue().splitlines()
    assert lines[0] == "loading model"
    assert lines[1] == "refit_pipeline: pass (<1 ms)"


def test_python_api_failures_carry_a_reproduce_command():
    from refit_verify.check import check_quantizer
    from refit_verify.fp8 import quantize

    def off_by_one(w):  # a wrong quantizer defined in a test: no import path, so the Python form
        q = quantize(w, "vllm_per_block")
        return q.data.view("uint8").add(1).view(q.data.dtype), q.scale_inv

    fails = check_quantizer(off_by_one, "vllm_per_block", seed=3).failures()
    assert fails and all(f.repro for f in fails)
    assert f"default_cases(3) if c.name == '{fails[0].case}'" in fails[0].repro
    named = check_quantizer(_plain_vllm, "nemo_rl").failures()  # importable by name: the CLI form
    assert named and named[0].repro.startswith("refit-verify check --quantizer ") and "--case " in named[0].repro


def test_check_names_each_case_once_and_prints_every_detail():
    """`check` output and the Python API: 'case: reason' with the case once, long reasons never cut."""
    import io

    from refit_verify.check import CaseResult, CheckResult, check_quantizer, print_check_result

    fails = check_quantizer(_plain_vllm, "nemo_rl").failures()
    assert fails and not any(f.reason.startswith(f"{f.case}:") for f in fails), fails[0].reason
    long = "first code mismatch in block (0, 0); " + "y" * 300
    cases = [CaseResult(case=n, seed=1, verdict="fail", reason=long) for n in ("case_a", "case_b")]
    buf = io.StringIO()
    assert print_check_result(CheckResult(reference="vllm_per_block", cases=cases), out=buf) == 1
    text = buf.getvalue()
    assert "case_b: first code mismatch" in text and text.count("y" * 300) == 2, text


def _plain_vllm(w):
    from refit_verify.fp8 import quantize

    q = quantize(w, "vllm_per_block")
    return q.data, q.scale_inv


def test_every_job_option_is_a_known_set_key():
    """`--set` refuses unknown keys; a job reading an option the list lacks would be unreachable."""
    import re
    from pathlib import Path

    import refit_verify.jobs as jobs
    from refit_verify.runguard import SET_KEYS

    read = set()
    for f in Path(jobs.__file__).parent.glob("*.py"):
        read |= set(re.findall(r'(?:ctx\.options|opts)\.get\("([a-z_0-9]+)"', f.read_text()))
    assert "patched_loader" in read  # read as opts.get(...) by vllm_refit: the pattern must see both forms
    assert read and read <= set(SET_KEYS), sorted(read - set(SET_KEYS))


def test_output_into_a_closed_pipe_is_no_traceback(tmp_path, monkeypatch):
    """`refit-verify presets | head -1`: the reader leaves early; exit 141 quietly, no BrokenPipeError."""
    import sys

    import pytest

    sink = open(tmp_path / "stdout", "w")

    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

        def fileno(self):
            return sink.fileno()

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    try:
        rc = main(["presets"])
    except BrokenPipeError:
        pytest.fail("BrokenPipeError escaped main(): a traceback for `refit-verify presets | head`")
    finally:
        sink.close()
    assert rc == 141


def test_digest_diff_takes_reports_latest_diff(tmp_path, monkeypatch, capsys):
    """`diff e.json g.json` without --out links its report as reports/latest-diff, as a state-dict diff does."""
    from safetensors.torch import save_file

    from refit_verify.model import load_config, synthesize_weights

    monkeypatch.chdir(tmp_path)
    (tmp_path / "reports").mkdir()
    w = synthesize_weights(load_config("tiny-llama", layers=1), 0)
    save_file({k: v.contiguous() for k, v in w.items()}, str(tmp_path / "model.safetensors"))
    assert main(["expect", "model.safetensors", "--out", "e.json"]) == 0
    assert main(["diff", "e.json", "e.json"]) == 0
    out = capsys.readouterr().out
    link = tmp_path / "reports" / "latest-diff"
    assert link.is_symlink() and f"reports/{os.readlink(link)}/report.md" in out, out
