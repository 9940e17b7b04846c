"""Device script (issue 15, run a): grouped quantizer vs copy bandwidth on the Llama-3.1-8B linear set.

Prints a markdown table; each figure is the median of device-event timings after warm-up.
"""

from __future__ import annotations

import sys

import torch

from refit_verify.fp8.kernels import quantize_triton
from refit_verify.fp8.kernels.grouped import GroupedQuantizer
from refit_verify.bench.timing import time_cuda
from refit_verify.fp8.quantize import quantize

LINEARS = [(4096, 4096), (1024, 4096), (1024, 4096), (4096, 4096), (14336, 4096), (14336, 4096), (4096, 14336)]


def med_ms(fn, reps=50, warm=10):
    return time_cuda(fn, reps=reps, warmup=warm)["median_ms"]


def graph_ms(fn):
    fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return med_ms(g.replay)


def main(layers=4):
    dev = torch.device("cuda")
    torch.manual_seed(0)
    ws = [torch.randn(s, device=dev, dtype=torch.bfloat16) * 0.02 for _ in range(layers) for s in LINEARS]
    nel = sum(w.numel() for w in ws)
    moved = nel * 2 + nel + nel // 16384 * 4  # read bf16, write codes + scales
    src = torch.empty(moved // 2, dtype=torch.uint8, device=dev)  # a copy of it moves `moved` bytes
    dst = torch.empty_like(src)
    copy = med_ms(lambda: dst.copy_(src))
    bw = moved / copy / 1e6
    print(f"card {torch.cuda.get_device_name()} torch {torch.__version__}; {layers} layers; copy {copy:.3f} ms = {bw:.0f} GB/s")
    print("| what | recipe | ms/layer | % of copy |\n|---|---|---|---|")
    row = lambda what, rec, ms: print(f"| {what} | {rec} | {ms / layers:.3f} | {100 * copy / ms:.1f}% |", flush=True)  # noqa: E731
    row("copy (read+write same bytes)", "-", copy)
    bad = 0
    for rec in ("vllm_per_block", "nemo_rl"):
        for nw in (4, 8):
            gq = GroupedQuantizer(ws, rec, num_warps=nw)
            out = gq()
            if nw == 4:
                for i in (0, 1, 4, 6):
                    ref = quantize(ws[i], rec)
                    ok = torch.equal(out[i].data.view(torch.uint8), ref.data.contiguous().view(torch.uint8)) and \
                        torch.equal(out[i].scale_inv.view(torch.int32), ref.scale_inv.view(torch.int32))
                    bad += not ok
                    print(f"exact {rec} tensor {i} {ws[i].shape}: {ok}")
            row(f"grouped eager w{nw}", rec, med_ms(gq))
            row(f"grouped graph w{nw}", rec, graph_ms(gq))
        row("per-tensor triton eager", rec, med_ms(lambda: [quantize_triton(w, rec) for w in ws]))
    row("plain cast .to(fp8)", "-", med_ms(lambda: [w.to(torch.float8_e4m3fn) for w in ws]))
    return bad


if __name__ == "__main__":
    sys.exit(1 if main() else 0)
