"""CPU cost of the live check per Llama-3.1-8B decoder layer (docs/LIVE.md): expect's quantization,
full digest, sampled digest. CPU time of one thread, best of 3.

    PYTHONPATH=. python tools/live_cost.py [--config llama-3.1-8b] [--k 4]
"""

from __future__ import annotations

import argparse
import time

import torch


def best(fn, reps=3):
    out = float("inf")
    for _ in range(reps):
        t = time.process_time()
        fn()
        out = min(out, time.process_time() - t)
    return out


def main(argv=None):
    from refit_verify.layout import SINGLE, Rank
    from refit_verify.live.expect import engine_tensors
    from refit_verify.live.fileformat import digest_document
    from refit_verify.model import load_config, synthesize_weights

    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="llama-3.1-8b")
    ap.add_argument("--k", type=int, default=4)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    cfg = load_config(a.config, layers=1)
    w = {k: v for k, v in synthesize_weights(cfg, 0).items() if ".layers." in k}
    e = engine_tensors(w)
    mib = sum(t.numel() * t.element_size() for t in e.values() if not t.dtype.is_floating_point or
              t.element_size() == 1) / 2**20
    tq = best(lambda: engine_tensors(w), 1)
    tf = best(lambda: digest_document({Rank(): e}, "vllm_per_block", (128, 128), SINGLE, "x"))
    ts = best(lambda: digest_document({Rank(): e}, "vllm_per_block", (128, 128), SINGLE, "x",
                                      sample={"k": a.k, "seed": 1}))
    print(f"{a.config} one decoder layer, {mib:.0f} MiB FP8: quantize (expect from BF16) {tq:.2f} s; "
          f"full digest {tf:.3f} s ({mib / tf:.0f} MiB/s); sampled k={a.k} {ts * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
