"""Both refit paths into the sharded reference engine, compared rank by rank and block by block.

The trainer side is a TrainerExporter whose FP8 quantization runs either after gathering its
tensor-parallel shards (one quantization of the whole tensor) or before (each trainer shard
quantized on its own, codes and scales concatenated), and whose pipeline stages may export
stage-local layer indices. The engine is ShardedReferenceEngine; the transport loop is the one
driver's packed in-process transport (`refit.transport.InProcessTransport`), the comparison is `compare_states`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

import torch

from refit_verify.errors import BadInputError, RefitVerifyError, TransportError
from refit_verify.fp8 import get_recipe, quantize
from refit_verify.layout import Layout, Rank
from refit_verify.model.config import ModelConfig, load_config
from refit_verify.model.weights import synthesize_weights
from refit_verify.refit.engine import EngineState
from refit_verify.refit.exporter import SCALE_SUFFIX, TrainerExporter
from refit_verify.refit.findings import Finding
from refit_verify.refit.placement_sharded import expert_range, pp_layer_range
from refit_verify.refit.run import compare_states
from refit_verify.refit.run import mismatch_findings as run_mismatch_findings
from refit_verify.refit.selection import explicit_selection, layer_index, resolve_selection
from refit_verify.refit.sharded_engine import ShardedReferenceEngine, moe_parallel
from refit_verify.refit.transport import DEFAULT_ALIGNMENT, InProcessTransport, nbytes_of

TRAINER_QUANT = ("after_gather", "before_gather")
STAGE_NAMES = ("global", "local")
_LAYER = re.compile(r"^model\.layers\.(\d+)\.")
_ROW_PARALLEL = ("o_proj.weight", "down_proj.weight")


def trainer_split(name: str, cfg: ModelConfig, tp: int) -> tuple[int, int]:
    """(dim, pieces) of the trainer's own tensor-parallel shards of an FP8 weight (1 piece: not split)."""
    if tp == 1 or ".mlp.experts." in name:
        return 0, 1  # experts: whole on the trainer's expert-parallel ranks
    if name.endswith(_ROW_PARALLEL):
        return 1, tp
    if name.endswith(("k_proj.weight", "v_proj.weight")):
        return 0, min(tp, cfg.num_key_value_heads)  # replicated kv heads gather back to one copy
    return 0, tp


def quantize_before_gather(w: torch.Tensor, recipe, pieces: int, dim: int, name: str):
    """Each trainer shard quantized on its own, then codes and scales concatenated (the all-gather)."""
    if pieces == 1:
        q = quantize(w, recipe, name=name)
        return q.data.contiguous(), q.scale_inv.contiguous()
    qs = [quantize(p.contiguous(), recipe, name=name) for p in w.chunk(pieces, dim)]
    codes = torch.cat([q.data.contiguous().view(torch.uint8) for q in qs], dim).view(torch.float8_e4m3fn)
    return codes, torch.cat([q.scale_inv for q in qs], dim).contiguous()


def stage_local_name(name: str, cfg: ModelConfig, pp: int) -> str:
    """The name a pipeline stage exports when it uses its local layer index (the collision bug)."""
    m = _LAYER.match(name)
    if not m or pp == 1:
        return name
    layer = int(m.group(1))
    for stage in range(pp):
        start, end = pp_layer_range(cfg.num_hidden_layers, stage, pp)
        if start <= layer < end:
            return f"model.layers.{layer - start}." + name[m.end():]
    return name


