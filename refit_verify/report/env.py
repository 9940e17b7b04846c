"""Environment recorded in every report: what decides bytes (torch version, cast semantics, device)."""

from __future__ import annotations

import platform
import sys


def _version(dist: str):
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version(dist)
    except PackageNotFoundError:
        return None


def _git_commit():
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def collect(device: str = "cpu") -> dict:
    import torch

    from refit_verify import __version__
    from refit_verify.fp8.format import probe_cast_semantics

    cuda = torch.cuda.is_available()
    env = {
        "refit_verify": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "vllm": _version("vllm"),  # None when absent: the report says so instead of failing
        "deep_gemm": _version("deep_gemm") or _version("deep-gemm"),
        "cuda_available": cuda,
        "torch_cuda": torch.version.cuda,
        "device": device,
        "device_name": torch.cuda.get_device_name(0) if (cuda and device == "cuda") else platform.processor() or "cpu",
        "git_commit": _git_commit(),
        "cast_semantics": {"cpu": probe_cast_semantics("cpu")},
        "executable": sys.executable,
    }
    if cuda:
        env["cast_semantics"]["cuda"] = probe_cast_semantics("cuda")
    return env
