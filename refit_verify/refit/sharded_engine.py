"""The sharded reference engine: tensor-, expert- and pipeline-parallel, as an Engine adapter.

Every rank of a `Layout` holds exactly the parameters vLLM 0.33 would hold there (rules in
refit/placement_sharded.py): column/row slices of FP8 codes and block scales, fused qkv (kv heads
replicated when tp exceeds them) and gate_up, FusedMoE `w13_weight`/`w2_weight` and their
`*_scale_inv` per local expert (scales created as ones, linear scales as the float32-min fill),
and only the layers of its pipeline stage under their global names. Each rank is sent the whole
(gathered) stream, as a broadcast refit does, and takes its part with vLLM's own narrow rules, so
non-aligned shards go wrong the way vLLM does (raise or silent). Every write goes through a ledger
keyed by engine parameter and part (shard or global expert): never-written and written-twice
parts, placeholder scales and repeated source names become findings naming tensor and rank.

Layout mapping: `tp` is vLLM's tensor-parallel size; `ep > 1` is vLLM's data-parallel size with
expert parallelism on, so experts are split whole over the `tp * ep` ranks of a stage (flat EP
rank `ep_index * tp + tp_index`); with `ep == 1` each expert is tensor-sliced over `tp`.
Embeddings and lm_head (BF16) are kept whole on their stage (vLLM pads and vocab-slices them).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Iterable, Optional

import torch

from refit_verify.errors import LoadShapeError, RefitVerifyError, ShardPlacementError
from refit_verify.fp8 import get_recipe, quantize
from refit_verify.fp8.format import FP32_FILL
from refit_verify.layout import Layout, Rank
from refit_verify.model.config import LinearSpec, ModelConfig, ShardSpec
from refit_verify.refit.engine import EngineState
from refit_verify.refit.findings import Finding
from refit_verify.refit.loader import FP8_DTYPES, SCALE_SUFFIX, EngineLinear
from refit_verify.refit.placement import ceil_div
from refit_verify.refit.placement_sharded import (
    COLUMN, ROW, check_shape, expert_range, moe_validation, narrow_checked, pp_layer_range, qkv_partition,
    rank_slice, row_parallel_validation,
)

EXPERT_SHARDS = {"gate_proj": "w1", "up_proj": "w3", "down_proj": "w2"}


@dataclass(frozen=True)
class LinearRoute:
    prefix: str
    index: int  # shard index in the engine linear
    dim: Optional[int]  # COLUMN, ROW or None (replicated)
    shard_rank: int  # which slice of the HF tensor this rank reads
    local: int  # rows (COLUMN) or columns (ROW) per rank


@dataclass(frozen=True)
class ExpertRoute:
    layer: int
    local: int  # local expert index on this rank
    expert: int  # global expert id
    wid: str  # "w1" | "w3" | "w2"


def linear_kind(spec: LinearSpec) -> Optional[int]:
    if spec.engine_suffix.endswith(("o_proj", "down_proj")):
        return ROW
    if spec.engine_suffix.endswith(("qkv_proj", "gate_up_proj")):
        return COLUMN
    return None  # DeepSeek fused_qkv_a and other merged replicated linears


def moe_parallel(layout: Layout, rank: Rank) -> tuple[int, int, int, int]:
    """(moe tp size, moe tp rank, ep size, ep rank) of FusedMoE on this rank."""
    if layout.ep > 1:
        return 1, 0, layout.tp * layout.ep, rank.ep * layout.tp + rank.tp
    return layout.tp, rank.tp, 1, 0


class RankStore:
    """One rank's parameters, routes from HF names and the write ledger."""

    def __init__(self, cfg: ModelConfig, layout: Layout, rank: Rank, block=(128, 128)):
        self.cfg, self.layout, self.rank, self.block = cfg, layout, rank, tuple(block)
        self.label = rank.label
        self.sender_grid = "whole"  # how the sender's scales were computed; only the misplacement check reads it
        self.linears: dict[str, EngineLinear] = {}
        self.experts: dict[str, torch.Tensor] = {}  # FusedMoE parameters, by engine name
        self.plain: dict[str, torch.Tensor] = {}
        self.routes: dict[str, object] = {}  # HF name -> LinearRoute | ExpertRoute | plain name
        self.expected: set = set()  # ledger keys (engine param, part)
        self.writes: dict = defaultdict(list)  # ledger key -> [source names]
        self.arrived: dict = {}  # (prefix, shard index) -> (scale as sent, its route or None when rank-local)
        self.qcache: dict = {}  # shared by the ranks loading one arrived tensor (ShardedReferenceEngine.receive)
        self.validation: list[tuple[str, str]] = []  # vLLM create-time errors: (tensor, message)
        self.start, self.end = pp_layer_range(cfg.num_hidden_layers, rank.pp, layout.pp)
        for layer in range(self.start, self.end):
            self._build_layer(layer)
        self._build_plain()

    # -- construction ----------------------------------------------------------------------------
    def _build_layer(self, layer: int) -> None:
        qkv = qkv_partition(self.cfg.num_attention_heads, self.cfg.num_key_value_heads, self.layout.tp)
        fp8 = layer not in self.cfg.bf16_layers
        for spec in self.cfg.layer_linears(layer):
            kind = linear_kind(spec)
            local, routes = self._local_spec(spec, kind, qkv)
            prefix = f"model.layers.{layer}.{spec.engine_suffix}"
            self.linears[prefix] = EngineLinear.create(prefix, local, fp8, "vllm", self.block)
            for i, (s, (shard_rank, size)) in enumerate(zip(spec.shards, routes)):
                self.routes[f"model.layers.{layer}.{s.hf_suffix}.weight"] = LinearRoute(prefix, i, kind, shard_rank, size)
                self.expected.add((prefix + ".weight", s.shard_id))
                if fp8:
                    self.expected.add((prefix + ".weight" + SCALE_SUFFIX, s.shard_id))
            msg = row_parallel_validation(local.in_features, self.layout.tp, self.block[1]) if kind == ROW else None
            if fp8 and msg:
                self.validation.append((prefix + ".weight", msg))
        if self.cfg.is_moe_layer(layer):
            self._build_experts(layer)

    def _local_spec(self, spec: LinearSpec, kind, qkv) -> tuple[LinearSpec, list[tuple[int, int]]]:
        tp, t = self.layout.tp, self.rank.tp
        if kind is None or tp == 1:
            return spec, [(0, s.rows if kind != ROW else spec.in_features) for s in spec.shards]
        if kind == ROW:
            k = spec.in_features // tp
            return replace(spec, in_features=k), [(t, k)]
        shards, routes = [], []
        for s in spec.shards:
            if s.shard_id in ("k", "v"):
                head = self.cfg.head_dim if s.shard_id == "k" else (self.cfg.v_head_dim or self.cfg.head_dim)
                rows = qkv.num_kv_heads * head
            else:
                rows = s.rows // tp
            shards.append(ShardSpec(s.hf_suffix, s.shard_id, rows))
            routes.append((qkv.shard_rank(s.shard_id, t) if s.shard_id in ("q", "k", "v") else t, rows))
        return replace(spec, shards=tuple(shards)), routes

    def _build_experts(self, layer: int) -> None:
        m, h, (bn, bk) = self.cfg.moe, self.cfg.hidden_size, self.block
        moe_tp, _, ep_size, ep_rank = moe_parallel(self.layout, self.rank)
        first, count = expert_range(m.num_experts, ep_size, ep_rank)
        i = m.moe_intermediate_size // moe_tp
        p = f"model.layers.{layer}.mlp.experts."
        # Fp8MoEMethod.create_weights: codes empty, block scales torch.ones (not the float32-min fill)
        self.experts[p + "w13_weight"] = torch.zeros(count, 2 * i, h, dtype=torch.float8_e4m3fn)
        self.experts[p + "w2_weight"] = torch.zeros(count, h, i, dtype=torch.float8_e4m3fn)
        self.experts[p + "w13_weight" + SCALE_SUFFIX] = torch.ones(count, 2 * ceil_div(i, bn), ceil_div(h, bk))
        self.experts[p + "w2_weight" + SCALE_SUFFIX] = torch.ones(count, ceil_div(h, bn), ceil_div(i, bk))
        msg = moe_validation(i, moe_tp, self.block)
        if msg:
            self.validation.append((p + "w13_weight", msg))
        for local, e in enumerate(range(first, first + count)):
            for hf, wid in EXPERT_SHARDS.items():
                self.routes[f"model.layers.{layer}.mlp.experts.{e}.{hf}.weight"] = ExpertRoute(layer, local, e, wid)
                stem = "w2_weight" if wid == "w2" else "w13_weight"
                self.expected.add((p + stem, (e, wid)))
                self.expected.add((p + stem + SCALE_SUFFIX, (e, wid)))

    def _build_plain(self) -> None:
        from refit_verify.refit.selection import layer_index

        first, last = self.rank.pp == 0, self.rank.pp == self.layout.pp - 1
        for name, shape in self.cfg.hf_shapes().items():
            if name in self.routes:
                continue
            layer = layer_index(name)
            own = (self.start <= layer < self.end) if layer is not None else \
                (first if "embed_tokens" in name else last)
            if own and ".mlp.experts." not in name:
                self.plain[name] = torch.zeros(shape, dtype=torch.bfloat16)
                self.routes[name] = name
                self.expected.add((name, None))

    # -- what the rank is ----------------------------------------------------------------------
    def fp8_hf_names(self) -> set[str]:
        out = set()
        for hf, r in self.routes.items():
            if isinstance(r, ExpertRoute) or (isinstance(r, LinearRoute) and self.linears[r.prefix].fp8):
                out.add(hf)
        return out

    def parameters(self) -> dict[str, torch.Tensor]:
        out = dict(self.plain)
        for lin in self.linears.values():
            out.update(lin.parameters())
        out.update(self.experts)
        return out

    # -- loading -------------------------------------------------------------------------------
    def load(self, name: str, t: torch.Tensor, pre: bool, recipe) -> list[tuple[str, str, str]]:
        """Load one arrived tensor; returns notes (hazard, tensor, message) for the engine to record."""
        is_scale = name.endswith(SCALE_SUFFIX)
        base = name[: -len(SCALE_SUFFIX)] if is_scale else name
        route = self.routes[base]
        if isinstance(route, str):
            return self._load_plain(name, t, is_scale)
        if isinstance(route, ExpertRoute):
            return self._load_expert(route, name, t, is_scale, pre, recipe)
        return self._load_linear(route, name, t, is_scale, pre, recipe)

    def _quantize(self, piece, recipe, name, where):
        # ranks holding the same slice of one arrived tensor (expert-parallel replicas of a dense layer)
        # quantize the same bytes: computed once (the quantizer is deterministic), not once per rank
        key = (name,) + where
        if key not in self.qcache:
            self.qcache[key] = quantize(piece.contiguous(), recipe, name=name)
        return self.qcache[key]

    def _write(self, key, source: str) -> None:
        self.writes[key].append(source)

    def _load_plain(self, name, t, is_scale):
        if is_scale:
            return [("unknown_name", name, f"the engine keeps {name[:-len(SCALE_SUFFIX)]} in BF16 and has no scale for it")]
        notes = [("fp8_into_bf16", name, f"{t.dtype} codes cast into a BF16 parameter")] if t.dtype in FP8_DTYPES else []
        check_shape(t, self.plain[name].shape, name)
        self.plain[name].copy_(t)
        self._write((name, None), name)
        return notes

    def _slice(self, route: LinearRoute, t, is_scale, name, sid):
        if route.dim is None:
            return t
        block = self.block[0] if route.dim == COLUMN else self.block[1]
        return rank_slice(t, route.dim, route.shard_rank, route.local, block if is_scale else 1, is_scale, name, sid)

    def _load_linear(self, route: LinearRoute, name, t, is_scale, pre, recipe):
        lin, i = self.linears[route.prefix], route.index
        sid = lin.shard_id(i)
        if not lin.fp8:
            if is_scale:
                return [("unknown_name", name, f"the engine keeps {route.prefix}.weight in BF16: no scale")]
            lin.load_weight(i, self._slice(route, t, False, name, sid).to(torch.bfloat16), name)
            self._write((route.prefix + ".weight", sid), name)
            return [("fp8_into_bf16", name, f"{t.dtype} codes cast into BF16 {route.prefix}.weight")] \
                if t.dtype in FP8_DTYPES else []
        if is_scale:
            lin.load_scale(i, self._slice(route, t, True, name, sid), name)
            self._write((route.prefix + ".weight" + SCALE_SUFFIX, sid), name)
            self.arrived[(route.prefix, i)] = (t.detach().clone(), route)  # t may view a reused transport bucket
            return []
        piece = self._slice(route, t, False, name, sid)
        notes = []
        if pre and t.dtype not in FP8_DTYPES:
            notes.append(("bf16_into_fp8", name, f"{t.dtype} data in a pre-quantized refit cast into FP8 without a scale"))
        if pre or t.dtype in FP8_DTYPES:
            lin.load_weight(i, piece, name)
            self._write((route.prefix + ".weight", sid), name)
            return notes
        q = self._quantize(piece, recipe, name, (route.dim, route.shard_rank, route.local))  # FP8-after: own slice
        lin.load_weight(i, q.data, name)
        lin.load_scale(i, q.scale_inv, name + SCALE_SUFFIX)
        self.arrived[(route.prefix, i)] = (q.scale_inv, None)
        self._write((route.prefix + ".weight", sid), name)
        self._write((route.prefix + ".weight" + SCALE_SUFFIX, sid), name)
        return notes

    def _expert_dst(self, route: ExpertRoute, is_scale: bool) -> tuple[str, torch.Tensor]:
        stem = "w2_weight" if route.wid == "w2" else "w13_weight"
        pname = f"model.layers.{route.layer}.mlp.experts.{stem}" + (SCALE_SUFFIX if is_scale else "")
        dst = self.experts[pname][route.local]
        if route.wid != "w2":
            half = dst.shape[0] // 2
            dst = dst.narrow(0, 0 if route.wid == "w1" else half, half)
        return pname, dst

    def _expert_piece(self, route: ExpertRoute, t, name):
        # routed_experts._load_w13/_load_w2: the per-rank size is the arrived size // moe tp size
        moe_tp, moe_rank, _, _ = moe_parallel(self.layout, self.rank)
        dim = 1 if route.wid == "w2" else 0
        per_rank = t.shape[dim] // moe_tp
        return narrow_checked(t, dim, per_rank * moe_rank, per_rank, name, route.wid)

    def _load_expert(self, route: ExpertRoute, name, t, is_scale, pre, recipe):
        part = (route.expert, route.wid)
        if is_scale or pre or t.dtype in FP8_DTYPES:
            pname, dst = self._expert_dst(route, is_scale)
            piece = self._expert_piece(route, t, name)
            check_shape(piece, dst.shape, name, route.wid)
            dst.copy_(piece)
            self._write((pname, part), name)
            if pre and not is_scale and t.dtype not in FP8_DTYPES:
                return [("bf16_into_fp8", name, f"{t.dtype} data in a pre-quantized refit cast into FP8 without a scale")]
            return []
        q = self._quantize(self._expert_piece(route, t, name), recipe, name, ("expert",))
        for is_s, src in ((False, q.data), (True, q.scale_inv)):
            pname, dst = self._expert_dst(route, is_s)
            check_shape(src, dst.shape, name + (SCALE_SUFFIX if is_s else ""), route.wid)
            dst.copy_(src)
            self._write((pname, part), name)
        return []

    # -- the ledger ----------------------------------------------------------------------------
    def ledger_findings(self, path: str) -> list[Finding]:
        out = []
        for key in sorted(self.expected, key=repr):
            srcs = self.writes.get(key, [])
            pname, part = key
            if not srcs:
                ones = pname.endswith(SCALE_SUFFIX) and pname in self.experts
                out.append(Finding("never_loaded", pname, "never written by this refit" + (
                    " (FusedMoE scales are created as ones: it silently stays 1.0)" if ones else ""),
                    path=path, shard=_part(part), rank=self.label))
            elif len(srcs) > 1:
                out.append(Finding("written_twice", pname, f"written {len(srcs)} times, from {', '.join(srcs)}",
                                   path=path, shard=_part(part), rank=self.label, detail={"sources": srcs}))
        for prefix, lin in self.linears.items():
            if lin.fp8 and bool((lin.weight_scale_inv == FP32_FILL).any()):
                rows = (lin.weight_scale_inv == FP32_FILL).any(1).nonzero().flatten().tolist()
                out.append(Finding("placeholder_scale", prefix + ".weight_scale_inv",
                                   f"scale block rows {rows} still hold the finfo(float32).min fill", path=path,
                                   rank=self.label))
        return out + self.misplaced_findings(path)

    def misplaced_findings(self, path: str) -> list[Finding]:
        """Rows dequantized with another block's scale than the one the sender computed for them (silent)."""
        out = []
        for (prefix, i), (sent, route) in sorted(self.arrived.items(), key=lambda kv: (kv[0][0], kv[0][1])):
            lin = self.linears[prefix]
            rows, k = lin.spec.shards[i].rows, lin.spec.in_features
            off = lin.offsets[i]
            got = lin.effective_row_scale()[off: off + rows]
            want = expected_scale(sent, route, rows, k, self.rank.tp, self.block, self.sender_grid)
            if want is None or want.shape != got.shape:
                continue  # the sent scale does not cover this rank's part: placement raised or shapes differ
            bad = ((got.view(torch.int32) != want.view(torch.int32)) & (got != FP32_FILL)).any(1)
            if bool(bad.any()):
                from refit_verify.refit.findings import row_ranges

                out.append(Finding("scale_misplaced", prefix + ".weight_scale_inv", f"{int(bad.sum())} of {rows} rows "
                                   "of this shard are dequantized with another block's scale (no error raised)",
                                   path=path, shard=lin.shard_id(i), rows=[(a + off, b + off) for a, b in row_ranges(bad)],
                                   rank=self.label))
        return out

    def ledger_summary(self) -> dict:
        counts = [len(self.writes.get(k, [])) for k in self.expected]
        return {"rank": self.label, "parts": len(counts), "written_once": counts.count(1),
                "never": counts.count(0), "twice_or_more": sum(c > 1 for c in counts)}


