"""Generation-side parameter store with vLLM 0.33's block-FP8 loading semantics (FACTS.md §4, §5).

Built from a ModelConfig: each decoder layer's linears are fused as the engine fuses them
(q/k/v -> qkv_proj shards "q","k","v"; gate/up -> gate_up_proj shards 0, 1). FP8 linears hold
`weight` float8_e4m3fn [N, K] and `weight_scale_inv` float32 [ceil(N/128), ceil(K/128)] filled with
finfo(float32).min; norms, embeddings, lm_head, MoE routers and `cfg.bf16_layers` stay BF16.

`load_weights(batch)` is the refit hook: a batch is pre-quantized or not (decided per batch by any
`_scale_inv` name, the first revision, or once from the metadata, the later one); BF16 arriving for
an FP8 parameter is quantized on load with the engine's recipe. Every problem is recorded as a
Finding and loading goes on, so one run reports all hazards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from refit_verify.errors import LoadError, LoadShapeError, RefitVerifyError, ShapeValidationError, ShardPlacementError
from refit_verify.fp8 import get_recipe, quantize
from refit_verify.fp8.format import FP32_FILL
from refit_verify.model.config import LinearSpec, ModelConfig
from refit_verify.refit.findings import Finding
from refit_verify.refit.placement import (
    ceil_div, place_block_scales_first_row_owner, place_row_scales_exact, place_rows, place_scale_vllm,
)

SCALE_SUFFIX = "_scale_inv"
FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
PLACEMENTS = ("vllm", "exact")
DETECTIONS = ("metadata", "per_batch")


def is_batch_prequantized(names, refit_prequantized: Optional[bool]) -> bool:
    """Later revision: decided once from the metadata. First revision (flag None): any scale in the batch."""
    if refit_prequantized is not None:
        return refit_prequantized
    return any(n.endswith(SCALE_SUFFIX) for n in names)


def prequantized_from_metadata(metadata: dict) -> bool:
    return any(n.endswith(SCALE_SUFFIX) for n in metadata)


def vllm_shape_exempt(spec: LinearSpec, block_n: int) -> bool:
    """allow_fp8_block_shape_mismatch as vLLM 0.33 set it in the golden run: merged layers with an odd partition."""
    return spec.fused and any(s.rows % block_n for s in spec.shards)


def validate_fp8_block_shape(prefix: str, spec: LinearSpec, block_n: int) -> None:
    """vLLM's create-time check for merged layers (tp=1): every partition but the last a block multiple."""
    if not spec.fused:
        return
    for s in spec.shards[:-1]:
        if s.rows % block_n:
            raise ShapeValidationError(f"Weight output_partition_size = {s.rows} is not divisible by weight "
                                       f"quantization block_n = {block_n}.", prefix + ".weight", s.shard_id)


@dataclass(frozen=True)
class LinearSite:
    """One decoder linear as the engine fuses it: engine prefix, spec, FP8 or not, HF name per shard."""

    prefix: str
    spec: LinearSpec
    fp8: bool
    hf_names: tuple[str, ...]

    @property
    def offsets(self) -> list[int]:
        return [sum(s.rows for s in self.spec.shards[:i]) for i in range(len(self.spec.shards))]


def engine_linears(cfg: ModelConfig) -> list[LinearSite]:
    """Every decoder linear of `cfg` in the engine's fused layout (q/k/v -> qkv_proj, gate/up -> gate_up_proj)."""
    out = []
    for layer in range(cfg.num_hidden_layers):
        for spec in cfg.layer_linears():
            out.append(LinearSite(f"model.layers.{layer}.{spec.engine_suffix}", spec, layer not in cfg.bf16_layers,
                                  tuple(f"model.layers.{layer}.{s.hf_suffix}.weight" for s in spec.shards)))
    return out


