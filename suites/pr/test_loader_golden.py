"""vLLM-mode placement against the real vLLM 0.33.0 loader (fixtures/golden/vllm-0.33.0-loader.safetensors)."""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from refit_verify.compare import assert_fp8_equal
from refit_verify.errors import ShardPlacementError
from refit_verify.fp8 import quantize
from refit_verify.fp8.format import FP32_FILL
from refit_verify.model.config import LinearSpec, ShardSpec
from refit_verify.refit.loader import EngineLinear, vllm_shape_exempt
from refit_verify.refit.postload import misplaced_rows

GOLDEN = Path(__file__).resolve().parents[2] / "fixtures" / "golden" / "vllm-0.33.0-loader.safetensors"


def _golden():
    with safe_open(str(GOLDEN), "pt") as f:
        return json.loads(f.metadata()["meta"]), {k: f.get_tensor(k) for k in f.keys()}


META, T = _golden()
CONFIGS = sorted(META["configs"])


def _linear(cfg: str, placement: str) -> EngineLinear:
    c = META["configs"][cfg]
    shards = tuple(ShardSpec(f"shard{i}", sid, n) for i, (sid, n) in enumerate(zip(c["shard_ids"], c["shard_sizes"])))
    return EngineLinear.create(cfg, LinearSpec(cfg, shards, c["K"]), True, placement)


def _load(cfg: str, placement: str):
    """Load shard by shard, weight then scale, as vLLM's model.load_weights does; returns (linear, error)."""
    lin = _linear(cfg, placement)
    for i in range(len(META["configs"][cfg]["shard_sizes"])):
        lin.load_weight(i, T[f"{cfg}.shard{i}.q"].view(torch.float8_e4m3fn), f"{cfg}.shard{i}.weight")
        try:
            lin.load_scale(i, T[f"{cfg}.shard{i}.s"], f"{cfg}.shard{i}.weight_scale_inv")
        except ShardPlacementError as exc:
            return lin, exc, i
    return lin, None, None


@pytest.mark.parametrize("cfg", CONFIGS)
def test_shards_are_vllm_per_block_of_x(cfg):
    for i in range(len(META["configs"][cfg]["shard_sizes"])):
        q = quantize(T[f"{cfg}.shard{i}.x"], "vllm_per_block")
        assert_fp8_equal(q.data, q.scale_inv, T[f"{cfg}.shard{i}.q"].view(torch.float8_e4m3fn), T[f"{cfg}.shard{i}.s"],
                         name=f"{cfg}.shard{i}")


@pytest.mark.parametrize("cfg", CONFIGS)
def test_vllm_placement_reproduces_real_loader(cfg):
    c = META["configs"][cfg]
    lin, err, at = _load(cfg, "vllm")
    fill_bits = torch.tensor(FP32_FILL).view(torch.int32)
    if c["status"] == "raised":
        assert err is not None, f"{cfg}: vLLM raised {c['exception']!r}, the reproduction did not"
        assert f"{err.cause_type}: {err.cause_message}" == c["exception"]
        assert c["shard_ids"][at] == c["raised_on"]["shard_id"] and c["raised_on"]["param"] == "weight_scale_inv"
        partial = T[f"{cfg}.partial.weight_scale_inv"]
        assert torch.equal(lin.weight_scale_inv.view(torch.int32), partial.view(torch.int32))
        assert int((partial.view(torch.int32) == fill_bits).sum()) == c["scale_entries_left_at_fill"]
        return
    assert err is None
    for stage in ("loaded", "processed"):  # processing leaves block weights as loaded on this run
        assert torch.equal(lin.weight.view(torch.uint8), T[f"{cfg}.{stage}.weight"])
        assert torch.equal(lin.weight_scale_inv.view(torch.int32), T[f"{cfg}.{stage}.weight_scale_inv"].view(torch.int32))
    assert [list(r) for r in misplaced_rows(lin)] == c["wrong_row_ranges"]
    assert int((lin.weight_scale_inv.view(torch.int32) == fill_bits).sum()) == c["scale_entries_left_at_fill"]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_shape_exemption_matches_vllm(cfg):
    assert vllm_shape_exempt(_linear(cfg, "vllm").spec, 128) == META["configs"][cfg]["allow_fp8_block_shape_mismatch"]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_exact_placement_loads_every_split_with_own_scales(cfg):
    lin, err, _ = _load(cfg, "exact")
    assert err is None
    assert misplaced_rows(lin) == []
    # codes are placed the same way in both modes: where vLLM loaded, the bytes agree
    if META["configs"][cfg]["status"] != "raised":
        assert torch.equal(lin.weight.view(torch.uint8), T[f"{cfg}.loaded.weight"])


def test_silent_misscale_rows_carry_the_k_scale():
    """qkv 3072/192/128: rows 3264..3327 (v rows 0..63) get k's second block scale."""
    lin, _, _ = _load("qkv_3072_192_128", "vllm")
    eff = lin.effective_row_scale()
    k_block1 = T["qkv_3072_192_128.shard1.s"][1]
    v_block0 = T["qkv_3072_192_128.shard2.s"][0]
    assert torch.equal(eff[3264], k_block1) and torch.equal(eff[3327], k_block1)
    assert torch.equal(eff[3328], v_block0)
    assert not torch.equal(k_block1, v_block0)
