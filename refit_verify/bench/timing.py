"""Device timing: warm-up, then device events around each repetition, median reported."""

from __future__ import annotations

import statistics

import torch


def time_cuda(fn, reps: int = 20, warmup: int = 3) -> dict:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times), "reps": reps}


def copy_bandwidth(device="cuda", nbytes: int = 2 << 30, reps: int = 30) -> dict:
    """Large device-to-device copy; bytes read + written, as FACTS.md §8 counts them."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device).random_(0, 255)
    dst = torch.empty_like(src)
    t = time_cuda(lambda: dst.copy_(src), reps=reps)
    del src, dst
    t["gbps"] = 2 * nbytes / (t["median_ms"] * 1e-3) / 1e9
    t["bytes"] = nbytes
    return t


def device_info(device="cuda") -> dict:
    import triton

    from refit_verify.fp8.format import probe_cast_semantics
    from refit_verify.fp8.kernels import device_semantics

    p = torch.cuda.get_device_properties(device)
    return {"clocks": _clocks(),
        "card": torch.cuda.get_device_name(device), "sms": p.multi_processor_count,
        "memory_gib": round(p.total_memory / 2**30, 1), "torch": torch.__version__,
        "cuda": torch.version.cuda, "triton": triton.__version__, "n_gpus": torch.cuda.device_count(),
        "cast": probe_cast_semantics(device), "kernel_device_facts": device_semantics(device),
    }


def _clocks() -> str:
    """SM and memory clocks and driver as nvidia-smi reports them (read only; never set)."""
    import subprocess

    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=clocks.sm,clocks.max.sm,clocks.mem,driver_version",
                               "--format=csv,noheader"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unavailable ({exc})"
