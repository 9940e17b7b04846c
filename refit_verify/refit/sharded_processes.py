"""The sharded refit with one process per engine rank, as a colocated RL job runs it.

Process i is engine rank `layout.ranks()[i]`; process 0 is also the trainer: it exports (FP8-before or
FP8-after), packs the stream into buckets and broadcasts each one (gloo on CPU, NCCL with one GPU per
process). Every process unpacks every bucket and loads what its own rank owns into its RankStore, the
same per-rank store the in-process ShardedReferenceEngine holds. Each rank then reports a SHA-256 of
every parameter's bytes and its write ledger. `compare_with_reference` holds those digests against the
single-process simulation of the same layout: the multi-process run must hold the same bytes on every rank.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from refit_verify.errors import BadInputError, RefitVerifyError, TransportError
from refit_verify.fp8 import get_recipe
from refit_verify.layout import Layout, Rank
from refit_verify.refit.distributed import (
    broadcast_bucket, free_loopback_port, join_loopback_group, serve_with_spawned,
)
from refit_verify.refit.exporter import SCALE_SUFFIX
from refit_verify.refit.selection import explicit_selection
from refit_verify.refit.sharded_engine import RankStore, ShardedReferenceEngine
from refit_verify.refit.sharded_run import ShardedTrainerExporter, default_bucket, resolve_inputs
from refit_verify.refit.transport import DEFAULT_ALIGNMENT, pack_stream, plan_buckets, unpack_bucket


@dataclass
class RankDigests:
    rank: str  # Rank.label
    params: dict  # engine parameter name -> sha256 hex of its bytes
    ledger: list  # findings of the write ledger, as text
    seconds: float = 0.0


@dataclass
class ProcessRefit:
    path: str
    backend: str
    ranks: dict = field(default_factory=dict)  # label -> RankDigests
    wire_bytes: int = 0
    n_buckets: int = 0


def param_digest(t: torch.Tensor) -> str:
    """SHA-256 of the tensor's bytes (shape and dtype included, so a reshaped copy never matches)."""
    h = hashlib.sha256(f"{tuple(t.shape)}|{t.dtype}|".encode())
    h.update(t.detach().contiguous().cpu().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _device(backend: str, index: int) -> torch.device:
    if backend == "nccl":
        torch.cuda.set_device(index)
        return torch.device(f"cuda:{index}")
    return torch.device("cpu")


def _serve_rank(index: int, job: dict, buffers: Optional[list]) -> RankDigests:
    """One process: join the group, receive every bucket, load this rank's part, digest its parameters."""
    import torch.distributed as dist

    t0 = time.perf_counter()
    layout: Layout = job["layout"]
    rank: Rank = layout.ranks()[index]
    store = RankStore(job["cfg"], layout, rank)
    recipe, pre, notes = get_recipe(job["recipe"]), job["pre"], []
    device = _device(job["backend"], index)
    join_loopback_group(job["backend"], job["port"], index, layout.world_size, job["timeout_s"])
    try:
        plan = plan_buckets(job["metadata"], job["bucket_bytes"], DEFAULT_ALIGNMENT)
        for b in range(job["n_buckets"]):
            buf = broadcast_bucket(index, buffers[b] if index == 0 else None, device)
            for name, t in unpack_bucket(plan.buckets[b], buf.cpu()):
                base = name[: -len(SCALE_SUFFIX)] if name.endswith(SCALE_SUFFIX) else name
                if base in store.routes:  # every rank sees the whole stream and keeps its own part
                    notes += _load(store, name, t, pre, recipe)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    params = {n: param_digest(t) for n, t in sorted(store.parameters().items())}
    ledger = notes + [f"{f.hazard}: {f.tensor}: {f.message}" for f in store.ledger_findings(job["path"])]
    return RankDigests(rank.label, params, ledger, time.perf_counter() - t0)


def _load(store: RankStore, name: str, t: torch.Tensor, pre: bool, recipe) -> list[str]:
    """Load one tensor on this rank; what vLLM would raise becomes a note naming tensor and rank."""
    try:
        return [f"{hazard}: {tensor}: {msg}" for hazard, tensor, msg in store.load(name, t, pre, recipe)]
    except RefitVerifyError as exc:
        return [f"load_failed: {getattr(exc, 'tensor', None) or name}: {exc}"]


def _child(i: int, workdir: str) -> None:
    job = torch.load(Path(workdir) / "job.pt", weights_only=False)
    torch.save(_serve_rank(i + 1, job, None), Path(workdir) / f"rank{i + 1}.pt")


def _export(cfg, layout, weights, path: str, before, trainer_quant: str):
    """The trainer's stream for one path, with the engine's FP8 set as its selection."""
    fp8 = ShardedReferenceEngine(cfg, layout, recipe=before).fp8_hf_names()
    ex = ShardedTrainerExporter(weights, path, before, explicit_selection(fp8), cfg, layout, trainer_quant)
    return list(ex), ex.metadata()


def run_process_refit(config, layout: Layout, *, path: str = "before", weights=None, before="vllm_per_block",
                      seed: int = 0, layers: Optional[int] = None, backend: str = "gloo",
                      trainer_quant: str = "after_gather", timeout_s: float = 180.0) -> ProcessRefit:
    """One refit step of `path` over layout.world_size processes; this process is rank 0 (and the trainer)."""
    import torch.distributed as dist

    if backend == "nccl" and torch.cuda.device_count() < layout.world_size:
        raise BadInputError(f"NCCL needs one GPU per engine rank: layout tp={layout.tp} ep={layout.ep} pp={layout.pp} has "
                            f"{layout.world_size} ranks, this machine {torch.cuda.device_count()} GPUs")
    if dist.is_available() and dist.is_initialized():
        raise TransportError("a default process group already exists in this process")
    cfg, weights = resolve_inputs(config, weights, seed, layers)
    items, metadata = _export(cfg, layout, weights, path, before, trainer_quant)
    bucket_bytes = default_bucket(weights)
    buffers = [buf for _, buf in pack_stream(items, metadata, bucket_bytes, DEFAULT_ALIGNMENT, None)]
    job = {"cfg": cfg, "layout": layout, "recipe": get_recipe(before).name, "path": path, "backend": backend,
           "metadata": metadata, "bucket_bytes": bucket_bytes, "n_buckets": len(buffers), "timeout_s": timeout_s,
           "pre": any(n.endswith(SCALE_SUFFIX) for n in metadata), "port": free_loopback_port()}
    out = ProcessRefit(path, backend, wire_bytes=sum(b.numel() for b in buffers), n_buckets=len(buffers))
    with tempfile.TemporaryDirectory(prefix="refit-ranks-") as workdir:
        torch.save(job, Path(workdir) / "job.pt")
        mine = serve_with_spawned(_child, (workdir,), layout.world_size - 1, lambda: _serve_rank(0, job, buffers),
                                  timeout_s, "engine ranks")
        others = [torch.load(Path(workdir) / f"rank{i}.pt", weights_only=False) for i in range(1, layout.world_size)]
    out.ranks = {d.rank: d for d in [mine, *others]}
    return out


def reference_digests(config, layout: Layout, *, path: str = "before", weights=None, before="vllm_per_block",
                      seed: int = 0, layers: Optional[int] = None, trainer_quant: str = "after_gather") -> dict:
    """label -> {param: sha256} from the single-process ShardedReferenceEngine fed the same stream."""
    from refit_verify.refit.run import feed_engine

    cfg, weights = resolve_inputs(config, weights, seed, layers)
    items, metadata = _export(cfg, layout, weights, path, before, trainer_quant)
    engine = ShardedReferenceEngine(cfg, layout, recipe=before, path=path)
    engine.begin_refit(metadata)
    feed_engine(engine, items, metadata, "inprocess", default_bucket(weights), DEFAULT_ALIGNMENT)
    engine.finish_refit()
    state = engine.state()
    return {r.label: {n: param_digest(t) for n, t in sorted(state.params(r).items())} for r in layout.ranks()}


def compare_with_reference(run: ProcessRefit, reference: dict) -> list[str]:
    """Every difference, naming rank and parameter: missing, extra, or different bytes ([] = bitwise equal)."""
    out = []
    for label, expected in sorted(reference.items()):
        got = run.ranks.get(label)
        if got is None:
            out.append(f"rank {label}: no digests came back")
            continue
        for name in sorted(set(expected) | set(got.params)):
            if name not in got.params:
                out.append(f"rank {label}: {name}: missing in the process run")
            elif name not in expected:
                out.append(f"rank {label}: {name}: not held by the reference engine")
            elif got.params[name] != expected[name]:
                out.append(f"rank {label}: {name}: bytes differ from the single-process reference")
    return out
