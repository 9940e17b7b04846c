"""The live worker's rank label under vLLM 0.33's parallel groups, expert parallelism included.

vLLM's FusedMoEParallelConfig.make (restated in live/vllm.py): with enable_expert_parallel and
dp * pcp * tp > 1, the flat expert rank is dp_rank * pcp * tp + pcp_rank * tp + tp_rank over
dp * pcp * tp workers. The label must make the sharded reference give that worker the same experts.
"""

from __future__ import annotations

import sys
import types

import pytest

from refit_verify.errors import BadInputError
from refit_verify.layout import Layout, Rank
from refit_verify.live.vllm import RefitVerifyExtension, parallel_rank, vllm_rank
from refit_verify.refit.sharded_engine import moe_parallel


@pytest.mark.parametrize("tp,dp,pcp", [(1, 2, 1), (2, 2, 1), (2, 3, 1), (1, 2, 2), (2, 2, 2), (4, 2, 1)])
def test_expert_parallel_rank_is_vllms_flat_expert_rank(tp, dp, pcp):
    seen = set()
    for d in range(dp):
        for c in range(pcp):
            for t in range(tp):
                rank, layout = parallel_rank((t, tp), (0, 1), (d, dp), (c, pcp), expert_parallel=True)
                assert layout == Layout(tp=tp, ep=dp * pcp) and rank.tp == t
                moe_tp, moe_rank, ep_size, ep_rank = moe_parallel(layout, rank)
                assert (moe_tp, moe_rank, ep_size) == (1, 0, dp * pcp * tp)
                assert ep_rank == d * pcp * tp + c * tp + t  # vLLM's flat expert rank
                seen.add(rank)
    assert seen == set(Layout(tp=tp, ep=dp * pcp).ranks())  # every label once: no two workers collide


def test_pipeline_stage_and_tensor_rank_kept():
    assert parallel_rank((1, 2), (1, 2), (1, 2), expert_parallel=True) == (Rank(1, 1, 1), Layout(2, 2, 2))
    assert parallel_rank((1, 2), (1, 2)) == (Rank(tp=1, pp=1), Layout(tp=2, pp=2))


def test_dense_model_replicas_and_moe_without_data_parallel():
    # a dense model: each data-parallel replica is its own engine, expert parallelism is moot
    assert parallel_rank((1, 2), dp=(1, 2), expert_parallel=True, has_experts=False) == (Rank(tp=1), Layout(tp=2))
    # MoE, expert parallelism off, no data parallelism: experts tensor-sliced over tp (the reference's ep=1)
    assert parallel_rank((1, 2), expert_parallel=False) == (Rank(tp=1), Layout(tp=2))
    assert parallel_rank((0, 1), expert_parallel=True) == (Rank(), Layout())  # dp*pcp*tp = 1: no EP in vLLM


@pytest.mark.parametrize("kw,match", [
    (dict(tp=(0, 2), expert_parallel=True), "over the tensor-parallel ranks alone"),
    (dict(tp=(0, 2), dp=(1, 2), expert_parallel=False), "tensor-slices every expert over dp\\*pcp\\*tp = 4"),
])
def test_moe_layouts_a_layout_cannot_state_are_refused(kw, match):
    with pytest.raises(BadInputError, match=match):
        parallel_rank(**kw)


def _fake_vllm(monkeypatch, groups):
    ps = types.ModuleType("vllm.distributed.parallel_state")
    ps.model_parallel_is_initialized = lambda: True
    for name, (rank, size) in groups.items():
        setattr(ps, f"get_{name}_group", lambda r=rank, s=size: types.SimpleNamespace(rank_in_group=r, world_size=s))
    dist = types.ModuleType("vllm.distributed")
    dist.parallel_state = ps
    vllm = types.ModuleType("vllm")
    vllm.distributed = dist
    for mod in (vllm, dist, ps):
        monkeypatch.setitem(sys.modules, mod.__name__, mod)


def test_worker_reads_groups_and_its_expert_parallel_flag(monkeypatch):
    _fake_vllm(monkeypatch, {"tp": (1, 2), "pp": (0, 1), "dp": (1, 2), "pcp": (0, 1)})
    assert vllm_rank(types.SimpleNamespace(enable_expert_parallel=True)) == (Rank(tp=1, ep=1), Layout(tp=2, ep=2))

    class Worker(RefitVerifyExtension):  # vLLM's Worker carries parallel_config; the mixin reads it
        parallel_config = types.SimpleNamespace(enable_expert_parallel=True)

        def get_model(self):
            import torch

            return types.SimpleNamespace(named_parameters=lambda: iter([
                ("model.layers.0.mlp.experts.w13_weight", torch.zeros(1, 2, 2))]))

    assert Worker().refit_verify_rank() == {"rank": "tp1.ep1.pp0", "layout": {"tp": 2, "ep": 2, "pp": 1}}
