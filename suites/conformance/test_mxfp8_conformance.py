"""`mxfp8_vllm` against vLLM 0.33's own MXFP8 torch quantizer, bitwise (codes, and E8M0 bytes)."""

from __future__ import annotations

import pytest
import torch

from refit_verify.cases import mx_cases
from refit_verify.engine import vllm_cpu
from refit_verify.errors import RecipeFailure
from refit_verify.fp8 import format as fmt
from refit_verify.fp8 import quantize


@pytest.mark.parametrize("case", mx_cases(0), ids=lambda c: c.name)
def test_mxfp8_vllm_matches_vllm_bytes(case):
    x = case.tensor()
    try:
        ref = quantize(x, "mxfp8_vllm", case.name)
    except RecipeFailure:
        with pytest.raises(AssertionError):  # vLLM asserts K % 32 == 0
            vllm_cpu.mxfp8_quantize_torch(x)
        return
    q, scales = vllm_cpu.mxfp8_quantize_torch(x)
    nan_group = torch.isnan(ref.scale_inv)
    ours = fmt.e8m0_bytes(ref.scale_inv)
    # a NaN amax: vLLM casts a NaN float to uint8 (platform-defined byte); the reference says 0xFF
    assert torch.equal(scales[~nan_group], ours[~nan_group]), case.name
    a, b = q.view(torch.uint8), ref.codes
    nan_code = fmt.is_nan_code(a) & fmt.is_nan_code(b)
    assert torch.equal(a[~nan_code], b[~nan_code]), case.name


@pytest.mark.parametrize("case", [c for c in mx_cases(0) if c.tensor().shape[1] % 32 == 0], ids=lambda c: c.name)
def test_mxfp8_nemo_rl_is_vllms_bytes_with_byte_0_stored_as_1(case):
    """NeMo-RL's quantize_mxfp8_weight: vLLM's mxfp8 quantizer, then `where(scale == 0, 1, scale)`."""
    x = case.tensor()
    q, scales = vllm_cpu.mxfp8_quantize_torch(x)
    scales = torch.where(scales == 0, torch.ones_like(scales), scales)
    ref = quantize(x, "mxfp8_nemo_rl", case.name)
    nan_group = torch.isnan(ref.scale_inv)
    assert torch.equal(scales[~nan_group], fmt.e8m0_bytes(ref.scale_inv)[~nan_group]), case.name
    a, b = q.view(torch.uint8), ref.codes
    nan_code = fmt.is_nan_code(a) & fmt.is_nan_code(b)
    assert torch.equal(a[~nan_code], b[~nan_code]), case.name
