"""Refit over real NCCL between two GPUs: BF16 payload vs FP8-before payload, in one run.

Two processes (spawned here, loopback rendezvous), rank 0 = trainer, rank 1 = engine. Tensors
are packed as flat uint8 into buckets of min(2% of GPU memory, 5 GiB) and broadcast from rank 0
(NeMo-RL's packed transport, FACTS.md §5). Paths, each timed from a common barrier until the
engine has every tensor in its final dtype:

- bf16:        BF16 payload, the engine keeps BF16 (transport alone)
- fp8_after:   BF16 payload, the engine quantizes each FP8 weight on arrival (loader recipe)
- fp8_before:  the trainer quantizes (trainer recipe) before packing; FP8 + scale_inv payload

The last repetition's engine-side FP8 bytes of fp8_after and fp8_before are compared bitwise.
"""

from __future__ import annotations

import json
import math
import os
import socket
import statistics
import time

import torch

NCCL_SAFE_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


def _plan(meta, bucket_bytes):
    """Split [(name, nbytes)] into buckets [[(name, offset, nbytes)]]; same on both ranks."""
    buckets, cur, off = [], [], 0
    for name, nb in meta:
        if nb > bucket_bytes:
            raise ValueError(f"{name}: {nb} bytes exceeds the bucket ({bucket_bytes})")
        if off + nb > bucket_bytes:
            buckets.append(cur)
            cur, off = [], 0
        cur.append((name, off, nb))
        off += nb
    if cur:
        buckets.append(cur)
    return buckets


def _payload_meta(shapes, fp8_names, mode):
    """[(name, nbytes)] of what travels: FP8 data + '_scale_inv' for fp8_before, else BF16."""
    meta = []
    for name, shape in shapes.items():
        numel = math.prod(shape)
        if mode == "fp8_before" and name in fp8_names:
            m, n = shape
            meta.append((name, numel))
            meta.append((name + "_scale_inv", 4 * math.ceil(m / 128) * math.ceil(n / 128)))
        else:
            meta.append((name, 2 * numel))
    return meta


