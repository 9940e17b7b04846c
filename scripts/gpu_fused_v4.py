"""Device (issue 15, run g): fused verifier v4 — correctness at scale, kernel times, verify_stream.

python3 scripts/gpu_fused_v4.py  (weights: synthetic Llama-3.1-8B shapes generated on the device)"""
import json
import os
import statistics
import time

import torch

from refit_verify.bench.timing import copy_bandwidth, time_cuda
from refit_verify.compare import stream
from refit_verify.compare.fused import findings_differ
from refit_verify.compare.stream import default_is_fp8, iter_device_weights, make_quantizer, verify_stream
from refit_verify.fp8.kernels import fused_verify as fv
from refit_verify.model import load_config

OUT = os.environ.get("OUT", ".")
res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
cp = copy_bandwidth()["gbps"]
res["copy_gbps"] = cp
print(f"copy {cp:.0f} GB/s", flush=True)
items = list(iter_device_weights(load_config("llama-3.1-8b"), 0, "cuda"))
lin = [w for n, w in items if default_is_fp8(n, tuple(w.shape))]
nbytes = sum(w.numel() * w.element_size() for w in lin)
floor = nbytes / (cp * 1e6)  # one read at the copy rate (copy counts read + write bytes)
print(f"{len(lin)} fp8 linears, {nbytes / 1e9:.2f} GB bf16; one read at copy rate {floor:.2f} ms", flush=True)
PAIRS = (("nemo_rl", "nemo_rl"), ("nemo_rl", "vllm_per_block"))

# 1. exactness at scale: first 3 layers fused vs two-copy, every field
few = items[:3 + 9 * 3]
for ra, rb in PAIRS + (("nemo_rl_nan_to_num", "nemo_rl_pow2"),):
    qa, qb = make_quantizer(ra, "triton"), make_quantizer(rb, "triton")
    f = verify_stream(few, qa, qb, keep_all=True, measure_memory=False)
    s = verify_stream(few, qa, qb, keep_all=True, measure_memory=False, fused=False)
    probs = [p for x, y in zip(f.verdicts, s.verdicts) for p in findings_differ(x, y)]
    res[f"exact {ra} vs {rb}"] = {"tensors": f.n_fp8, "problems": probs[:5], "codes": f.n_code_mismatch,
                                  "scales": f.n_scale_mismatch}
    print(f"exact {ra} vs {rb}: {f.n_fp8} tensors, {len(probs)} problems {probs[:2]}", flush=True)

# 2. kernel times, one launch set over all linears
def med(fn, reps=7):
    return time_cuda(fn, reps=reps, warmup=2)["median_ms"]

rows = []
from refit_verify.compare.fused import fused_comparisons
for ra, rb in PAIRS:
    for metrics in (True, False):
        for ws_, wc, sub in ((4, 4, 32), (8, 4, 32), (4, 8, 32), (4, 4, 64), (4, 8, 128)):
            if not metrics and (ws_, wc, sub) not in ((4, 4, 32), (4, 8, 32)):
                continue
            L = fv.FusedLaunch(lin, ra, rb, metrics, num_warps=ws_, compare_warps=wc, sub=sub).run()
            t_s, t_all = med(L.screen), med(L.run)
            t_f = med(lambda: L._compare(False, L.fast_list)) if L.fast_list.numel() else 0.0
            t_h = med(lambda: fused_comparisons([(str(i), w) for i, w in enumerate(lin)], ra, rb, metrics,
                                                num_warps=ws_, compare_warps=wc, sub=sub), reps=5)
            cls = torch.bincount(L.rec[:, fv.R_CLASS], minlength=3).tolist()
            row = dict(pair=f"{ra} vs {rb}", metrics=metrics, warps=(ws_, wc), sub=sub, screen=t_s, fast=t_f,
                       run=t_all, comparisons=t_h, classes=cls, screen_frac_copy=floor / t_s)
            rows.append(row)
            print(f"{ra} vs {rb} metrics={metrics} w{ws_}/{wc} sub{sub}: screen {t_s:.2f} ms "
                  f"({100 * floor / t_s:.0f}% of copy) fast {t_f:.2f} run {t_all:.2f} with host {t_h:.2f}; "
                  f"classes {cls}", flush=True)
            del L
res["kernels"] = rows

# 3. whole-model verify_stream (weights resident), batch sizes
vs = []
for batch in (2 << 30, 1 << 40):
    stream.FUSED_BATCH_BYTES = batch
    for ra, rb in PAIRS:
        for metrics in (True, False):
            qa, qb = make_quantizer(ra, "triton"), make_quantizer(rb, "triton")
            verify_stream(items, qa, qb, metrics=metrics)
            runs = [verify_stream(items, qa, qb, metrics=metrics) for _ in range(5)]
            ms = statistics.median(1e3 * r.seconds for r in runs)
            r = runs[-1]
            vs.append(dict(batch=batch, pair=f"{ra} vs {rb}", metrics=metrics, ms=ms, n_equal=r.n_equal,
                           n_fp8=r.n_fp8, codes=r.n_code_mismatch, scales=r.n_scale_mismatch,
                           peak_extra_mib=r.peak_extra_bytes / 2**20, largest_mib=r.largest_fp8_tensor_bytes / 2**20))
            print(f"verify_stream batch {batch >> 30} GiB {ra} vs {rb} metrics={metrics}: {ms:.2f} ms, equal "
                  f"{r.n_equal}/{r.n_fp8}, codes {r.n_code_mismatch}, scales {r.n_scale_mismatch}, peak extra "
                  f"{r.peak_extra_bytes / 2**20:.1f} MiB", flush=True)
res["verify_stream"] = vs
# host share: the same call with the kernels already done is not separable; time python alone
t0 = time.perf_counter()
torch.cuda.synchronize()
json.dump(res, open(os.path.join(OUT, "fused_v4.json"), "w"), indent=1, default=str)
