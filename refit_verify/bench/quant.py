"""Quantizer throughput on the Llama-3.1-8B linear set (7 linears a layer), per recipe and impl."""

from __future__ import annotations

import math
import time

import torch

from refit_verify.fp8.quantize import quantize
from refit_verify.bench.timing import time_cuda
from refit_verify.compare.stream import synth_device_tensor

LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def layer_shapes(cfg) -> list:
    shapes = cfg.hf_shapes()
    return [(n, s) for n, s in shapes.items() if n.startswith("model.layers.0.") and len(s) == 2
            and any(k in n for k in LINEARS)]


def layer_bytes(shapes) -> int:
    """Fewest bytes a quantizer must move: read bf16, write fp8 and one fp32 per 128x128 block."""
    return sum(3 * m * n + 4 * math.ceil(m / 128) * math.ceil(n / 128) for _, (m, n) in shapes)


def make_layers(cfg, n_layers: int, device="cuda", seed: int = 0) -> list:
    """n_layers distinct copies of the linear set: rotating through them keeps L2 out of the timing."""
    shapes = layer_shapes(cfg)
    return [[synth_device_tensor(f"model.layers.{i}." + n.split(".", 3)[3], s, seed, device) for n, s in shapes]
            for i in range(n_layers)]


def _impl_fn(impl: str, recipe: str, compile_cache: dict, **kw):
    if impl == "reference":
        return lambda w: quantize(w, recipe)
    if impl == "compile":
        key = recipe
        if key not in compile_cache:
            compile_cache[key] = torch.compile(lambda w: quantize(w, recipe), dynamic=False)
        return compile_cache[key]
    if impl.startswith("triton"):
        from refit_verify.fp8.kernels import quantize_triton

        return lambda w: quantize_triton(w, recipe, **kw)
    raise ValueError(impl)


def bench_quantizers(layers, copy_gbps: float, recipes, impls, reps: int = 10,
                     compile_budget_s: float = 120.0, compile_recipes=None, log=print) -> list:
    """Rows of {recipe, impl, ms_per_layer, gbps, frac_copy}."""
    shapes = [(None, tuple(w.shape)) for w in layers[0]]
    nbytes = layer_bytes(shapes)
    rows, cache = [], {}
    t_start = time.time()
    for impl_name, kw in impls:
        for recipe in recipes:
            if impl_name == "compile" and compile_recipes is not None and recipe not in compile_recipes:
                continue
            if impl_name == "compile" and time.time() - t_start > compile_budget_s:
                rows.append({"recipe": recipe, "impl": impl_name, "skipped": "compile budget spent"})
                continue
            try:
                fn = _impl_fn(impl_name, recipe, cache, **kw)
                t0 = time.time()
                for w in layers[0]:  # compile / autotune outside the timing
                    fn(w)
                torch.cuda.synchronize()
                warm_s = time.time() - t0

                def run_all():
                    for layer in layers:
                        for w in layer:
                            fn(w)

                t = time_cuda(run_all, reps=reps, warmup=1)
            except Exception as exc:  # a failing impl is a result, not a crash of the bench
                rows.append({"recipe": recipe, "impl": impl_name, "error": f"{type(exc).__name__}: {exc}"[:300]})
                log(f"  {impl_name:>14} {recipe:22s} ERROR {exc!r}"[:200])
                continue
            ms = t["median_ms"] / len(layers)
            gbps = nbytes / (ms * 1e-3) / 1e9
            row = {"recipe": recipe, "impl": impl_name, "ms_per_layer": ms, "gbps": gbps,
                   "frac_copy": gbps / copy_gbps, "ms_model_32_layers": 32 * ms, "first_call_s": warm_s,
                   "spread_ms": [t["min_ms"] / len(layers), t["max_ms"] / len(layers)], "reps": reps}
            rows.append(row)
            log(f"  {impl_name:>24} {recipe:22s} {ms:8.3f} ms/layer {gbps:8.1f} GB/s {100 * gbps / copy_gbps:5.1f}%")
    return rows


def bench_triton_graph(layers, copy_gbps: float, recipe: str, reps: int = 20, **kw) -> dict:
    """Triton over all layers replayed from a CUDA graph: no host launch gaps in the timing."""
    from refit_verify.fp8.kernels import quantize_triton

    outs = [[(torch.empty(w.shape, dtype=torch.float8_e4m3fn, device=w.device),
              torch.empty(math.ceil(w.shape[0] / 128), math.ceil(w.shape[1] / 128), device=w.device))
             for w in layer] for layer in layers]

    def run_all():
        for layer, out in zip(layers, outs):
            for w, o in zip(layer, out):
                quantize_triton(w, recipe, out=o, **kw)

    run_all()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        run_all()
    t = time_cuda(g.replay, reps=reps, warmup=2)
    nbytes = layer_bytes([(None, tuple(w.shape)) for w in layers[0]])
    ms = t["median_ms"] / len(layers)
    gbps = nbytes / (ms * 1e-3) / 1e9
    return {"recipe": recipe, "impl": "triton+graph", "launch": kw, "ms_per_layer": ms, "gbps": gbps,
            "frac_copy": gbps / copy_gbps, "ms_model_32_layers": 32 * ms, "reps": reps}
