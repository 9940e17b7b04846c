"""`expect` for a sharded engine (tp/ep/pp > 1): what each rank should hold, taken from the sharded
reference engine (vLLM 0.33's slicing of FP8 codes and block scales, kv-head replication, experts per
rank, layers per pipeline stage) after a correct FP8-before refit of the trainer's tensors.

`ShardedSink` is fed what the trainer sends, bucket by bucket: BF16 weights the engine keeps in FP8
are quantized whole with the recipe (as an FP8-before trainer does), an FP8-before payload (`name`
in FP8 with `name_scale_inv`) is taken as sent, everything else as is. Each rank takes its part with
vLLM's own narrow rules. `live.expect.Expectation` (and so `expect` and the CLI's `expect --tp/--ep/--pp`)
uses it whenever the layout has more than one rank; it is the only copy of that path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from refit_verify.errors import BadInputError
from refit_verify.fp8 import quantize
from refit_verify.layout import Layout
from refit_verify.refit.loader import FP8_DTYPES, SCALE_SUFFIX

# findings that leave a rank without the bytes a correct refit would give: no expectation can be stated
UNPLACEABLE = ("placement_raised", "shape_mismatch", "shape_validation", "unknown_name", "load_failed")


def model_config(config):
    """A ModelConfig from a ModelConfig, a shipped config name, a config.json path, a dict of HF
    config.json keys, or an HF `PretrainedConfig` (anything with `to_dict()`, e.g. `model.config`)."""
    from refit_verify.model.config import ModelConfig, from_dict, load_config

    if isinstance(config, ModelConfig):
        return config
    if isinstance(config, (str, Path)):
        return load_config(str(config))
    raw = config.to_dict() if hasattr(config, "to_dict") else config
    if not isinstance(raw, dict) or "num_attention_heads" not in raw or "hidden_size" not in raw:
        raise BadInputError(f"config: expected a ModelConfig, a config name or path, or HF config keys "
                            f"(num_attention_heads, hidden_size, ...); got {type(config).__name__}")
    return from_dict(raw, default_name=raw.get("model_type", "model"))


def config_for(checkpoint, config: Optional[str]):
    """The CLI's model config: --config (a name or JSON path), else the checkpoint folder's config.json."""
    if config:
        return model_config(config)
    folder = Path(checkpoint)
    folder = folder if folder.is_dir() else folder.parent
    if not (folder / "config.json").exists():
        raise BadInputError(f"{checkpoint}: a sharded expectation needs the model config: put config.json next "
                            "to the weights or pass --config NAME|PATH")
    return model_config(folder / "config.json")


class ShardedSink:
    """The sharded reference engine as the target of an expectation: `receive` per bucket, then
    `rank_params()` -> {Rank: {engine name: tensor}}. It holds every rank's parameters (one copy of
    the model in the engine's dtypes) until the document is made."""

    def __init__(self, cfg, recipe, layout: Layout):
        from refit_verify.refit.sharded_engine import ShardedReferenceEngine

        self.recipe, self.layout = recipe, layout
        self.engine = ShardedReferenceEngine(cfg, layout, recipe=recipe, path="expect")
        self.fp8_names = self.engine.fp8_hf_names()
        self.engine.begin_refit()

    def _as_sent(self, name, t):
        """What an FP8-before trainer sends for this tensor: [(name, tensor)] (weight and its scale)."""
        if t.dtype in FP8_DTYPES or name.endswith(SCALE_SUFFIX) or name not in self.fp8_names:
            return [(name, t)]
        q = quantize(t, self.recipe, name=name)
        return [(name, q.data.contiguous()), (name + SCALE_SUFFIX, q.scale_inv.contiguous())]

    def receive(self, items) -> None:
        self.engine.receive(pair for name, t in items for pair in self._as_sent(name, t))

    def rank_params(self) -> dict:
        self.engine.finish_refit()
        state = self.engine.state()
        bad = [f for f in state.findings if f.hazard in UNPLACEABLE]
        if bad:
            f = bad[0]
            raise BadInputError(f"the engine cannot hold these weights at tp={self.layout.tp} ep={self.layout.ep} "
                                f"pp={self.layout.pp}: {f.hazard} on rank {f.rank}: {f.message}", f.tensor)
        return {rank: self._written(rank, params) for rank, params in state.ranks.items()}

    def _written(self, rank, params: dict) -> dict:
        """The rank's parameters the trainer wrote: one it never sent is left out (as `expect` leaves out
        what it was not given); one written only in part (a fused shard, a scale missing) is an error."""
        store = self.engine.ranks[rank]
        parts: dict = {}  # weight name -> [written?] over its parts and its scale's parts
        for key in store.expected:
            pname = key[0]
            base = pname[: -len(SCALE_SUFFIX)] if pname.endswith(SCALE_SUFFIX) else pname
            parts.setdefault(base, []).append(bool(store.writes.get(key)))
        out = dict(params)
        for base, written in sorted(parts.items()):
            if all(written):
                continue
            if any(written):
                raise BadInputError(f"rank {rank.label}: only part of this parameter was given (a fused shard or "
                                    "an FP8 weight's scale is missing)", base)
            out.pop(base, None)
            out.pop(base + SCALE_SUFFIX, None)
        return out