def expected_scale(sent, route, rows, k, tp_rank, block, sender_grid="whole") -> Optional[torch.Tensor]:
    """[rows, ceil(k/128)]: the block scale the sender meant for each row of this rank's part (exact).

    sender_grid "whole": the sender quantized the gathered tensor (one 128-grid over global rows);
    "per_shard": each trainer shard was quantized on its own (a grid per shard, concatenated).
    A row-parallel part whose K slice is not block aligned has no block-column answer: None.
    """
    kb = ceil_div(k, block[1])
    if route is not None and route.dim is not None and sender_grid == "per_shard":
        dim, index = (0, route.shard_rank) if route.dim == COLUMN else (1, tp_rank)
        n = ceil_div(rows if dim == 0 else k, block[dim])
        if (index + 1) * n > sent.shape[dim]:
            return None
        sent, route = sent.narrow(dim, index * n, n), None
    if route is not None and route.dim == ROW:
        if (tp_rank * k) % block[1] or (tp_rank + 1) * kb > sent.shape[1]:
            return None
        sent = sent[:, tp_rank * kb: (tp_rank + 1) * kb]
    by_row = sent.float().repeat_interleave(block[0], 0)
    lo = route.shard_rank * rows if route is not None and route.dim == COLUMN else 0
    return by_row[lo: lo + rows, :kb] if lo + rows <= by_row.shape[0] else None


