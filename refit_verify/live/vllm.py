"""vLLM worker extension: per-rank digests and dumps of what a live vLLM engine holds.

Start the engine with `worker_extension_cls="refit_verify.live.vllm.RefitVerifyExtension"`; vLLM
mixes this class into every worker, and the trainer calls its methods on all ranks at once:

    results = llm.collective_rpc("refit_verify_digests", kwargs={"recipe": "vllm_per_block"})
    engine_doc = engine_document(results)          # one digest document, every rank
    diff = compare_documents(expect(trainer_weights, "vllm_per_block", layout), engine_doc)

The methods read the parameters as they are at call time, so they work after `load_weights`,
after the weight-transfer API (`start_weight_update` / `update_weights` / `finish_weight_update`)
and after `process_weights_after_loading`: call them once the step's update has finished. Digests
are computed on the device the parameters live on; only the 16-byte-per-block digest table is
copied to the host and returned (a few KiB per tensor). Method names carry a `refit_verify_`
prefix because vLLM refuses an extension whose attributes collide with the worker's.

vllm is never imported at module level: the class is a plain mixin, usable on any object that has
`get_model()` (vLLM's Worker) or `model_runner.get_model()`.
"""

from __future__ import annotations

from typing import Optional

from refit_verify.errors import BadInputError
from refit_verify.layout import SINGLE, Layout, Rank
from refit_verify.live.digest import DIGEST_VERSION
from refit_verify.live.dump import write_rank_dump
from refit_verify.live.fileformat import FORMAT, digest_rank


def parallel_rank(tp: tuple[int, int], pp: tuple[int, int] = (0, 1), dp: tuple[int, int] = (0, 1),
                  pcp: tuple[int, int] = (0, 1), expert_parallel: bool = False,
                  has_experts: bool = True) -> tuple[Rank, Layout]:
    """(rank, layout) of one vLLM worker from its (rank, size) in each parallel group.

    vLLM 0.33 (FusedMoEParallelConfig.make): with `enable_expert_parallel` and dp * pcp * tp > 1, each
    FusedMoE layer holds whole experts split over the dp * pcp * tp workers of a pipeline stage, flat
    expert rank `(dp_rank * pcp_size + pcp_rank) * tp_size + tp_rank`; dense layers stay tensor-sliced
    over tp. The Layout's `ep` is that dp * pcp factor (the sharded reference's flat expert rank is
    `ep * tp + tp`), so a worker is `Rank(tp_rank, dp_rank * pcp_size + pcp_rank, pp_rank)`. A dense
    model's data-parallel replicas are separate engines (each collected on its own). MoE layouts a
    (tp, ep, pp) layout cannot state (expert parallelism over tp alone; experts tensor-sliced across
    data-parallel ranks when it is off) are refused with BadInputError rather than mislabelled.
    """
    (t, tp_size), (p, pp_size), (d, dp_size), (c, pcp_size) = tp, pp, dp, pcp
    groups = dp_size * pcp_size
    moe_sharded = has_experts and (groups > 1 or (expert_parallel and tp_size > 1))
    if not moe_sharded:  # dense layers, or experts tensor-sliced over tp as the sharded reference's ep=1
        return Rank(tp=t, pp=p), Layout(tp=tp_size, pp=pp_size)
    if expert_parallel and groups > 1:
        return Rank(tp=t, ep=d * pcp_size + c, pp=p), Layout(tp=tp_size, ep=groups, pp=pp_size)
    how = ("splits whole experts over the tensor-parallel ranks alone" if expert_parallel else
           f"tensor-slices every expert over dp*pcp*tp = {groups * tp_size} workers")
    raise BadInputError(f"vLLM {how} (tp={tp_size}, dp={dp_size}, pcp={pcp_size}, expert parallel "
                        f"{'on' if expert_parallel else 'off'}); a (tp, ep, pp) layout states experts split whole "
                        "over data-parallel groups with expert parallelism on, or tensor-sliced over tp alone")


