"""Peers in one run on one card (issue 15): every quantizer a refit could use, the fused verifier,
the digest kernel, each as ms and as a fraction of copy bandwidth.

Quantizers run over the Llama-3.1-8B linear set (7 linears a layer, `layers` distinct layers
rotated so L2 holds none of them); the verifier and the digest over the whole model.
"""

from __future__ import annotations

import time

import torch

from refit_verify.bench.quant import layer_bytes, make_layers
from refit_verify.bench.timing import time_cuda
from refit_verify.fp8.quantize import quantize

# (label, recipe, kind): kind picks how it runs; labels are what bench.md shows
QUANT_PEERS = [
    ("refit PR torch quantizer, eager", "nemo_rl_nan_to_num", "reference"),
    ("refit PR torch quantizer, torch.compile", "nemo_rl_nan_to_num", "compile"),
    ("vLLM per_block_cast_to_fp8 (op-for-op), torch.compile", "vllm_per_block", "compile"),
    ("reference quantize, eager", "vllm_per_block", "reference"),
    ("reference quantize, eager", "nemo_rl", "reference"),
    ("torch plain cast w.to(float8_e4m3fn), no scales", "-", "cast"),
    ("per-tensor Triton, eager (one launch a tensor)", "vllm_per_block", "triton"),
    ("per-tensor Triton, eager (one launch a tensor)", "nemo_rl", "triton"),
    ("grouped Triton, eager (one launch)", "vllm_per_block", "grouped"),
    ("grouped Triton, CUDA graph", "vllm_per_block", "grouped_graph"),
    ("grouped Triton, eager (one launch)", "nemo_rl", "grouped"),
    ("grouped Triton, CUDA graph", "nemo_rl", "grouped_graph"),
    ("grouped Triton, eager (one launch)", "nemo_rl_nan_to_num", "grouped"),
]


def _graph(fn):
    fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return g.replay


def _runner(kind: str, recipe: str, flat: list):
    if kind == "reference":
        return lambda: [quantize(w, recipe) for w in flat]
    if kind == "compile":
        f = torch.compile(lambda w: quantize(w, recipe), dynamic=False)
        return lambda: [f(w) for w in flat]
    if kind == "cast":
        return lambda: [w.to(torch.float8_e4m3fn) for w in flat]
    if kind == "triton":
        from refit_verify.fp8.kernels import quantize_triton

        return lambda: [quantize_triton(w, recipe) for w in flat]
    from refit_verify.fp8.kernels.grouped import GroupedQuantizer

    gq = GroupedQuantizer(flat, recipe)
    return gq.launch_only if kind == "grouped" else _graph(gq.launch_only)


