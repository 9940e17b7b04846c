"""Device script (issue 15, run c): grouped quantizer launch variants, fused verifier, digest kernel.

Prints markdown tables (median of device-event timings after warm-up) and writes JSON to $OUT.
"""

from __future__ import annotations

import json
import os
import sys
import time

import torch

from refit_verify.bench.timing import copy_bandwidth, time_cuda
from refit_verify.fp8.kernels import quantize_triton
from refit_verify.fp8.kernels.grouped import GroupedQuantizer
from refit_verify.fp8.quantize import quantize

LINEARS = [(4096, 4096), (1024, 4096), (1024, 4096), (4096, 4096), (14336, 4096), (14336, 4096), (4096, 14336)]
VARIANTS = [
    ("v1-like (no fast cast, fp32 amax) w4", {"fast_cast": False, "native_amax": False}),
    ("fast cast + bf16 amax w4", {}),
    ("fast cast + bf16 amax w8", {"num_warps": 8}),
    ("fast+bf16 w4 hints", {"hints": True}),
    ("fast+bf16 w4 persistent 4/SM", {"persistent": 4}),
    ("fast+bf16 w8 persistent 2/SM", {"num_warps": 8, "persistent": 2}),
    ("fast+bf16 w4 persistent 8/SM", {"persistent": 8}),
    ("fast+bf16 w2", {"num_warps": 2}),
]
OUT = os.environ.get("OUT", "reports/gpu15")
RES: dict = {}


def med(fn, reps=40, warm=5):
    return time_cuda(fn, reps=reps, warmup=warm)["median_ms"]


def graph_ms(fn):
    fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return med(g.replay)


def exact(out, ws, rec):
    bad = 0
    for i, w in enumerate(ws):
        ref = quantize(w, rec)
        bad += not (torch.equal(out[i].data.view(torch.uint8), ref.data.contiguous().view(torch.uint8))
                    and torch.equal(out[i].scale_inv.view(torch.int32), ref.scale_inv.contiguous().view(torch.int32)))
    return bad


def grouped(layers=4):
    from refit_verify.compare.stream import synth_device_tensor

    ws = [synth_device_tensor(f"model.layers.{i}.w{j}.weight", s, 0, "cuda") for i in range(layers)
          for j, s in enumerate(LINEARS)]
    nel = sum(w.numel() for w in ws)
    moved = nel * 3 + nel // 16384 * 4
    cp = copy_bandwidth()
    copy_ms = moved / (cp["gbps"] * 1e9) * 1e3
    RES["copy"] = cp
    print(f"card {torch.cuda.get_device_name()} torch {torch.__version__}; copy {cp['gbps']:.0f} GB/s; "
          f"floor {copy_ms / layers:.4f} ms/layer", flush=True)
    print("| what | recipe | eager ms/layer | % copy | graph ms/layer | % copy | exact |\n|---|---|---|---|---|---|---|")
    rows = []
    for rec in ("vllm_per_block", "nemo_rl"):
        for label, kw in VARIANTS:
            try:
                gq = GroupedQuantizer(ws, rec, **kw)
                bad = exact(gq(), ws, rec)
                e = med(gq.launch_only)
                g = graph_ms(gq.launch_only)
            except Exception as exc:  # a failing variant is a result
                print(f"| {label} | {rec} | ERROR {type(exc).__name__}: {str(exc)[:200]} |", flush=True)
                continue
            rows.append({"variant": label, "recipe": rec, "kw": kw, "eager_ms": e / layers, "graph_ms": g / layers,
                         "eager_frac": copy_ms / e, "graph_frac": copy_ms / g, "bad_tensors": bad})
            print(f"| {label} | {rec} | {e / layers:.4f} | {100 * copy_ms / e:.1f}% | {g / layers:.4f} | "
                  f"{100 * copy_ms / g:.1f}% | {bad == 0} |", flush=True)
            del gq
        t = med(lambda: [quantize_triton(w, rec) for w in ws], reps=20)
        print(f"| per-tensor triton eager | {rec} | {t / layers:.4f} | {100 * copy_ms / t:.1f}% | | | |", flush=True)
    t = med(lambda: [w.to(torch.float8_e4m3fn) for w in ws], reps=20)
    print(f"| plain cast | - | {t / layers:.4f} | {100 * copy_ms / t:.1f}% | | | |", flush=True)
    RES["grouped"] = rows


