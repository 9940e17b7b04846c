"""Device diagnosis (issue 15 run e): where the fused verifier and the two-copy path disagree."""

import torch

from refit_verify.compare.stream import compare_streamed, iter_device_weights, make_quantizer
from refit_verify.fp8.kernels.fused_verify import fused_block_stats, verdict_rows
from refit_verify.model import load_config

FIELDS = ("n_code_mismatch", "n_scale_mismatch", "first_element", "max_code_ulp", "nan_codes")


def check(label, items, ra, rb, **kw):
    ws = [w for _, w in items]
    qa, qb = make_quantizer(ra, "triton"), make_quantizer(rb, "triton")
    rows = verdict_rows(ws, *fused_block_stats(ws, ra, rb, **kw))
    bad = []
    for (name, w), row in zip(items, rows):
        v = compare_streamed(name, w, qa(w, name), qb(w, name))
        diff = {k: (row[k], getattr(v, k)) for k in FIELDS if row[k] != getattr(v, k)}
        if row["first_scale_block"] is not None and v.first_block is not None and v.first_element is None \
                and tuple(row["first_scale_block"]) != tuple(v.first_block):
            diff["first_scale_block"] = (row["first_scale_block"], v.first_block)
        if diff:
            bad.append((name, tuple(w.shape), diff))
    print(f"{label} {ra} vs {rb} {kw}: {len(bad)} of {len(items)} tensors differ", flush=True)
    for b in bad[:4]:
        print("   ", b, flush=True)


g = torch.Generator().manual_seed(21)
SHAPES = [(256, 384), (130, 200), (1, 129), (384, 128), (257, 1000), (4096, 1024)]
ts = [(torch.randn(s, generator=g) * torch.rand(s, generator=g).pow(8) * 3).to(torch.bfloat16) for s in SHAPES]
ts[1][0, 0] = float("nan"); ts[2][0, 5] = float("inf"); ts[3][:128, :] = 0; ts[4][200, 999] = 1e4
ts[4][-1, -1] = -300.0; ts[0][5, 5] = float("-inf")
small = [(f"t{i}", t.cuda()) for i, t in enumerate(ts)]
for ra, rb in (("torchao", "nemo_rl"), ("vllm_per_block_ue8m0", "deepgemm"), ("nemo_rl", "vllm_per_block")):
    for kw in ({}, {"hints": False}, {"fast_cast": False}, {"sub": 128}):
        check("small", small, ra, rb, **kw)
items = []
for n, w in iter_device_weights(load_config("llama-3.1-8b"), 0, "cuda"):
    if w.dim() == 2:
        items.append((n, w))
    if len(items) == 9:
        break
for kw in ({}, {"hints": False}, {"fast_cast": False}):
    check("llama", items[1:9], "nemo_rl", "vllm_per_block", **kw)
