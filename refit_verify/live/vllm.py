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


def vllm_rank() -> tuple[Rank, Layout]:
    """This process's (rank, layout) from vLLM's parallel state; single rank when none is set up.

    Expert parallelism reuses vLLM's tp x dp ranks, so the live rank is identified by its tp and pp
    position; the sharded reference's ep placement maps onto these labels.
    """
    try:
        from vllm.distributed import parallel_state as ps
    except ImportError:
        return Rank(), SINGLE
    if not ps.model_parallel_is_initialized():
        return Rank(), SINGLE
    tp, pp = ps.get_tp_group(), ps.get_pp_group()
    return Rank(tp=tp.rank_in_group, pp=pp.rank_in_group), Layout(tp=tp.world_size, pp=pp.world_size)


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

    def refit_verify_rank(self) -> dict:
        rank, layout = vllm_rank()
        return {"rank": rank.label, "layout": layout.to_dict()}

    def refit_verify_digests(self, recipe: str = "vllm_per_block", sample: Optional[dict] = None) -> dict:
        """This rank's per-block digests of every parameter (merge the ranks with `engine_document`)."""
        rank, layout = vllm_rank()
        return rank_digests(model_parameters(self._refit_verify_model()), recipe, sample, rank, layout)

    def refit_verify_dump(self, folder: str) -> str:
        """Write this rank's parameters to `<folder>/<rank label>.safetensors`; returns the path.

        The folder is a dump `refit-verify digest` reads (one file per rank). Copies this rank's
        parameters to host memory: use it to inspect a failure, not every step.
        """
        rank, _ = vllm_rank()
        return str(write_rank_dump(model_parameters(self._refit_verify_model()), folder, rank))