def vllm_rank(parallel_config=None, has_experts: bool = True) -> tuple[Rank, Layout]:
    """This process's (rank, layout) from vLLM's parallel state; single rank when none is set up.
    `parallel_config` (the worker's `vllm_config.parallel_config`) says whether expert parallelism is on."""
    try:
        from vllm.distributed import parallel_state as ps
    except ImportError:
        return Rank(), SINGLE
    if not ps.model_parallel_is_initialized():
        return Rank(), SINGLE

    def where(get):
        try:
            g = get()
        except AssertionError:  # group not created (older setups): size 1
            return 0, 1
        return g.rank_in_group, g.world_size

    return parallel_rank(where(ps.get_tp_group), where(ps.get_pp_group), where(ps.get_dp_group),
                         where(ps.get_pcp_group), bool(getattr(parallel_config, "enable_expert_parallel", False)),
                         has_experts)


def model_parameters(model) -> dict:
    """{engine name: tensor} of every parameter, on its own device (no copies)."""
    return {n: p.detach() for n, p in model.named_parameters()}


def rank_digests(params: dict, recipe="vllm_per_block", sample: Optional[dict] = None,
                 rank: Rank = Rank(), layout: Layout = SINGLE) -> dict:
    """One rank's part of a digest document (what `refit_verify_digests` returns)."""
    from refit_verify.fp8 import get_recipe

    r = get_recipe(recipe)
    return {"format": FORMAT, "version": DIGEST_VERSION, "rank": rank.label, "layout": layout.to_dict(),
            "recipe": r.name, "block": list(r.block), "sample": sample,
            "params": digest_rank(params, r.block, rank, sample)}


def engine_document(results) -> dict:
    """Merge the per-rank results of `collective_rpc("refit_verify_digests")` into one digest document."""
    results = list(results)
    if not results:
        raise BadInputError("no rank returned digests")
    head = results[0]
    for res in results[1:]:
        for key in ("layout", "recipe", "block", "sample"):
            if res.get(key) != head.get(key):
                raise BadInputError(f"ranks disagree on {key}: {head.get(key)!r} vs {res.get(key)!r}",
                                    res.get("rank"))
    ranks = {}
    for res in results:
        if res["rank"] in ranks:
            raise BadInputError("two workers report the same rank (data-parallel replicas? collect one replica)",
                                res["rank"])
        ranks[res["rank"]] = res["params"]
    return {"format": FORMAT, "version": DIGEST_VERSION, "role": "engine", "recipe": head["recipe"],
            "block": head["block"], "layout": head["layout"], "sample": head["sample"], "ranks": ranks}


class RefitVerifyExtension:
    """Mixed into vLLM's worker; every method runs on each rank through `collective_rpc`."""

    def _refit_verify_model(self):
        if hasattr(self, "get_model"):
            return self.get_model()
        return self.model_runner.get_model()

    def _refit_verify_where(self, params: dict) -> tuple[Rank, Layout]:
        config = getattr(self, "parallel_config", None) or getattr(getattr(self, "vllm_config", None),
                                                                   "parallel_config", None)
        return vllm_rank(config, has_experts=any(".experts." in n for n in params))

    def refit_verify_rank(self) -> dict:
        rank, layout = self._refit_verify_where(model_parameters(self._refit_verify_model()))
        return {"rank": rank.label, "layout": layout.to_dict()}

    def refit_verify_digests(self, recipe: str = "vllm_per_block", sample: Optional[dict] = None) -> dict:
        """This rank's per-block digests of every parameter (merge the ranks with `engine_document`)."""
        params = model_parameters(self._refit_verify_model())
        rank, layout = self._refit_verify_where(params)
        return rank_digests(params, recipe, sample, rank, layout)

    def refit_verify_dump(self, folder: str) -> str:
        """Write this rank's parameters to `<folder>/<rank label>.safetensors`; returns the path.

        The folder is a dump `refit-verify digest` reads (one file per rank). Copies this rank's
        parameters to host memory: use it to inspect a failure, not every step.
        """
        params = model_parameters(self._refit_verify_model())
        rank, _ = self._refit_verify_where(params)
        return str(write_rank_dump(params, folder, rank))
