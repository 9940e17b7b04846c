"""The packed transport over torch.distributed broadcast, between processes the harness starts itself.

Rank 0 plays the trainer and broadcasts each bucket; every other rank plays an engine worker and
splits what arrives using its own plan from the metadata. Loopback only (127.0.0.1, a free port
chosen here), gloo on CPU or NCCL on GPU, every wait bounded. Each bucket is preceded by its byte
count so a producer/consumer disagreement is reported instead of hanging on a short broadcast.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import torch

from refit_verify.errors import TransportError
from refit_verify.refit.transport import (
    DEFAULT_ALIGNMENT, DEFAULT_BUCKET_BYTES, TransferStats, pack_stream, plan_buckets, unpack_bucket,
)

LOOPBACK = "127.0.0.1"


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def loopback_env():
    # Keep gloo/NCCL off every non-loopback interface, whatever the hostname resolves to.
    keys = ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")
    saved = {k: os.environ.get(k) for k in keys}
    if Path("/sys/class/net/lo").exists():
        for k in keys:
            os.environ[k] = "lo"
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def join_loopback_group(backend: str, port: int, rank: int, world: int, timeout_s: float) -> None:
    """init_process_group over the loopback rendezvous, every wait bounded by timeout_s."""
    import torch.distributed as dist

    with loopback_env():
        dist.init_process_group(backend, init_method=f"tcp://{LOOPBACK}:{port}", rank=rank, world_size=world,
                                timeout=timedelta(seconds=timeout_s))


def broadcast_bucket(rank: int, buffer, device) -> torch.Tensor:
    """One packed bucket from rank 0 to every rank, preceded by its byte count (so a producer/consumer
    disagreement is reported instead of hanging on a short broadcast); the bucket as it arrived here."""
    import torch.distributed as dist

    header = torch.zeros(1, dtype=torch.int64, device=device)
    if rank == 0:
        buf = buffer.to(device)
        header[0] = buf.numel()
    dist.broadcast(header, src=0)
    if rank != 0:
        buf = torch.empty(int(header[0]), dtype=torch.uint8, device=device)
    dist.broadcast(buf, src=0)
    return buf


def _run_rank(rank: int, world: int, port: int, backend: str, job: dict, timeout_s: float):
    """One rank of the broadcast; rank 0 sends `job["buffers"]`, the others return what they split."""
    import torch.distributed as dist

    device = torch.device(f"cuda:{rank}") if backend == "nccl" else torch.device("cpu")
    if backend == "nccl":
        torch.cuda.set_device(device)
    join_loopback_group(backend, port, rank, world, timeout_s)
    try:
        plan = plan_buckets(job["metadata"], job["bucket_bytes"], job["alignment"])
        received = []
        for index in range(job["n_buckets"]):
            buf = broadcast_bucket(rank, job["buffers"][index] if rank == 0 else None, device)
            if rank != 0:
                if index >= len(plan.buckets):
                    raise TransportError(f"bucket {index} arrived, the plan has {len(plan.buckets)}", bucket=index)
                received.append(unpack_bucket(plan.buckets[index], buf.cpu()))
        dist.barrier()
        return received
    finally:
        dist.destroy_process_group()


def _child(i: int, world: int, port: int, backend: str, workdir: str, timeout_s: float) -> None:
    job = torch.load(Path(workdir) / "job.pt", weights_only=False)
    received = _run_rank(i + 1, world, port, backend, job, timeout_s)
    torch.save(received, Path(workdir) / f"recv{i + 1}.pt")


def serve_with_spawned(child, child_args: tuple, nprocs: int, serve_rank0, timeout_s: float, who: str):
    """Spawn `nprocs` children `child(i, *child_args)`, run `serve_rank0()` here as rank 0, wait for the
    children within `timeout_s`; every failure (a child raised or died, a collective failed or timed out)
    is a TransportError, and no child outlives the call. Returns serve_rank0's result."""
    import torch.multiprocessing as mp

    ctx = mp.start_processes(child, args=child_args, nprocs=nprocs, join=False, start_method="spawn")
    try:
        result = serve_rank0()
        deadline = time.monotonic() + timeout_s
        while not ctx.join(timeout=1.0):
            if time.monotonic() > deadline:
                raise TransportError(f"{who} did not finish within {timeout_s:.0f} s")
        return result
    except (mp.ProcessRaisedException, mp.ProcessExitedException) as exc:
        raise TransportError(f"one of the {who} failed: {str(exc).strip().splitlines()[-1]}") from exc
    except RuntimeError as exc:  # rank 0's collective failed or timed out
        raise TransportError(f"broadcast failed: {exc}") from exc
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.terminate()
                p.join(5)


def broadcast_transfer(items, metadata: dict, bucket_bytes: int = DEFAULT_BUCKET_BYTES,
                       alignment: int = DEFAULT_ALIGNMENT, backend: str = "gloo", world_size: int = 2,
                       timeout_s: float = 60.0):
    """Send `items` from this process (rank 0) to spawned ranks 1..world-1.

    Returns (the batches rank 1 split from the buckets, one list of (name, tensor) per bucket; TransferStats). Packing and its typed errors (non-contiguous,
    oversized) happen here, before any process starts. Rank 0 is the calling process, so only the
    receivers pay the interpreter and torch start-up.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        raise TransportError("a default process group already exists in this process; run the broadcast "
                             "transport from a process without one")
    stats = TransferStats(f"torch.distributed/{backend}", bucket_bytes, alignment)
    buffers = []
    for _, buf in pack_stream(items, metadata, bucket_bytes, alignment, stats):
        buffers.append(buf)
        stats.n_buckets += 1
        stats.wire_bytes += buf.numel()
    job = {"metadata": metadata, "bucket_bytes": bucket_bytes, "alignment": alignment, "n_buckets": len(buffers)}
    with tempfile.TemporaryDirectory(prefix="refit-bcast-") as workdir:
        torch.save(job, Path(workdir) / "job.pt")
        port = free_loopback_port()
        serve_with_spawned(_child, (world_size, port, backend, workdir, timeout_s), world_size - 1,
                           lambda: _run_rank(0, world_size, port, backend, dict(job, buffers=buffers), timeout_s),
                           timeout_s, "receivers")
        received = torch.load(Path(workdir) / "recv1.pt", weights_only=False)
    return received, stats
