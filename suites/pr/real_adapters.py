"""The RL frameworks' quantizers restated in plain torch from their source (docs/RECIPES.md), each as
`f(w) -> (fp8, scale_inv)`, independent of refit_verify.fp8: `check` against the matching preset
must pass on the whole case set. Semantics only; the operation order is the real one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MAX = 448.0
FP8 = torch.float8_e4m3fn


def _blocks(w: torch.Tensor, pad: bool):
    m, n = w.shape
    if not pad:
        assert m % 128 == 0 and n % 128 == 0, "shape must be a multiple of the block"
    pm, pn = -m % 128, -n % 128
    x = F.pad(w, (0, pn, 0, pm)) if (pm or pn) else w
    mm, nn = x.shape
    return x.reshape(mm // 128, 128, nn // 128, 128).permute(0, 2, 1, 3), (m, n)


def _unblock(t: torch.Tensor, shape):
    mb, nb = t.shape[:2]
    return t.permute(0, 2, 1, 3).reshape(mb * 128, nb * 128)[: shape[0], : shape[1]].contiguous()


def verl_torch(w):
    """verl fp8_kernel torch fallback: one-rounding torch.div(448, amax), 1 for zero/inf amax."""
    t, shape = _blocks(w, pad=True)
    t = t.to(torch.float32)
    amax = t.abs().amax(dim=(2, 3), keepdim=True)
    s = torch.div(MAX, amax)
    s = torch.where(amax == 0, torch.ones_like(s), s)
    s = torch.where(amax.isinf(), torch.ones_like(s), s)
    q = torch.clamp(t * s, -MAX, MAX).to(FP8)
    return _unblock(q, shape), torch.reciprocal(s)[:, :, 0, 0]


def verl_vllm_fp8_utils(w):
    """verl v0.7 vllm_fp8_utils: no padding, float32, python-scalar 448 / amax (two roundings)."""
    t, shape = _blocks(w, pad=False)
    t = t.to(torch.float32)
    amax = torch.amax(torch.abs(t), dim=(2, 3), keepdim=True)
    s = MAX / amax
    s = torch.where(amax == 0, 1.0, s)
    s = torch.where(amax == torch.inf, 1.0, s)
    q = torch.clamp(t * s, min=-MAX, max=MAX).to(FP8)
    return _unblock(q, shape), torch.reciprocal(s)[:, :, 0, 0]


def slime_update(w):
    """slime's Triton kernel on the CPU: masked loads read 0, max(amax, 1e-10), x_s = amax / 448,
    y = clamp(x * (1 / x_s)); the kernel's tensor-by-scalar division is correctly rounded."""
    t, shape = _blocks(w, pad=True)
    t = t.to(torch.float32)
    amax = torch.maximum(t.abs().amax(dim=(2, 3), keepdim=True), torch.tensor(1e-10))
    x_s = amax / torch.tensor(MAX)
    s_inv = torch.tensor(1.0) / x_s
    q = torch.clamp(t * s_inv, -MAX, MAX).to(FP8)
    return _unblock(q, shape), x_s[:, :, 0, 0]


def areal(w):
    """AReaL: slime's kernel, then the scale sent as bfloat16."""
    q, s = slime_update(w)
    return q, s.to(torch.bfloat16)


def slime_convert(w):
    """slime tools/convert_hf_to_fp8.py block_fp8: amax in the input dtype, float32 scale, x / scale."""
    t, shape = _blocks(w, pad=True)
    amax = t.abs().amax(dim=(2, 3), keepdim=True)
    scale = amax.to(torch.float32) / MAX
    q = (t / scale).clamp(min=-MAX, max=MAX).to(FP8)
    return _unblock(q, shape), scale[:, :, 0, 0]


def torchao_float8tensor(w):
    """torchao Float8Tensor.from_hp(PerBlock([128, 128])), torch kernel: scale = amax / 448 in the
    weight's dtype, widened to float32; data = clamp(w.float() / scale)."""
    t, shape = _blocks(w, pad=False)
    scale = (t.abs().amax(dim=(2, 3), keepdim=True) / MAX).to(torch.float32)
    q = (t.to(torch.float32) / scale).clamp(min=-MAX, max=MAX).to(FP8)
    return _unblock(q, shape), scale[:, :, 0, 0]


def compressed_tensors(w):
    """compressed-tensors block FP8 (symmetric): min/max widened to include 0, scale = max|.| / 448 in
    the weight dtype, clamp(min=fp32 eps), x / scale in the weight dtype, + zero point 0, clamp, cast."""
    t, shape = _blocks(w, pad=False)
    lo = torch.minimum(t.amin(dim=(2, 3), keepdim=True), torch.zeros((), dtype=t.dtype))
    hi = torch.maximum(t.amax(dim=(2, 3), keepdim=True), torch.zeros((), dtype=t.dtype))
    scale = torch.maximum(lo.abs(), hi.abs()) / (896.0 / 2)
    scale = torch.clamp(scale, min=torch.finfo(torch.float32).eps)
    y = t / scale
    y += torch.zeros((), dtype=y.dtype)
    q = torch.clamp(y, -MAX, MAX).to(FP8)
    return _unblock(q, shape), scale[:, :, 0, 0]


def sglang_ue8m0(w):
    """SGLang per_block_cast_to_fp8(use_ue8m0=True): vLLM's formula with float 2**ceil(log2(sf))."""
    t, shape = _blocks(w, pad=True)
    amax = t.abs().float().amax(dim=(2, 3), keepdim=True).clamp(1e-4)
    sf = torch.pow(2.0, torch.ceil(torch.log2((amax / 448.0).abs())))
    q = (t * (1.0 / sf)).to(FP8)
    return _unblock(q, shape), sf[:, :, 0, 0]


def nemo_rl_pow2_nan_to_num(w):
    """NeMo-RL refit PR, pow2 on: upcast, edge pad, nan_to_num, uint8 biased exponent (0 means 1)."""
    x = w.to(torch.float32)
    m, n = x.shape
    pm, pn = -m % 128, -n % 128
    if pm or pn:
        x = F.pad(x, (0, pn, 0, pm), mode="constant", value=float(x[-1, -1]))
    mm, nn = x.shape
    t = x.reshape(mm // 128, 128, nn // 128, 128).permute(0, 2, 1, 3)
    t = torch.nan_to_num(t, nan=0.0, posinf=MAX, neginf=-MAX)
    amax = t.abs().amax(dim=(2, 3), keepdim=True)
    e = (torch.clamp(torch.ceil(torch.log2(amax / MAX)), min=-127, max=127) + 127).to(torch.uint8)
    s = torch.where(e == 0, 1.0, torch.exp2(127 - e.to(torch.float32)))
    q = torch.clamp(t * s, -MAX, MAX).to(FP8)
    out = q.permute(0, 2, 1, 3).reshape(mm, nn)[:m, :n]
    return out, torch.reciprocal(s)[:, :, 0, 0]


ADAPTERS = {
    "verl_torch": verl_torch,
    "verl_vllm_fp8_utils": verl_vllm_fp8_utils,
    "slime_update": slime_update,
    "verl_triton": slime_update,
    "areal": areal,
    "slime_convert": slime_convert,
    "torchao_float8tensor": torchao_float8tensor,
    "compressed_tensors": compressed_tensors,
    "sglang_ue8m0": sglang_ue8m0,
    "nemo_rl_pow2_nan_to_num": nemo_rl_pow2_nan_to_num,
}
