"""Environment recorded in every report: what decides bytes (torch version, cast semantics, device)."""

from __future__ import annotations

import platform
import sys
from pathlib import Path


def _version(dist: str):
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version(dist)
    except PackageNotFoundError:
        return None


def _git(folder: Path, *args: str):
    import subprocess

    try:
        out = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def project_git_commit(package_dir=None):
    """The commit of the checkout refit-verify runs from, or None.

    Asked of the folder that holds the package, not of the working directory (a user's own repository),
    and only when that folder is the top of a git checkout: an installed copy inside some other
    repository (a virtualenv in a project) has no commit of its own.
    """
    pkg = Path(package_dir) if package_dir else Path(__file__).resolve().parents[1]
    root = pkg.resolve().parent
    top = _git(root, "rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != root:
        return None
    return _git(root, "rev-parse", "HEAD")


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
        "git_commit": project_git_commit(),
        "cast_semantics": {"cpu": probe_cast_semantics("cpu")},
        "executable": sys.executable,
    }
    if cuda:
        env["cast_semantics"]["cuda"] = probe_cast_semantics("cuda")
    return env
