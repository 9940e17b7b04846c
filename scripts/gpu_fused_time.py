"""Device (issue 15 run f): fused verifier timing with the full cast rule (fast_cast off)."""
import torch
from refit_verify.bench.timing import time_cuda
from refit_verify.compare.stream import iter_device_weights, make_quantizer, verify_stream
from refit_verify.fp8.kernels.fused_verify import fused_block_stats
from refit_verify.model import load_config
items = [(n, w) for n, w in iter_device_weights(load_config("llama-3.1-8b"), 0, "cuda")]
lin = [w for n, w in items if w.dim() == 2 and "layers" in n]
for nw, sub, met in ((4, 32, True), (8, 32, True), (8, 64, True), (4, 32, False)):
    t = time_cuda(lambda: fused_block_stats(lin, "nemo_rl", "vllm_per_block", met, num_warps=nw, sub=sub), reps=5, warmup=1)["median_ms"]
    print(f"kernel only nemo_rl vs vllm_per_block w{nw} sub{sub} metrics={met}: {t:.1f} ms", flush=True)
for ra, rb in (("nemo_rl", "nemo_rl"), ("nemo_rl", "vllm_per_block")):
    qa, qb = make_quantizer(ra, "triton"), make_quantizer(rb, "triton")
    verify_stream(items[:12], qa, qb)
    r = sorted(verify_stream(items, qa, qb).seconds for _ in range(3))
    print(f"verify_stream {ra} vs {rb}: {1e3 * r[1]:.1f} ms", flush=True)
