"""Trainer side: what the engine should hold after a correct refit of these HF-named BF16 weights.

`engine_tensors` turns the trainer's {HF name: BF16 tensor} into the engine's {name: tensor} for one
unsharded engine: q/k/v fused into `qkv_proj` and gate/up into `gate_up_proj` (rows in that order),
each shard quantized on its own with the recipe (as both refit paths do: FP8-before quantizes each
HF weight on the trainer, quantize-on-load quantizes each arriving shard), its scale placed by
vLLM's rule (refit.placement.place_scale_vllm, into a scale pre-filled as vLLM pre-fills it).
Norms, embeddings, lm_head and MoE routers stay as sent.

`expect` then digests every rank (live.fileformat). One rank: the identity. More than one: given the
model config, the sharded reference engine places each tensor on its ranks as vLLM does
(live.expect_sharded, also what the CLI's `expect --tp/--ep/--pp` runs); a caller's own `Placement`
({engine name: tensor} -> {Rank: {engine name: tensor}}) may replace it.
"""

from __future__ import annotations

import re
from typing import Callable, Mapping, Optional

import torch

from refit_verify.errors import BadInputError, LoadError
from refit_verify.fp8 import get_recipe, quantize
from refit_verify.fp8.format import FP32_FILL
from refit_verify.layout import SINGLE, Layout, Rank
from refit_verify.live.fileformat import SCALE_SUFFIX, digest_document, digest_rank
from refit_verify.refit.placement import place_scale_vllm
from refit_verify.refit.selection import ROUTER_PATTERNS, heuristic_is_fp8, matches_pattern

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
# (HF suffix of a shard, engine suffix of the fused parameter, shard position)
FUSED_SHARDS = {
    "self_attn.q_proj": ("self_attn.qkv_proj", 0), "self_attn.k_proj": ("self_attn.qkv_proj", 1),
    "self_attn.v_proj": ("self_attn.qkv_proj", 2),
    "mlp.gate_proj": ("mlp.gate_up_proj", 0), "mlp.up_proj": ("mlp.gate_up_proj", 1),
}
_FUSED_WIDTH = {"self_attn.qkv_proj": 3, "mlp.gate_up_proj": 2}
_LAYER_LINEAR = re.compile(r"^(.*\.layers\.\d+)\.(self_attn\.[a-z_]+|mlp\.[a-z_]+)\.weight$")

# {engine name: tensor} of the whole model -> {Rank: {engine name: tensor}}
Placement = Callable[[dict, Layout], dict]


def engine_fp8(name: str, shape) -> bool:
    """Decoder linears are FP8 in the engine; norms, embeddings, lm_head and routers are not."""
    return (heuristic_is_fp8(name, shape) and _LAYER_LINEAR.match(name) is not None
            and not any(matches_pattern(name, p) for p in ROUTER_PATTERNS))


def _fuse_target(name: str):
    m = _LAYER_LINEAR.match(name)
    if m and m.group(2) in FUSED_SHARDS:
        suffix, pos = FUSED_SHARDS[m.group(2)]
        return f"{m.group(1)}.{suffix}", pos
    return None