def verifier():
    from refit_verify.compare.stream import iter_device_weights, make_quantizer, verify_stream
    from refit_verify.fp8.kernels.fused_verify import fused_block_stats
    from refit_verify.model import load_config

    cfg = load_config("llama-3.1-8b")
    weights = dict(iter_device_weights(cfg, 0, "cuda"))
    torch.cuda.synchronize()
    items = list(weights.items())
    rows = []
    for ra, rb in (("nemo_rl", "nemo_rl"), ("nemo_rl", "vllm_per_block")):
        qa, qb = make_quantizer(ra, "triton"), make_quantizer(rb, "triton")
        verify_stream(items[:12], qa, qb)
        ts = []
        for _ in range(5):
            r = verify_stream(items, qa, qb)
            ts.append(r.seconds)
        ts.sort()
        row = {"pair": f"{ra} vs {rb}", "seconds_median": ts[2], "seconds_all": ts, "n_fp8": r.n_fp8,
               "n_equal": r.n_equal, "peak_extra_bytes": r.peak_extra_bytes,
               "largest_tensor_bytes": r.largest_tensor_bytes, "n_code_mismatch": r.n_code_mismatch,
               "n_scale_mismatch": r.n_scale_mismatch,
               "first": r.mismatched[0].to_dict() if r.mismatched else None}
        rows.append(row)
        print(f"fused verify_stream llama-3.1-8b {ra} vs {rb}: median {1e3 * ts[2]:.2f} ms (all {[round(1e3 * t, 2) for t in ts]}), "
              f"equal {r.n_equal}/{r.n_fp8}, codes differ {r.n_code_mismatch}, scales differ {r.n_scale_mismatch}, "
              f"peak extra {r.peak_extra_bytes / 2**20:.1f} MiB (largest tensor {r.largest_tensor_bytes / 2**20:.0f} MiB)",
              flush=True)
    # kernel alone, launch variants, linears only
    lin = [w for n, w in items if w.dim() == 2 and "layers" in n]
    nbytes = sum(w.numel() * 2 for w in lin)
    for nw, sub, metrics, pair in ((4, 32, True, ("nemo_rl", "vllm_per_block")), (8, 32, True, ("nemo_rl", "vllm_per_block")),
                                   (4, 16, True, ("nemo_rl", "vllm_per_block")), (8, 64, True, ("nemo_rl", "vllm_per_block")),
                                   (4, 32, False, ("nemo_rl", "vllm_per_block")), (4, 32, True, ("nemo_rl", "nemo_rl")),
                                   (2, 16, True, ("nemo_rl", "vllm_per_block")), (4, 64, True, ("nemo_rl", "vllm_per_block"))):
        try:
            t = med(lambda: fused_block_stats(lin, *pair, metrics, num_warps=nw, sub=sub), reps=10, warm=2)
        except Exception as exc:
            print(f"fused kernel w{nw} sub{sub} metrics={metrics}: ERROR {exc}"[:300], flush=True)
            continue
        print(f"fused kernel only (linears, {nbytes / 1e9:.1f} GB bf16) {pair} w{nw} sub{sub} metrics={metrics}: {t:.2f} ms "
              f"= {nbytes / t / 1e6:.0f} GB/s read", flush=True)
        rows.append({"kernel_only": True, "num_warps": nw, "sub": sub, "metrics": metrics, "pair": pair, "ms": t,
                     "read_bytes": nbytes})
    # slow path spot check against the fused result on the first 9 tensors
    qa, qb = make_quantizer("nemo_rl", "triton"), make_quantizer("vllm_per_block", "triton")
    f = verify_stream(items[:12], qa, qb, keep_all=True)
    s = verify_stream(items[:12], qa, qb, keep_all=True, fused=False)
    same = all((a.n_code_mismatch, a.n_scale_mismatch, a.first_element, a.first_block, a.max_code_ulp) ==
               (b.n_code_mismatch, b.n_scale_mismatch, b.first_element, b.first_block, b.max_code_ulp)
               for a, b in zip(f.verdicts, s.verdicts))
    print(f"fused == two-copy path on the first {len(f.verdicts)} fp8 tensors: {same}", flush=True)
    RES["verify"] = rows
    RES["verify_spot_equal"] = same
    del weights, items, lin
    torch.cuda.empty_cache()


def digest():
    from refit_verify.live.digest import block_digests
    from refit_verify.live.digest_triton import block_digests_many, block_digests_triton
    from refit_verify.model import load_config

    cfg = load_config("llama-3.1-8b")
    shapes = [s for n, s in cfg.hf_shapes().items() if len(s) == 2 and "layers" in n]
    g = torch.Generator(device="cuda").manual_seed(1)
    data = [torch.randint(0, 256, s, device="cuda", dtype=torch.uint8, generator=g).view(torch.float8_e4m3fn)
            for s in shapes]
    scales = [torch.rand(((s[0] + 127) // 128, (s[1] + 127) // 128), device="cuda", generator=g) for s in shapes]
    nbytes = sum(d.numel() for d in data)
    pairs = list(zip(data, scales))
    t = med(lambda: block_digests_many(pairs), reps=10, warm=2)
    eq = torch.equal(block_digests_triton(data[6], scales[6]).cpu(), block_digests(data[6].cpu(), scales[6].cpu()))
    print(f"digest kernel, Llama-3.1-8B linears ({len(data)} tensors, {nbytes / 1e9:.2f} GB fp8): {t:.2f} ms "
          f"= {nbytes / t / 1e6:.0f} GB/s; equals CPU definition on {tuple(data[6].shape)}: {eq}", flush=True)
    t2 = med(lambda: [block_digests(d, s) for d, s in zip(data[:7], scales[:7])], reps=3, warm=1)
    print(f"torch digest on the GPU, one layer (7 tensors): {t2:.2f} ms", flush=True)
    RES["digest"] = {"ms": t, "bytes": nbytes, "gbps": nbytes / t / 1e6, "equal_cpu": eq, "torch_gpu_one_layer_ms": t2}


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    parts = sys.argv[1].split(",") if len(sys.argv) > 1 else ["grouped", "verify", "digest"]
    for p in parts:
        t0 = time.time()
        try:
            {"grouped": grouped, "verify": verifier, "digest": digest}[p]()
        except Exception as exc:
            import traceback

            traceback.print_exc()
            RES[p + "_error"] = repr(exc)
        print(f"[{p} took {time.time() - t0:.0f} s]", flush=True)
        json.dump(RES, open(os.path.join(OUT, "issue15.json"), "w"), indent=1, default=str)
