"""Example user quantizers for `refit-verify check` and the pytest plugin.

  refit-verify check --quantizer examples/user_quantizer/my_quant.py:good          # exit 0
  refit-verify check --quantizer examples/user_quantizer/my_quant.py:scale_form    # exit 1, names the block
"""

import math

import torch


def good(w: torch.Tensor):
    """vLLM's weight recipe written out by hand: zero padding, amax floor 1e-4, a/448, x * (1/sf)."""
    m, n = w.shape
    pm, pn = math.ceil(m / 128) * 128, math.ceil(n / 128) * 128
    x = torch.zeros(pm, pn, dtype=w.dtype)
    x[:m, :n] = w
    t = x.view(pm // 128, 128, pn // 128, 128)
    amax = t.abs().float().amax(dim=(1, 3), keepdim=True).clamp(min=1e-4)
    sf = amax / 448.0
    q = (t * (1.0 / sf)).to(torch.float8_e4m3fn)
    return q.view(pm, pn)[:m, :n].contiguous(), sf.view(pm // 128, pn // 128)


def scale_form(w: torch.Tensor):
    """The classic drift: s = 448 / a and scale_inv = 1 / s, off by one float32 ulp in many blocks."""
    m, n = w.shape
    pm, pn = math.ceil(m / 128) * 128, math.ceil(n / 128) * 128
    x = torch.zeros(pm, pn, dtype=torch.float32)
    x[:m, :n] = w.float()
    t = x.view(pm // 128, 128, pn // 128, 128)
    amax = t.abs().amax(dim=(1, 3), keepdim=True).clamp(min=1e-4)
    s = 448.0 / amax
    q = (t * s).clamp(-448, 448).to(torch.float8_e4m3fn)
    return q.view(pm, pn)[:m, :n].contiguous(), (1.0 / s).view(pm // 128, pn // 128)
