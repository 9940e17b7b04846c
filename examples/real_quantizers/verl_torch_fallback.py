"""verl's PyTorch fallback for block FP8 (verl/utils/kernel/fp8_kernel.py, _scaled_fp8_blockwise_pytorch,
used with VERL_DISABLE_TRITON_FP8=1 or without triton), restated as a user would paste it to ask
`refit-verify fit --quantizer examples/real_quantizers/verl_torch_fallback.py:quantize` what it does.
Semantics as read from verl @ad4ab5aa: float32, zero padding to 128x128, s = torch.div(448, amax)
(one rounding), s = 1 where amax is 0 or inf, clamp(x * s), stored scale_inv = 1 / s."""

import torch

BLOCK, MAX = 128, 448.0


def quantize(w: torch.Tensor):
    m, n = w.shape
    pm, pn = -(-m // BLOCK) * BLOCK, -(-n // BLOCK) * BLOCK
    x = torch.zeros(pm, pn, dtype=torch.float32)
    x[:m, :n] = w.float()
    t = x.view(pm // BLOCK, BLOCK, pn // BLOCK, BLOCK)
    amax = t.abs().amax(dim=(1, 3), keepdim=True)
    s = torch.div(MAX, amax)
    s = torch.where((amax == 0) | torch.isinf(amax), torch.ones_like(s), s)
    q = torch.clamp(t * s, -MAX, MAX).to(torch.float8_e4m3fn).view(pm, pn)[:m, :n].contiguous()
    return q, torch.reciprocal(s).view(pm // BLOCK, pn // BLOCK)
