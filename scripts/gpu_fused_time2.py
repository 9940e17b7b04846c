"""Device (issue 15, run l): whole-model verify_stream after the host-side trims, median of 7."""
import statistics

from refit_verify.compare.stream import iter_device_weights, make_quantizer, verify_stream
from refit_verify.model import load_config

items = list(iter_device_weights(load_config("llama-3.1-8b"), 0, "cuda"))
for ra, rb in (("nemo_rl", "nemo_rl"), ("nemo_rl", "vllm_per_block")):
    qa, qb = make_quantizer(ra, "triton"), make_quantizer(rb, "triton")
    for metrics in (True, False):
        verify_stream(items, qa, qb, metrics=metrics)
        runs = [verify_stream(items, qa, qb, metrics=metrics) for _ in range(7)]
        ms = sorted(1e3 * r.seconds for r in runs)
        print(f"{ra} vs {rb} metrics={metrics}: median {statistics.median(ms):.2f} ms, all {[round(x, 1) for x in ms]}, "
              f"codes {runs[-1].n_code_mismatch} scales {runs[-1].n_scale_mismatch}", flush=True)
