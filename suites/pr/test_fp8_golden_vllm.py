"""The vllm_per_block and activation recipes against bytes produced by the real vLLM 0.33.0."""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from refit_verify.compare import assert_fp8_equal
from refit_verify.fp8 import quantize

GOLDEN = Path(__file__).resolve().parents[2] / "fixtures" / "golden" / "vllm-0.33.0-fp8.safetensors"


def _golden():
    with safe_open(str(GOLDEN), "pt") as f:
        meta = json.loads(f.metadata()["meta"])
        return meta, {k: f.get_tensor(k) for k in f.keys()}


META, TENSORS = _golden()
CASES = [(c, u) for c in META["cases"] for u in (0, 1)]


@pytest.mark.parametrize("case,ue8m0", CASES, ids=[f"{c}-ue8m0_{u}" for c, u in CASES])
def test_matches_real_vllm(case, ue8m0):
    act = case.startswith("act.")
    recipe = ("vllm_act_group_native" if act else "vllm_per_block") + ("_ue8m0" if ue8m0 else "")
    x = TENSORS[f"{case}.x"]
    want_q, want_s = TENSORS[f"{case}.q.ue8m0_{ue8m0}"], TENSORS[f"{case}.s.ue8m0_{ue8m0}"]
    got = quantize(x, recipe, name=case)
    assert_fp8_equal(got.data, got.scale_inv, want_q.view(torch.float8_e4m3fn),
                     want_s.reshape(got.scale_inv.shape), got.recipe.block, name=f"{case}[{recipe}]")