class ShardedTrainerExporter(TrainerExporter):
    """TrainerExporter with the trainer's own parallelism: quantize before/after gathering, stage names."""

    def __init__(self, weights, mode, quantizer, selection, cfg: ModelConfig, layout: Layout,
                 trainer_quant: str = "after_gather", stage_names: str = "global"):
        if trainer_quant not in TRAINER_QUANT or stage_names not in STAGE_NAMES:
            raise BadInputError(f"trainer_quant in {TRAINER_QUANT}, stage_names in {STAGE_NAMES}; "
                                f"got {trainer_quant!r}, {stage_names!r}")
        self.cfg, self.layout, self.trainer_quant, self.stage_names = cfg, layout, trainer_quant, stage_names
        self._recipe = get_recipe(quantizer)
        super().__init__(weights, mode, self._recipe, selection)
        if trainer_quant == "before_gather":
            self._quantize = self._quantize_sharded
            self._metadata = self._build_metadata()

    def _quantize_sharded(self, w, name=None):
        dim, pieces = trainer_split(self._source_name(name), self.cfg, self.layout.tp)
        return quantize_before_gather(w, self._recipe, pieces, dim, name)

    def _source_name(self, name: str) -> str:
        return self._global.get(name, name)

    def _build_metadata(self):
        meta = super()._build_metadata()
        if self.trainer_quant == "before_gather":  # the gathered scale has a block grid per trainer shard
            for name, t in self._iter_source():
                if name in self.fp8_names:
                    dim, pieces = trainer_split(self._source_name(name), self.cfg, self.layout.tp)
                    meta[name + SCALE_SUFFIX] = (tuple(quantize_before_gather(
                        torch.zeros(t.shape), self._recipe, pieces, dim, name)[1].shape), torch.float32)
        return meta

    def _iter_source(self):
        self._global = getattr(self, "_global", {})
        for name, t in super()._iter_source():
            if self.stage_names == "local":
                local = stage_local_name(name, self.cfg, self.layout.pp)
                self._global[local] = name
                name = local
            yield name, t


@dataclass
class ShardedPath:
    path: str
    completed: bool
    export: dict
    transfer: dict
    findings: list
    ledger: list  # per-rank ledger summaries

    def to_dict(self) -> dict:
        return {"path": self.path, "completed": self.completed, "export": self.export, "transfer": self.transfer,
                "findings": [f.to_dict() for f in self.findings], "ledger": self.ledger}


@dataclass
class ShardedRefitResult:
    config: str
    layout: Layout
    options: dict
    paths: dict  # path -> ShardedPath
    comparisons: list  # TensorComparison per rank (experts one entry per global expert)
    findings: list
    scope: list = field(default_factory=list)  # per-layer FP8 scope audit rows
    states: dict = field(default_factory=dict, repr=False)
    engines: dict = field(default_factory=dict, repr=False)

    @property
    def bitwise_equal(self) -> bool:
        return bool(self.comparisons) and all(c.equal for c in self.comparisons) and \
            all(p.completed for p in self.paths.values())

    def hazards(self) -> set[str]:
        return {f.hazard for f in self.findings}

    def findings_of(self, hazard: str) -> list[Finding]:
        return [f for f in self.findings if f.hazard == hazard]

    def to_dict(self) -> dict:
        return {"config": self.config, "layout": self.layout.to_dict(), "options": self.options,
                "bitwise_equal": self.bitwise_equal, "paths": {k: p.to_dict() for k, p in self.paths.items()},
                "comparisons": [c.to_dict() for c in self.comparisons], "scope": self.scope,
                "findings": [f.to_dict() for f in self.findings]}


def resolve_inputs(config, weights, seed, layers):
    cfg = config if isinstance(config, ModelConfig) else load_config(config, layers=layers)
    return cfg, (synthesize_weights(cfg, seed) if weights is None else weights)


