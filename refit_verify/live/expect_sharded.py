"""`expect` for a sharded engine (tp/ep/pp > 1): what each rank should hold, taken from the sharded
reference engine (vLLM 0.33's slicing of FP8 codes and block scales, kv-head replication, experts per
rank) after a correct FP8-before refit of the trainer's BF16 checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from refit_verify.errors import BadInputError
from refit_verify.fp8 import get_recipe
from refit_verify.layout import Layout
from refit_verify.live.fileformat import digest_document

# findings that leave a rank without the bytes a correct refit would give: no expectation can be stated
UNPLACEABLE = ("placement_raised", "shape_mismatch", "shape_validation", "unknown_name", "load_failed")


def config_for(checkpoint, config: Optional[str]):
    """The model config: --config (a name or JSON path), else the checkpoint folder's config.json."""
    from refit_verify.model import load_config

    if config:
        return load_config(config)
    folder = Path(checkpoint)
    folder = folder if folder.is_dir() else folder.parent
    if not (folder / "config.json").exists():
        raise BadInputError(f"{checkpoint}: a sharded expectation needs the model config: put config.json next "
                            "to the weights or pass --config NAME|PATH")
    return load_config(str(folder / "config.json"))


def sharded_rank_params(weights: dict, cfg, recipe, layout: Layout) -> dict:
    """{Rank: {engine name: tensor}} after a correct FP8-before refit into the sharded reference engine."""
    from refit_verify.refit.sharded_run import run_sharded_refit

    r = run_sharded_refit(cfg, layout, weights, before=recipe, paths=("before",))
    bad = [f for f in r.findings if f.hazard in UNPLACEABLE]
    if bad:
        f = bad[0]
        raise BadInputError(f"the engine cannot hold this checkpoint at tp={layout.tp} ep={layout.ep} "
                            f"pp={layout.pp}: {f.hazard} on rank {f.rank}: {f.message}", f.tensor)
    state = r.states["before"]
    return {rank: state.params(rank) for rank in layout.ranks()}


def expect_sharded(weights: dict, cfg, recipe="vllm_per_block", layout: Layout = Layout(), *,
                   sample: Optional[dict] = None) -> dict:
    r = get_recipe(recipe)
    return digest_document(sharded_rank_params(weights, cfg, r.name, layout), r.name, r.block, layout,
                           "expected", sample)