def bench_quant_peers(copy_gbps: float, layers: int = 4, reps: int = 20, compile_budget_s: float = 150.0,
                      log=print) -> list:
    from refit_verify.model import load_config

    ls = make_layers(load_config("llama-3.1-8b"), layers)
    flat = [w for layer in ls for w in layer]
    nbytes = layer_bytes([(None, tuple(w.shape)) for w in ls[0]])
    rows, t_start = [], time.time()
    for label, recipe, kind in QUANT_PEERS:
        row = {"impl": label, "recipe": recipe, "kind": kind}
        if kind == "compile" and time.time() - t_start > compile_budget_s:
            rows.append({**row, "skipped": "compile budget spent"})
            continue
        try:
            fn = _runner(kind, recipe, flat)
            t0 = time.time()
            fn()
            torch.cuda.synchronize()
            row["first_call_s"] = time.time() - t0
            slow = kind in ("reference", "compile")
            t = time_cuda(fn, reps=max(3, reps // 4) if slow else reps, warmup=1 if slow else 3)
        except Exception as exc:  # a failing peer is a result, not a crash of the bench
            rows.append({**row, "error": f"{type(exc).__name__}: {exc}"[:300]})
            log(f"  {label} [{recipe}] ERROR {exc!r}"[:200])
            continue
        ms = t["median_ms"] / layers
        gbps = nbytes / (ms * 1e-3) / 1e9
        rows.append({**row, "ms_per_layer": ms, "gbps": gbps, "frac_copy": gbps / copy_gbps,
                     "ms_model_32_layers": 32 * ms, "spread_ms": [t["min_ms"] / layers, t["max_ms"] / layers],
                     "reps": t["reps"]})
        log(f"  {label:55s} {recipe:20s} {ms:8.4f} ms/layer {100 * gbps / copy_gbps:5.1f}% of copy", flush=True)
    del ls, flat
    torch.cuda.empty_cache()
    return rows


def bench_fused_verify(copy_gbps: float | None = None, model: str = "llama-3.1-8b", reps: int = 7, log=print) -> list:
    """Whole-model verify_stream with both sides Triton (the fused kernels), weights resident, with
    and without magnitudes; also the kernels alone (screen, compare) over all FP8 linears."""
    from refit_verify.compare.stream import default_is_fp8, iter_device_weights, make_quantizer, verify_stream
    from refit_verify.fp8.kernels.fused_verify import FusedLaunch
    from refit_verify.model import load_config

    items = list(iter_device_weights(load_config(model), 0, "cuda"))
    lin = [w for n, w in items if default_is_fp8(n, tuple(w.shape))]
    read = sum(w.numel() * w.element_size() for w in lin)
    torch.cuda.synchronize()
    rows = []
    for ra, rb in (("nemo_rl", "nemo_rl"), ("nemo_rl", "vllm_per_block"), ("vllm_per_block", "vllm_per_block")):
        for metrics in (True, False):
            qa, qb = make_quantizer(ra, "triton"), make_quantizer(rb, "triton")
            verify_stream(items, qa, qb, metrics=metrics)
            runs = [verify_stream(items, qa, qb, metrics=metrics) for _ in range(reps)]
            secs = sorted(r.seconds for r in runs)
            r = runs[-1]
            launch = FusedLaunch(lin, ra, rb, metrics).run()
            k_ms = time_cuda(launch.run, reps=reps, warmup=1)["median_ms"]
            row = {"model": model, "pair": f"{ra} vs {rb}", "metrics": metrics, "ms_median": 1e3 * secs[len(secs) // 2],
                   "ms_all": [1e3 * x for x in secs], "kernels_ms": k_ms, "n_fp8": r.n_fp8, "n_equal": r.n_equal,
                   "n_code_mismatch": r.n_code_mismatch, "n_scale_mismatch": r.n_scale_mismatch,
                   "blocks_compared": int(launch.fast_list.numel() + launch.full_list.numel()), "blocks": launch.nblk,
                   "peak_extra_bytes": r.peak_extra_bytes, "largest_tensor_bytes": r.largest_fp8_tensor_bytes,
                   "read_bytes": read}
            if copy_gbps:
                row["frac_copy"] = read / (row["ms_median"] * 1e6) / copy_gbps
                row["kernels_frac_copy"] = read / (k_ms * 1e6) / copy_gbps
            del launch
            rows.append(row)
            log(f"  fused verify {model} {ra} vs {rb} metrics={metrics}: {row['ms_median']:.2f} ms (kernels "
                f"{k_ms:.2f}), equal {r.n_equal}/{r.n_fp8}, peak extra {r.peak_extra_bytes / 2**20:.1f} MiB", flush=True)
    del items, lin
    torch.cuda.empty_cache()
    return rows


def bench_digest(copy_gbps: float, model: str = "llama-3.1-8b", reps: int = 10, log=print) -> dict:
    """Digest of every FP8 linear of the model (codes + fp32 scales), GPU kernel; checked against
    the CPU definition on one tensor."""
    from refit_verify.compare.stream import default_is_fp8
    from refit_verify.live.digest import block_digests
    from refit_verify.live.digest_triton import block_digests_many, block_digests_triton
    from refit_verify.model import load_config

    shapes = [s for n, s in load_config(model).hf_shapes().items() if default_is_fp8(n, s)]
    g = torch.Generator(device="cuda").manual_seed(1)
    data = [torch.randint(0, 256, s, device="cuda", dtype=torch.uint8, generator=g).view(torch.float8_e4m3fn)
            for s in shapes]
    scales = [torch.rand(((s[0] + 127) // 128, (s[1] + 127) // 128), device="cuda", generator=g) for s in shapes]
    nbytes = sum(d.numel() for d in data) + sum(s.numel() * 4 for s in scales)
    pairs = list(zip(data, scales))
    t = time_cuda(lambda: block_digests_many(pairs), reps=reps, warmup=2)
    t1 = time_cuda(lambda: [block_digests_triton(d, s) for d, s in pairs], reps=reps, warmup=2)
    k = max(range(len(data)), key=lambda i: data[i].numel())
    eq = torch.equal(block_digests_many(pairs)[k].cpu(), block_digests(data[k].cpu(), scales[k].cpu()))
    ms = t["median_ms"]
    row = {"model": model, "n_tensors": len(data), "bytes": nbytes, "ms": ms, "gbps_read": nbytes / ms / 1e6,
           "frac_copy": nbytes / ms / 1e6 / copy_gbps, "equals_cpu_definition": eq,
           "checked_tensor_shape": tuple(data[k].shape),
           "one_launch_per_tensor_ms": t1["median_ms"]}
    log(f"  digest kernel {model}: {len(data)} tensors, {nbytes / 1e9:.2f} GB, {ms:.2f} ms "
        f"({row['gbps_read']:.0f} GB/s read; one launch a tensor {t1['median_ms']:.2f} ms), equals CPU definition: {eq}",
        flush=True)
    return row
