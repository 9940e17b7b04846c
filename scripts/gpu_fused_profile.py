"""Device: where the host time of a differing whole-model fused verify goes (cProfile, Llama-3.1-8B)."""
import cProfile
import pstats
import time

import torch

from refit_verify.compare.stream import iter_device_weights, make_quantizer, verify_stream
from refit_verify.model import load_config

items = list(iter_device_weights(load_config("llama-3.1-8b"), 0, "cuda"))
for ra, rb in (("nemo_rl", "vllm_per_block"), ("nemo_rl", "nemo_rl")):
    qa, qb = make_quantizer(ra, "triton"), make_quantizer(rb, "triton")
    verify_stream(items, qa, qb)
    t = time.perf_counter()
    verify_stream(items, qa, qb)
    print(f"{ra} vs {rb}: {1e3 * (time.perf_counter() - t):.2f} ms", flush=True)
    pr = cProfile.Profile()
    pr.enable()
    verify_stream(items, qa, qb)
    pr.disable()
    pstats.Stats(pr).sort_stats("tottime").print_stats(22)
