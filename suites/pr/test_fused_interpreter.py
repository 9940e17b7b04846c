"""The fused verifier gives the two-copy comparison's findings, in the Triton interpreter on the CPU.

TRITON_INTERPRET must be set before triton loads, so the check runs in a child process (this file
run as a script); an active self-test mutant is passed on to it. Small tensors, two recipe pairs
that between them take every path: blocks equal by construction, the fast compare, the full rule
(NaN, inf, partial blocks, edge padding, nan_to_num), and code dumps (distances above 2 steps)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

SHAPES = [(256, 256), (130, 200), (1, 129)]
PAIRS = [("nemo_rl", "vllm_per_block"), ("nemo_rl_nan_to_num", "nemo_rl_pow2")]
FOUND = 3  # the child's exit status when findings differ (1 is Python's for an uncaught exception)


def _weights(seed):
    import torch

    g = torch.Generator().manual_seed(seed)
    ts = [(torch.randn(s, generator=g) * torch.rand(s, generator=g).pow(8) * 3).to(torch.bfloat16) for s in SHAPES]
    ts[0][5, 5] = float("-inf")
    # a block where pow2 and exact scales put codes up to 3 fp8 steps apart
    ts[0][:128, 128:256] = ((torch.rand((128, 128), generator=g) * 2 - 1) * 380).to(torch.bfloat16)
    ts[0][0, 128] = 380.0
    ts[1][0, 0] = float("nan")
    ts[2][0, 5] = float("inf")
    ts[0][128:, :128] = 0
    return [(f"model.layers.{i}.mlp.w{i}.weight", t) for i, t in enumerate(ts)]


def _problems() -> list:
    from refit_verify.compare.fused import findings_differ
    from refit_verify.compare.stream import make_quantizer, verify_stream

    out = []
    ws = _weights(31)
    for ra, rb in PAIRS:
        qa, qb = make_quantizer(ra, "triton"), make_quantizer(rb, "triton")
        fast = verify_stream(ws, qa, qb, keep_all=True, measure_memory=False)
        slow = verify_stream(ws, qa, qb, keep_all=True, measure_memory=False, fused=False)
        if fast.n_fp8 != len(ws):
            out.append(f"{ra} vs {rb}: the fused path checked {fast.n_fp8} of {len(ws)} tensors")
        out += [f"{ra} vs {rb}: {p}" for f, s in zip(fast.verdicts, slow.verdicts) for p in findings_differ(f, s)]
        if (ra == rb) != slow.equal:
            out.append(f"{ra} vs {rb}: the two-copy path says equal={slow.equal}")
    return out


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton installed (interpreter mode)")
def test_fused_matches_two_copy_in_interpreter(request):
    mutant = request.config.getoption("--refit-mutant", default=None)
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONWARNINGS": "ignore"}
    p = subprocess.run([sys.executable, __file__] + ([mutant] if mutant else []), env=env, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode in (0, FOUND), f"child crashed:\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}"
    assert p.returncode == 0, "fused findings differ from the two-copy path:\n" + p.stdout[-4000:]


if __name__ == "__main__":
    import contextlib
    import warnings

    warnings.simplefilter("ignore")
    ctx = contextlib.nullcontext()
    if len(sys.argv) > 1:
        from refit_verify.selftest.catalog import get_mutant

        ctx = get_mutant(sys.argv[1]).applied()
    with ctx:
        found = _problems()
    print("\n".join(found) or "ok")
    sys.exit(FOUND if found else 0)