def default_bucket(weights: dict) -> int:
    """A bucket large enough for the largest tensor, as a real one must be."""
    biggest = max(nbytes_of(t.shape, t.dtype) for t in weights.values())
    return max(64 << 20, -(-biggest // DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT)


def run_sharded_refit(config, layout: Layout, weights: Optional[dict] = None, before="vllm_per_block",
                      after=None, *, seed: int = 0, layers: Optional[int] = None, selection="loader",
                      trainer_quant: str = "after_gather", stage_names: str = "global",
                      bucket_bytes: Optional[int] = None, paths=("before", "after")) -> ShardedRefitResult:
    """FP8-before and FP8-after into the sharded reference engine; per-rank bitwise comparison."""
    cfg, weights = resolve_inputs(config, weights, seed, layers)
    after = get_recipe(after or before)
    bucket_bytes = bucket_bytes or default_bucket(weights)
    options = {"trainer_quant": trainer_quant, "stage_names": stage_names, "seed": seed,
               "selection": selection if isinstance(selection, str) else repr(selection),
               "before": get_recipe(before).name, "after": after.name}
    result = ShardedRefitResult(cfg.name, layout, options, {}, [], [])
    for path in paths:
        engine = ShardedReferenceEngine(cfg, layout, recipe=after, path=path,
                                        sender_grid="per_shard" if trainer_quant == "before_gather" else "whole")
        result.paths[path] = refit_path(engine, weights, path, before, selection, trainer_quant, stage_names,
                                        bucket_bytes)
        result.states[path], result.engines[path] = engine.state(), engine
        result.findings.extend(result.paths[path].findings)
    if "before" in result.states:
        result.scope = scope_audit(result.engines["before"], result.paths["before"].export.get("fp8_names", []))
        result.findings.extend(scope_findings(result.scope))
    if "before" in result.states and "after" in result.states:
        result.comparisons = compare_sharded(result.states["before"], result.states["after"])
        result.findings.extend(mismatch_findings(result.comparisons))
    return result


def feed_inprocess(engine, items, metadata, bucket_bytes) -> dict:
    """The packed in-process transport into engine.receive, batch by batch; returns its stats."""
    tr = InProcessTransport(bucket_bytes, DEFAULT_ALIGNMENT)
    for batch in tr.transfer(items, metadata):
        engine.receive(batch)
    return tr.stats.to_dict()


def trainer_stages(weights: dict, cfg: ModelConfig, pp: int) -> list[dict]:
    """The trainer's pipeline stages: each exports its own layers (embeddings first, norm and head last)."""
    stages = [dict() for _ in range(pp)]
    for name, t in weights.items():
        layer = layer_index(name)
        if layer is None:
            stage = 0 if "embed_tokens" in name else pp - 1
        else:
            stage = next(s for s in range(pp) if layer < pp_layer_range(cfg.num_hidden_layers, s, pp)[1])
        stages[stage][name] = t
    return [s for s in stages if s]


def refit_path(engine: ShardedReferenceEngine, weights, path, before, selection, trainer_quant, stage_names,
               bucket_bytes) -> ShardedPath:
    """One refit step through the Engine protocol: each trainer stage exports and is fed in turn."""
    findings, export, transfer, completed = [], {"fp8_names": [], "payload_bytes": 0}, [], True
    try:
        sel = explicit_selection(engine.fp8_hf_names()) if selection == "loader" else resolve_selection(selection)
        exporters = [ShardedTrainerExporter(part, path, before, sel, engine.cfg, engine.layout, trainer_quant,
                                            stage_names) for part in trainer_stages(weights, engine.cfg, engine.layout.pp)]
        metadata: dict = {}
        for ex in exporters:
            metadata.update(ex.metadata())
            summary = ex.summary()
            export["fp8_names"] += [ex._source_name(n) for n in summary.fp8_names]
            export["payload_bytes"] += summary.payload_bytes
        engine.begin_refit(metadata)
        for ex in exporters:  # one broadcast group per trainer stage, as stage-wise refits send
            transfer.append(feed_inprocess(engine, ex, ex.metadata(), bucket_bytes))
    except TransportError as exc:
        completed = False
        findings.append(Finding("transport", exc.tensor or "<transport>", str(exc), path=path))
    except RefitVerifyError as exc:
        completed = False
        findings.append(Finding("load_failed", getattr(exc, "tensor", None) or "<export>", str(exc), path=path))
    engine.finish_refit()
    ledger = [s.ledger_summary() for s in engine.ranks.values()]
    return ShardedPath(path, completed, export, {"stages": transfer}, findings + engine.state().findings, ledger)


def scope_audit(engine: ShardedReferenceEngine, trainer_fp8) -> list[dict]:
    """Per decoder layer: names the trainer quantizes vs names the engine keeps in FP8 (any rank)."""
    engine_fp8, trainer_fp8 = engine.fp8_hf_names(), set(trainer_fp8)
    rows: dict = {}
    for name in engine_fp8 | trainer_fp8:
        layer = layer_index(name)
        row = rows.setdefault(layer, {"layer": layer, "trainer_only": [], "engine_only": [], "both": 0})
        if name in engine_fp8 and name in trainer_fp8:
            row["both"] += 1
        else:
            row["trainer_only" if name in trainer_fp8 else "engine_only"].append(name)
    return [rows[k] for k in sorted(rows, key=lambda x: -1 if x is None else x)]


def scope_findings(scope: list[dict]) -> list[Finding]:
    out = []
    for row in scope:
        for name in sorted(row["trainer_only"]):
            out.append(Finding("selection_mismatch", name, f"layer {row['layer']}: the trainer quantizes it, no engine "
                               "rank keeps it in FP8", path="before", detail={"layer": row["layer"]}))
        for name in sorted(row["engine_only"]):
            out.append(Finding("selection_mismatch", name, f"layer {row['layer']}: an engine rank keeps it in FP8, "
                               "the trainer sends it unquantized", path="before", detail={"layer": row["layer"]}))
    return out


def expert_view(state: EngineState) -> EngineState:
    """FusedMoE [E_local, ...] parameters as one 2-D entry per global expert, for the bitwise comparison."""
    ranks = {}
    for rank, params in state.ranks.items():
        out = {}
        for name, t in params.items():
            if ".mlp.experts.w" not in name or t.dim() != 3:
                out[name] = t
                continue
            start = first_expert(state, rank)
            stem, suffix = name.rsplit(".", 1)
            for j in range(t.shape[0]):
                out[f"{stem}.{start + j}.{suffix}"] = t[j]
        ranks[rank] = out
    return EngineState(state.layout, ranks, state.findings, state.meta)


def first_expert(state: EngineState, rank: Rank) -> int:
    _, _, ep_size, ep_rank = moe_parallel(state.layout, rank)
    return expert_range(state.meta["num_experts"], ep_size, ep_rank)[0]


def compare_sharded(a: EngineState, b: EngineState) -> list:
    return compare_states(expert_view(a), expert_view(b))


def mismatch_findings(comparisons) -> list[Finding]:
    """The driver's bitwise_mismatch findings, with the rank on the finding itself."""
    out = run_mismatch_findings(comparisons)
    for f in out:
        f.rank = f.detail.get("rank", "")
    return out



def snapshot(state: EngineState) -> EngineState:
    return EngineState(state.layout, {r: {n: t.detach().clone() for n, t in p.items()} for r, p in state.ranks.items()},
                       list(state.findings), dict(state.meta))


def refit_invariants(config, layout: Layout, *, seed: int = 0, layers: Optional[int] = None, before="vllm_per_block",
                     path: str = "before", trainer_quant: str = "after_gather") -> list[Finding]:
    """Refit A, then B, then A again into one engine: the bytes must return to A's (idempotency) and no
    parameter may change storage (CUDA graphs hold the old pointer). Findings name tensor and rank."""
    cfg, weights_a = resolve_inputs(config, None, seed, layers)
    weights_b = synthesize_weights(cfg, seed + 1)
    engine = ShardedReferenceEngine(cfg, layout, recipe=before, path=path,
                                    sender_grid="per_shard" if trainer_quant == "before_gather" else "whole")
    ptrs = engine.data_ptrs()
    states = []
    for weights in (weights_a, weights_b, weights_a):
        refit_path(engine, weights, path, before, "loader", trainer_quant, "global", default_bucket(weights))
        states.append(snapshot(engine.state()))
    out = []
    for c in compare_sharded(states[0], states[2]):
        if not c.equal:
            out.append(Finding("not_idempotent", c.tensor, f"refit A -> B -> A differs from refit A: "
                               f"{c.n_code_mismatch} codes, {c.n_scale_mismatch} scales", path=path, rank=c.rank))
    moved = {k: v for k, v in engine.data_ptrs().items() if ptrs.get(k) != v}
    for (label, name) in sorted(moved):
        out.append(Finding("storage_replaced", name, "data_ptr changed by the refit: a captured CUDA graph would "
                           "keep reading the old storage", path=path, rank=label))
    return out