def _part(part):
    if isinstance(part, tuple):
        return f"expert {part[0]} {part[1]}"
    return part


class ShardedReferenceEngine:
    """Engine adapter over every rank of a layout; receives the whole stream on each rank."""

    name = "sharded_reference"

    def __init__(self, cfg: ModelConfig, layout: Layout, *, recipe="vllm_per_block", path: str = "",
                 block=(128, 128), sender_grid: str = "whole"):
        """sender_grid: what the verifier knows of the sender's scale grid ("whole" | "per_shard"); loading
        never reads it (vLLM cannot know), the silent-misplacement check compares against it."""
        self.cfg, self.layout, self.path, self.block = cfg, layout, path, tuple(block)
        self.recipe = get_recipe(recipe)
        self.ranks = {r: RankStore(cfg, layout, r, block) for r in layout.ranks()}
        for store in self.ranks.values():
            store.sender_grid = sender_grid
        self.owners: dict[str, list[RankStore]] = defaultdict(list)
        for store in self.ranks.values():
            for hf in store.routes:
                self.owners[hf].append(store)
        self.findings: list[Finding] = []
        self._seen: dict[str, int] = {}
        self._pre = False

    def fp8_hf_names(self) -> set[str]:
        """What the engine keeps in FP8, asked of every rank (rank 0 alone misses later stages)."""
        return set().union(*(s.fp8_hf_names() for s in self.ranks.values()))

    def fp8_by_rank(self) -> dict[Rank, set]:
        return {r: s.fp8_hf_names() for r, s in self.ranks.items()}

    def begin_refit(self, metadata: Optional[dict] = None) -> None:
        self.findings, self._seen = [], {}
        for s in self.ranks.values():
            s.writes, s.arrived = defaultdict(list), {}
        self._pre = bool(metadata) and any(n.endswith(SCALE_SUFFIX) for n in metadata)

    def receive(self, batch: Iterable[tuple[str, torch.Tensor]]) -> None:
        for name, t in batch:
            self._seen[name] = self._seen.get(name, 0) + 1
            if self._seen[name] == 2:
                self._find("name_collision", name, "arrived more than once in this refit: two source tensors share "
                           "one name (stage-local layer indices?); the later one overwrites the earlier")
            base = name[: -len(SCALE_SUFFIX)] if name.endswith(SCALE_SUFFIX) else name
            owners = self.owners.get(base)
            if not owners:
                self._find("unknown_name", name, "no rank has a parameter for this name (vLLM: KeyError)")
                continue
            cache: dict = {}  # one arrived tensor: ranks holding the same slice share its quantization
            for store in owners:
                store.qcache = cache
                self._load_on(store, name, t)

    def _load_on(self, store: RankStore, name: str, t: torch.Tensor) -> None:
        try:
            for hazard, tensor, msg in store.load(name, t, self._pre, self.recipe):
                self._find(hazard, tensor, msg, rank=store.label)
        except ShardPlacementError as exc:
            self._find("placement_raised", exc.tensor or name, str(exc), rank=store.label, shard=exc.shard,
                       detail={"exception": f"{exc.cause_type}: {exc.cause_message}"})
        except LoadShapeError as exc:
            self._find("shape_mismatch", exc.tensor or name, str(exc), rank=store.label, shard=exc.shard)
        except RefitVerifyError as exc:
            self._find("load_failed", getattr(exc, "tensor", None) or name, str(exc), rank=store.label)

    def finish_refit(self) -> None:
        for store in self.ranks.values():
            self.findings.extend(store.ledger_findings(self.path))

    def validation_findings(self) -> list[Finding]:
        return [Finding("shape_validation", tensor, f"vLLM raises at construction: {msg}", path=self.path,
                        rank=s.label) for s in self.ranks.values() for tensor, msg in s.validation]

    def state(self) -> EngineState:
        return EngineState(self.layout, {r: s.parameters() for r, s in self.ranks.items()},
                           self.validation_findings() + list(self.findings),
                           {"engine": self.name, "recipe": self.recipe.name, "path": self.path, "block": self.block,
                            "layout": self.layout.to_dict(),
                            "num_experts": self.cfg.moe.num_experts if self.cfg.moe else 0})

    def data_ptrs(self) -> dict[tuple[str, str], int]:
        return {(s.label, n): t.data_ptr() for s in self.ranks.values() for n, t in s.parameters().items()}

    def _find(self, hazard, tensor, message, **kw) -> None:
        self.findings.append(Finding(hazard, tensor, message, path=self.path, **kw))
