"""cuda_parity can fail: a preset measured bit-identical on CPU and CUDA that differs, or a preset that
raises on one device only, fails the job (the CUDA side is simulated here; the job needs CUDA)."""

from __future__ import annotations

import pytest
import torch

import refit_verify.fp8 as fp8
from refit_verify.jobs import JobContext
from refit_verify.jobs import builtin


def _simulated_device(flip: dict, raise_on: set):
    real = builtin._quantize_on

    def quantize_on(device, x, preset, name):
        if device == "cpu":
            return real("cpu", x, preset, name)
        if (preset, name) in raise_on:
            return "RuntimeError"
        out = real("cpu", x, preset, name)
        if (preset, name) in flip and not isinstance(out, str):
            codes = out[0].view(torch.uint8).clone()
            codes.view(-1)[flip[(preset, name)]] ^= 0x01
            out = (codes.view(torch.float8_e4m3fn), *out[1:])
        return out

    return quantize_on


@pytest.fixture
def two_presets(monkeypatch):
    monkeypatch.setattr(fp8, "WEIGHT_PRESETS", ["vllm_per_block", "nemo_rl"])


def test_identical_devices_pass(monkeypatch, two_presets):
    monkeypatch.setattr(builtin, "_quantize_on", _simulated_device({}, set()))
    res = builtin.cuda_parity(JobContext(suite="nightly"))
    assert res.verdict == "pass" and not res.failures, res.failures


def test_measured_parity_lost_fails_naming_preset_and_case(monkeypatch, two_presets):
    flip = {("nemo_rl", "randn_127x129"): 5, ("vllm_per_block", "randn_127x129"): 5}  # vllm: division fact
    monkeypatch.setattr(builtin, "_quantize_on", _simulated_device(flip, {("nemo_rl", "randn_1x1")}))
    res = builtin.cuda_parity(JobContext(suite="nightly"))
    assert res.verdict == "fail"
    assert sorted(f.case for f in res.failures) == ["nemo_rl/randn_127x129", "nemo_rl/randn_1x1"], res.failures
    assert "1 codes differ" in next(f.reason for f in res.failures if f.case == "nemo_rl/randn_127x129")
    rows = {r["recipe"]: r for r in res.tables["parity"]}
    assert rows["vllm_per_block"]["differing_cases"] == ["randn_127x129"]  # reported, not failed