def _fused_parameter(prefix: str, shards: list, block, fp8: bool):
    """(weight, scale or None) of a fused engine parameter from its shards' (data, scale) in order."""
    weight = torch.cat([d for d, _ in shards], 0)
    if not fp8:
        return weight, None
    kb = shards[0][1].shape[1]
    scale = torch.full((-(-weight.shape[0] // block[0]), kb), FP32_FILL, dtype=torch.float32, device=weight.device)
    offset = 0
    for i, (d, s) in enumerate(shards):
        try:
            place_scale_vllm(scale, s, offset, d.shape[0], block[0], prefix + ".weight_scale_inv", i)
        except LoadError as exc:
            raise BadInputError(f"the engine cannot place this shard's scale: {exc}",
                                prefix + ".weight_scale_inv") from exc
        offset += d.shape[0]
    return weight, scale


def engine_tensors(named_tensors: Mapping[str, torch.Tensor], recipe="vllm_per_block",
                   fp8: Optional[Callable[[str, tuple], bool]] = None) -> dict:
    """{engine name: tensor} an unsharded engine holds after a correct refit of `named_tensors`.

    `named_tensors` holds the trainer's BF16 weights, or what an FP8-before refit sends (`name` in FP8
    with `name_scale_inv`): those pairs are taken as sent, not quantized again, so the check then costs
    only the digest and covers transport and loading (not the trainer's quantizer)."""
    r = get_recipe(recipe)
    is_fp8 = fp8 or engine_fp8
    out, groups = {}, {}
    for name, t in named_tensors.items():
        if name.endswith(SCALE_SUFFIX):
            continue
        sent_scale = named_tensors.get(name + SCALE_SUFFIX)
        if sent_scale is not None and t.dtype in FP8_DTYPES:  # FP8-before payload: quantized already
            quant, data, scale = True, t, sent_scale
        elif is_fp8(name, tuple(t.shape)):
            q = quantize(t, r, name=name)
            quant, data, scale = True, q.data.contiguous(), q.scale_inv.contiguous()
        else:
            quant, data, scale = False, t, None
        target = _fuse_target(name)
        if target is None:
            out[name] = data
            if scale is not None:
                out[name + SCALE_SUFFIX] = scale
            continue
        groups.setdefault(target[0], {})[target[1]] = (name, data, scale, quant)
    for prefix, parts in sorted(groups.items()):
        width = _FUSED_WIDTH[".".join(prefix.split(".")[-2:])]
        if sorted(parts) != list(range(width)):
            have = [parts[i][0] for i in sorted(parts)]
            raise BadInputError(f"fused parameter needs {width} shards, the checkpoint has {have}",
                                prefix + ".weight")
        kinds = {parts[i][3] for i in parts}
        if len(kinds) != 1:
            raise BadInputError("shards of one fused parameter are partly FP8, partly not", prefix + ".weight")
        shards = [(parts[i][1], parts[i][2]) for i in range(width)]
        weight, scale = _fused_parameter(prefix, shards, r.block, kinds.pop())
        out[prefix + ".weight"] = weight
        if scale is not None:
            out[prefix + ".weight_scale_inv"] = scale
    return out


def single_placement(params: dict, layout: Layout) -> dict:
    return {Rank(): params}


def _sharded_sink(config, recipe, layout: Layout):
    from refit_verify.live.expect_sharded import ShardedSink, model_config

    if config is None:
        raise BadInputError(f"layout tp={layout.tp} ep={layout.ep} pp={layout.pp}: what each rank holds depends on "
                            "the model's heads and experts: pass config= (a ModelConfig, config name or config.json "
                            "path, or the HF model's config) or a placement=")
    return ShardedSink(model_config(config), recipe, layout)


class Expectation:
    """`expect` fed bucket by bucket, as a refit streams: each engine parameter is digested (and its
    tensors released) as soon as everything it is built from has arrived: all shards of a fused
    parameter, and the scale of an FP8-before weight, which may travel in a later bucket.

    With more than one rank and no `placement`, `config` (the model's) is required: the sharded
    reference engine then takes each bucket (it holds every rank's parameters until `document()`)."""

    def __init__(self, recipe="vllm_per_block", layout: Layout = SINGLE, *, placement: Optional[Placement] = None,
                 sample: Optional[dict] = None, fp8: Optional[Callable[[str, tuple], bool]] = None, config=None):
        self.recipe, self.layout, self.sample, self.fp8 = get_recipe(recipe), layout, sample, fp8
        self.placement = placement or single_placement
        self.sharded = None if placement or layout.is_single else _sharded_sink(config, self.recipe, layout)
        self.held: dict = {}
        self.ranks: dict = {}

    def _waits(self, name: str) -> bool:
        t = self.held.get(name)
        return t is None or (t.dtype in FP8_DTYPES and name + SCALE_SUFFIX not in self.held)

    def _ready_groups(self) -> list:
        groups, seen = [], set()
        for name in list(self.held):
            if name.endswith(SCALE_SUFFIX) or name in seen:
                continue
            target = _fuse_target(name)
            if target is None:
                members = [name]
            else:
                width = _FUSED_WIDTH[".".join(target[0].split(".")[-2:])]
                members = [n for n in self.held if not n.endswith(SCALE_SUFFIX) and (_fuse_target(n) or ("",))[0]
                           == target[0]]
                if len(members) < width:
                    continue
            seen.update(members)
            if not any(self._waits(n) for n in members):
                groups.append(members)
        return groups

    def add(self, named_tensors) -> "Expectation":
        items = named_tensors.items() if hasattr(named_tensors, "items") else named_tensors
        if self.sharded is not None:
            self.sharded.receive(items)
            return self
        self.held.update(items)
        for members in self._ready_groups():
            part = {}
            for n in members:
                part[n] = self.held.pop(n)
                if n + SCALE_SUFFIX in self.held:
                    part[n + SCALE_SUFFIX] = self.held.pop(n + SCALE_SUFFIX)
            for rank, params in self.placement(engine_tensors(part, self.recipe, self.fp8), self.layout).items():
                self.ranks.setdefault(rank, {}).update(digest_rank(params, self.recipe.block, rank, self.sample))
        return self

    def document(self) -> dict:
        if self.sharded is not None:
            for rank, params in self.sharded.rank_params().items():
                self.ranks[rank] = digest_rank(params, self.recipe.block, rank, self.sample)
        if self.held:
            raise BadInputError(f"incomplete: {sorted(self.held)[:5]} still wait for the rest of their fused "
                                "parameter or for their scale")
        doc = digest_document({}, self.recipe.name, self.recipe.block, self.layout, "expected", self.sample)
        doc["ranks"] = {r.label: dict(sorted(p.items())) for r, p in sorted(self.ranks.items(), key=lambda x: x[0].label)}
        return doc


def expect(named_tensors: Mapping[str, torch.Tensor], recipe="vllm_per_block", layout: Layout = SINGLE, *,
           config=None, placement: Optional[Placement] = None, sample: Optional[dict] = None,
           fp8: Optional[Callable[[str, tuple], bool]] = None) -> dict:
    """The expected digest document for the trainer's HF-named BF16 weights or FP8-before payload
    (compare with the engine's); `Expectation` does the same bucket by bucket. A layout of more than
    one rank needs `config` (the model's: ModelConfig, name, config.json path or HF config) or a
    `placement`."""
    return Expectation(recipe, layout, placement=placement, sample=sample, fp8=fp8,
                       config=config).add(named_tensors).document()