def _worker(rank, world, port, cfg_name, layers, recipe_trainer, recipe_loader, impl, reps, result_path):
    for k, v in NCCL_SAFE_ENV.items():
        os.environ[k] = v
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import torch.distributed as dist

    from refit_verify.fp8.kernels import quantize_triton
    from refit_verify.fp8.quantize import quantize
    from refit_verify.model import load_config
    from refit_verify.compare.stream import default_is_fp8, synth_device_tensor

    torch.cuda.set_device(rank)
    dev = torch.device("cuda", rank)
    dist.init_process_group("nccl", rank=rank, world_size=world, device_id=dev)
    cfg = load_config(cfg_name, layers=layers)
    shapes = cfg.hf_shapes()
    fp8_names = {n for n, s in shapes.items() if default_is_fp8(n, s)}
    qfn = quantize_triton if impl == "triton" else quantize
    bucket_bytes = min(int(0.02 * torch.cuda.get_device_properties(dev).total_memory), 5 << 30)
    bucket_bytes = max(bucket_bytes, max(2 * math.prod(s) for s in shapes.values()))
    bufs = [torch.empty(bucket_bytes, dtype=torch.uint8, device=dev) for _ in range(2)]
    weights = {n: synth_device_tensor(n, s, 0, dev) for n, s in shapes.items()} if rank == 0 else None
    # engine-side destinations, allocated once like a resident model
    dest = {}
    if rank == 1:
        for n, s in shapes.items():
            dest[n] = torch.empty(s, dtype=torch.bfloat16, device=dev)
    fp8_dest = {}

    def run(mode):
        meta = _payload_meta(shapes, fp8_names, mode)
        plan = _plan(meta, bucket_bytes)
        src = {}
        if rank == 0:
            # the trainer's exporter: FP8-before quantizes inside the timed region
            def tensor_for(name):
                if name in src:
                    return src.pop(name)
                if mode == "fp8_before" and name in fp8_names:
                    qt = qfn(weights[name], recipe_trainer)
                    src[name + "_scale_inv"] = qt.scale_inv
                    return qt.data
                return weights[name]
        for i, bucket in enumerate(plan):
            buf = bufs[i % 2]
            if rank == 0:
                for name, off, nb in bucket:
                    t = tensor_for(name)
                    buf[off:off + nb].copy_(t.contiguous().view(torch.uint8).view(-1))
            used = bucket[-1][1] + bucket[-1][2]
            dist.broadcast(buf[:used], src=0)
            if rank == 1:
                for name, off, nb in bucket:
                    chunk = buf[off:off + nb]
                    if mode == "fp8_before":
                        if name.endswith("_scale_inv"):
                            base = name[: -len("_scale_inv")]
                            m, n = shapes[base]
                            fp8_dest[("before", base)] = (fp8_dest[("before", base)][0],
                                                          chunk.clone().view(torch.float32).view(math.ceil(m / 128), math.ceil(n / 128)))
                        elif name in fp8_names:
                            fp8_dest[("before", name)] = (chunk.clone().view(torch.float8_e4m3fn).view(shapes[name]), None)
                        else:
                            dest[name].view(torch.uint8).view(-1).copy_(chunk)
                    else:
                        dest[name].view(torch.uint8).view(-1).copy_(chunk)
                        if mode == "fp8_after" and name in fp8_names:
                            qt = qfn(dest[name], recipe_loader)
                            fp8_dest[("after", name)] = (qt.data, qt.scale_inv)
        torch.cuda.synchronize(dev)

    timings = {}
    modes = ["bf16", "fp8_after", "fp8_before"]
    for mode in modes:  # warm-up: NCCL channels, Triton compile, allocator
        run(mode)
    for _ in range(reps):
        for mode in modes:  # interleaved so drift hits every path alike
            dist.barrier()
            torch.cuda.synchronize(dev)
            t0 = time.perf_counter()
            run(mode)
            dist.barrier()
            torch.cuda.synchronize(dev)
            timings.setdefault(mode, []).append((time.perf_counter() - t0) * 1e3)
    equal, n_cmp, first_diff = True, 0, None
    if rank == 1:
        for name in sorted(fp8_names):
            a, b = fp8_dest[("after", name)], fp8_dest[("before", name)]
            same = torch.equal(a[0].view(torch.uint8), b[0].view(torch.uint8)) and torch.equal(
                a[1].view(torch.int32), b[1].view(torch.int32))
            n_cmp += 1
            if not same and first_diff is None:
                first_diff = name
            equal &= same
    flag = torch.tensor([int(equal), n_cmp], device=dev)
    dist.broadcast(flag, src=1)
    if rank == 0:
        payload = {m: sum(nb for _, nb in _payload_meta(shapes, fp8_names, m)) for m in modes}
        out = {"model": cfg_name, "layers": cfg.num_hidden_layers, "recipe_trainer": recipe_trainer,
               "recipe_loader": recipe_loader, "impl": impl, "reps": reps, "bucket_bytes": bucket_bytes,
               "payload_bytes": payload, "card": torch.cuda.get_device_name(dev),
               "ms": {m: statistics.median(v) for m, v in timings.items()},
               "ms_all": timings, "engine_fp8_equal": bool(flag[0]), "n_fp8_compared": int(flag[1])}
        out["ratio_fp8_before_over_bf16"] = out["ms"]["fp8_before"] / out["ms"]["bf16"]
        out["ratio_fp8_before_over_fp8_after"] = out["ms"]["fp8_before"] / out["ms"]["fp8_after"]
        out["transport_gbps_bf16"] = payload["bf16"] / (out["ms"]["bf16"] * 1e-3) / 1e9
        with open(result_path, "w") as f:
            json.dump(out, f, indent=1)
    if rank == 1 and first_diff:
        print(f"engine fp8 differs first at {first_diff}")
    dist.barrier()
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_nccl(cfg_name="llama-3.1-8b", layers=None, recipe_trainer="nemo_rl", recipe_loader="nemo_rl",
               impl="triton", reps=5, tmpdir="/tmp") -> dict:
    if torch.cuda.device_count() < 2:
        return {"skipped": f"needs 2 GPUs, found {torch.cuda.device_count()}"}
    import torch.multiprocessing as mp

    for k, v in NCCL_SAFE_ENV.items():
        os.environ[k] = v
    path = os.path.join(tmpdir, f"nccl_{os.getpid()}_{impl}.json")
    mp.spawn(_worker, args=(2, _free_port(), cfg_name, layers, recipe_trainer, recipe_loader, impl, reps, path),
             nprocs=2, join=True)
    with open(path) as f:
        return json.load(f)