@dataclass
class EngineLinear:
    prefix: str  # e.g. "model.layers.0.self_attn.qkv_proj"
    spec: LinearSpec
    fp8: bool
    placement: str
    block: tuple[int, int]
    weight: torch.Tensor
    weight_scale_inv: Optional[torch.Tensor] = None
    weight_scale_inv_rows: Optional[torch.Tensor] = None  # exact placement only: [N, Kb]
    sent_scales: dict = field(default_factory=dict)  # shard index -> the scale as it arrived
    loaded: set = field(default_factory=set)  # {("weight", i), ("scale", i)}

    @classmethod
    def create(cls, prefix: str, spec: LinearSpec, fp8: bool, placement: str, block=(128, 128)) -> "EngineLinear":
        n, k = spec.out_features, spec.in_features
        if not fp8:
            return cls(prefix, spec, False, placement, block, torch.zeros(n, k, dtype=torch.bfloat16))
        scale_shape = (ceil_div(n, block[0]), ceil_div(k, block[1]))
        rows = torch.full((n, scale_shape[1]), FP32_FILL, dtype=torch.float32) if placement == "exact" else None
        return cls(prefix, spec, True, placement, block, torch.zeros(n, k, dtype=torch.float8_e4m3fn),
                   torch.full(scale_shape, FP32_FILL, dtype=torch.float32), rows)

    @property
    def offsets(self) -> list[int]:
        out, acc = [], 0
        for s in self.spec.shards:
            out.append(acc)
            acc += s.rows
        return out

    def hf_names(self) -> list[str]:
        """The trainer (HF) weight name of each shard."""
        layer = self.prefix[: -len(self.spec.engine_suffix)]
        return [f"{layer}{s.hf_suffix}.weight" for s in self.spec.shards]

    def shard_id(self, i: int):
        return self.spec.shards[i].shard_id

    def load_weight(self, i: int, t: torch.Tensor, name: str) -> None:
        rows = self.spec.shards[i].rows
        if tuple(t.shape) != (rows, self.spec.in_features):
            raise LoadShapeError(f"got {tuple(t.shape)}, shard expects {(rows, self.spec.in_features)}",
                                 name, self.shard_id(i))
        place_rows(self.weight, t, self.offsets[i], name, self.shard_id(i))
        self.loaded.add(("weight", i))

    def load_scale(self, i: int, t: torch.Tensor, name: str) -> None:
        rows, bn, bk = self.spec.shards[i].rows, self.block[0], self.block[1]
        expected = (ceil_div(rows, bn), ceil_div(self.spec.in_features, bk))
        if tuple(t.shape) != expected:
            raise LoadShapeError(f"got {tuple(t.shape)}, shard scale expects {expected}", name, self.shard_id(i))
        self.sent_scales[i] = t.detach().float().clone()
        off, sid = self.offsets[i], self.shard_id(i)
        if self.placement == "vllm":
            place_scale_vllm(self.weight_scale_inv, t, off, rows, bn, name, sid)
        else:
            place_block_scales_first_row_owner(self.weight_scale_inv, t, off, rows, bn)
            place_row_scales_exact(self.weight_scale_inv_rows, t, off, rows, bn, name, sid)
        self.loaded.add(("scale", i))

    def effective_row_scale(self) -> torch.Tensor:
        """[N, Kb]: the scale each row is dequantized with by this store."""
        if self.placement == "exact":
            return self.weight_scale_inv_rows
        return self.weight_scale_inv.repeat_interleave(self.block[0], 0)[: self.spec.out_features]

    def expected_row_scale(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(row scales each row's own shard sent, mask of rows whose shard scale arrived)."""
        n, kb = self.spec.out_features, self.weight_scale_inv.shape[1]
        out = torch.zeros(n, kb, dtype=torch.float32)
        known = torch.zeros(n, dtype=torch.bool)
        for i, s in enumerate(self.spec.shards):
            if i in self.sent_scales:
                off = self.offsets[i]
                out[off : off + s.rows] = self.sent_scales[i].repeat_interleave(self.block[0], 0)[: s.rows]
                known[off : off + s.rows] = True
        return out, known

    def dequantized(self) -> torch.Tensor:
        if not self.fp8:
            return self.weight.float()
        k = self.spec.in_features
        return self.weight.float() * self.effective_row_scale().repeat_interleave(self.block[1], 1)[:, :k]

    def parameters(self) -> dict:
        out = {self.prefix + ".weight": self.weight}
        if self.fp8:
            out[self.prefix + ".weight_scale_inv"] = self.weight_scale_inv
            if self.weight_scale_inv_rows is not None:
                out[self.prefix + ".weight_scale_inv_rows"] = self.weight_scale_inv_rows
        return out


class EngineStore:
    """The engine's parameters for one model, loaded batch by batch."""

    def __init__(self, cfg: ModelConfig, *, placement: str = "vllm", detection: str = "metadata",
                 recipe="vllm_per_block", block=(128, 128), shape_mismatch_exemption: Optional[bool] = None,
                 path: str = ""):
        if placement not in PLACEMENTS or detection not in DETECTIONS:
            raise ValueError(f"placement in {PLACEMENTS}, detection in {DETECTIONS}; got {placement!r}, {detection!r}")
        self.cfg, self.placement, self.detection, self.block, self.path = cfg, placement, detection, tuple(block), path
        self.recipe = get_recipe(recipe)
        self.findings: list[Finding] = []
        self.linears: dict[str, EngineLinear] = {}
        self.plain: dict[str, torch.Tensor] = {}
        self.plain_loaded: set[str] = set()
        self._route: dict[str, tuple] = {}  # HF weight name -> ("linear", prefix, shard index) | ("plain", name)
        self._refit_prequantized: Optional[bool] = None
        self.batch_index = -1
        self._build(shape_mismatch_exemption)

    def _build(self, exemption: Optional[bool]) -> None:
        shard_names = set()
        for el in engine_linears(self.cfg):
            prefix, spec = el.prefix, el.spec
            self.linears[prefix] = EngineLinear.create(prefix, spec, el.fp8, self.placement, self.block)
            for i, hf in enumerate(el.hf_names):
                self._route[hf] = ("linear", prefix, i)
                shard_names.add(hf)
            exempt = vllm_shape_exempt(spec, self.block[0]) if exemption is None else exemption
            if el.fp8 and not exempt:
                try:
                    validate_fp8_block_shape(prefix, spec, self.block[0])
                except ShapeValidationError as exc:
                    self._record(exc, "shape_validation")
        for name, shape in self.cfg.hf_shapes().items():
            if name not in shard_names:
                self.plain[name] = torch.zeros(shape, dtype=torch.bfloat16)
                self._route[name] = ("plain", name)

    # -- what the engine is ------------------------------------------------------------------
    def fp8_hf_names(self) -> set[str]:
        """The HF names this engine keeps in FP8 (what the robust exporter policy asks for)."""
        return {hf for hf, r in self._route.items() if r[0] == "linear" and self.linears[r[1]].fp8}

    def parameters(self) -> dict[str, torch.Tensor]:
        out = dict(self.plain)
        for lin in self.linears.values():
            out.update(lin.parameters())
        return out

    def snapshot(self) -> dict[str, torch.Tensor]:
        return {n: t.detach().clone() for n, t in self.parameters().items()}

    def adopt(self, params: dict, sent: dict) -> list[str]:
        """Take another engine's parameters as this store's state and record what it was sent, so the
        reference's post-load checks judge that engine. Returns the parameter names `params` lacks."""
        missing = []
        for prefix, lin in self.linears.items():
            for suffix, dst in (("weight", lin.weight), ("weight_scale_inv", lin.weight_scale_inv)):
                src = params.get(f"{prefix}.{suffix}")
                if dst is None:
                    continue
                if src is None:
                    missing.append(f"{prefix}.{suffix}")
                    continue
                # bit copy for fp8 (a value cast of uint8 bytes would be wrong), value copy otherwise
                dst.copy_(src.view(dst.dtype) if dst.dtype in FP8_DTYPES and src.dtype == torch.uint8 else src)
        for name, dst in self.plain.items():
            if name in params:
                dst.copy_(params[name])
            else:
                missing.append(name)
        for name, t in sent.items():
            self._mark_sent(name, t)
        return missing

    def _mark_sent(self, name: str, t: torch.Tensor) -> None:
        is_scale = name.endswith(SCALE_SUFFIX)
        route = self._route.get(name[: -len(SCALE_SUFFIX)] if is_scale else name)
        if route is None:
            return
        if route[0] == "plain":
            self.plain_loaded.add(name)
            return
        lin, i = self.linears[route[1]], route[2]
        if is_scale:
            lin.sent_scales[i] = t.detach().float().clone()
            lin.loaded.add(("scale", i))
        else:
            lin.loaded.add(("weight", i))

    # -- refit hook --------------------------------------------------------------------------
    def begin_refit(self, metadata: Optional[dict] = None) -> None:
        """Metadata detection decides once here; per-batch detection ignores the metadata."""
        self.batch_index = -1
        use = self.detection == "metadata" and metadata is not None
        self._refit_prequantized = prequantized_from_metadata(metadata) if use else None

    def load_weights(self, batch) -> None:
        self.batch_index += 1
        pre = is_batch_prequantized([n for n, _ in batch], self._refit_prequantized)
        for name, t in batch:
            try:
                self._load_one(name, t, pre)
            except ShardPlacementError as exc:
                self._record(exc, "placement_raised", detail={"exception": f"{exc.cause_type}: {exc.cause_message}"})
            except LoadShapeError as exc:
                self._record(exc, "shape_mismatch")
            except RefitVerifyError as exc:
                self._record(exc, "load_failed")

    def _load_one(self, name: str, t: torch.Tensor, pre: bool) -> None:
        is_scale = name.endswith(SCALE_SUFFIX)
        base = name[: -len(SCALE_SUFFIX)] if is_scale else name
        route = self._route.get(base)
        if route is None:
            self._find("unknown_name", name, "no engine parameter has this name (vLLM: KeyError)")
            return
        if route[0] == "plain" or not self.linears[route[1]].fp8:
            self._load_bf16(name, t, is_scale, route)
            return
        lin, i = self.linears[route[1]], route[2]
        if is_scale:
            lin.load_scale(i, t, name)
        elif pre and t.dtype in FP8_DTYPES:
            lin.load_weight(i, t, name)
        elif pre:
            self._find("bf16_into_fp8", name, f"{t.dtype} data in a pre-quantized refit is cast into the FP8 "
                       "parameter without a scale", shard=lin.shard_id(i))
            lin.load_weight(i, t, name)
        else:
            if t.dtype in FP8_DTYPES:
                self._find("fp8_requantized_as_bf16", name, f"FP8 tensor in batch {self.batch_index}, detected as "
                           "BF16 (its scale is in another batch): quantized again as if it were BF16",
                           shard=lin.shard_id(i), detail={"batch": self.batch_index})
                t = t.float()
            q = quantize(t, self.recipe, name=name)
            lin.load_weight(i, q.data, name)
            lin.load_scale(i, q.scale_inv, name + SCALE_SUFFIX)

    def _load_bf16(self, name, t, is_scale, route) -> None:
        target = route[1] if route[0] == "plain" else route[1] + ".weight"
        if is_scale:
            self._find("unknown_name", name, f"the engine keeps {target} in BF16 and has no scale for it "
                       "(vLLM: KeyError)")
            return
        if t.dtype in FP8_DTYPES:
            self._find("fp8_into_bf16", name, f"{t.dtype} codes cast into BF16 parameter {target} without their scale")
        if route[0] == "plain":
            param = self.plain[name]
            if tuple(t.shape) != tuple(param.shape):
                raise LoadShapeError(f"got {tuple(t.shape)}, parameter is {tuple(param.shape)}", name)
            param.copy_(t)
            self.plain_loaded.add(name)
        else:
            self.linears[route[1]].load_weight(route[2], t, name)

    # -- findings ----------------------------------------------------------------------------
    def _find(self, hazard, tensor, message, **kw) -> None:
        self.findings.append(Finding(hazard, tensor, message, path=self.path, **kw))

    def _record(self, exc: LoadError, hazard: str, detail: Optional[dict] = None) -> None:
        self.findings.append(Finding(hazard, getattr(exc, "tensor", None) or "<loader>", str(exc), path=self.path,
                                     shard=getattr(exc, "shard", None), detail=detail or {}))
