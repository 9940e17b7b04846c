"""slime's checkpoint conversion to block FP8 (tools/convert_hf_to_fp8.py, block_fp8), restated as a
user would paste it to ask `refit-verify fit --quantizer examples/real_quantizers/slime_convert_block_fp8.py:quantize`
what it does. Semantics as read from slime @193a2e13: zero padding to 128x128, amax in the weight's
dtype, scale = amax / 448 in float32 (no floor), x / scale, clamp, cast."""

import torch

BLOCK, MAX = 128, 448.0


def quantize(w: torch.Tensor):
    m, n = w.shape
    pm, pn = -(-m // BLOCK) * BLOCK, -(-n // BLOCK) * BLOCK
    x = torch.zeros(pm, pn, dtype=w.dtype)
    x[:m, :n] = w
    t = x.view(pm // BLOCK, BLOCK, pn // BLOCK, BLOCK)
    scale = t.abs().amax(dim=(1, 3), keepdim=True).to(torch.float32) / MAX
    q = (t / scale).clamp(-MAX, MAX).to(torch.float8_e4m3fn).view(pm, pn)[:m, :n].contiguous()
    return q, scale.view(pm // BLOCK, pn // BLOCK)
