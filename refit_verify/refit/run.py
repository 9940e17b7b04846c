"""End-to-end differential: both refit paths into two engine stores, compared bitwise and to the source.

FP8-before: the exporter quantizes with `before`, the loader loads pre-quantized tensors.
FP8-after: the exporter sends BF16, the loader quantizes on load with `after`.
With a matching recipe pair the two stores must hold the same bytes; where they don't, the result
says which tensor, which block, how far and (through findings) why. Nothing here raises on a
hazard: errors become findings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import torch

from refit_verify.compare import TensorComparison, compare_bits, compare_fp8
from refit_verify.compare.metrics import error_metrics
from refit_verify.errors import BadInputError, RefitVerifyError, TransportError
from refit_verify.fp8 import get_recipe
from refit_verify.fp8.format import probe_cast_semantics
from refit_verify.fp8.recipe import Recipe
from refit_verify.model.config import ModelConfig, load_config
from refit_verify.model.weights import synthesize_weights
from refit_verify.refit.exporter import TrainerExporter
from refit_verify.refit.findings import Finding
from refit_verify.refit.engine import Engine, EngineFactory, EngineState
from refit_verify.refit.loader import FP8_DTYPES, engine_linears
from refit_verify.refit.postload import RequantRecord
from refit_verify.refit.reference_engine import ReferenceEngineFactory
from refit_verify.refit.selection import resolve_selection
from refit_verify.refit.transport import DEFAULT_ALIGNMENT, InProcessTransport, nbytes_of

@dataclass
class PathResult:
    path: str  # "before" | "after"
    trainer_quantizer: str
    engine_recipe: str
    completed: bool
    export: dict
    transfer: dict
    findings: list[Finding]
    error_vs_source: dict  # engine tensor -> {"all": metrics, "shards": {shard_id: metrics}}
    requant: list[RequantRecord]

    def to_dict(self) -> dict:
        return {"path": self.path, "trainer_quantizer": self.trainer_quantizer, "engine_recipe": self.engine_recipe,
                "completed": self.completed, "export": self.export, "transfer": self.transfer,
                "findings": [f.to_dict() for f in self.findings], "error_vs_source": _json_safe(self.error_vs_source),
                "requant": [r.to_dict() for r in self.requant if r.applied]}


@dataclass
class RefitResult:
    config: str
    before: str
    after: str
    options: dict
    cast_semantics: dict
    paths: dict  # name -> PathResult
    comparisons: list  # TensorComparison, final engine state of before vs after
    findings: list  # every Finding, paths and comparison
    engines: dict = field(default_factory=dict, repr=False)  # path -> the Engine that ran it (not serialised)
    sent: dict = field(default_factory=dict, repr=False)  # path -> {name: tensor} as exported (not serialised)
    states: dict = field(default_factory=dict, repr=False)  # path -> EngineState after the refit (not serialised)

    @property
    def stores(self) -> dict:
        """path -> reference EngineStore, for engines that keep one (the reference; vLLM's mirror)."""
        return {p: e.store for p, e in self.engines.items() if getattr(e, "store", None) is not None}

    @property
    def bitwise_equal(self) -> bool:
        return bool(self.comparisons) and all(c.equal for c in self.comparisons) and \
            all(p.completed for p in self.paths.values())

    def hazards(self, path: Optional[str] = None) -> set[str]:
        return {f.hazard for f in self.findings if path is None or f.path == path}

    def findings_of(self, hazard: str, path: Optional[str] = None) -> list[Finding]:
        return [f for f in self.findings if f.hazard == hazard and (path is None or f.path == path)]

    def to_dict(self) -> dict:
        return {"config": self.config, "before": self.before, "after": self.after, "options": _json_safe(self.options),
                "cast_semantics": self.cast_semantics, "bitwise_equal": self.bitwise_equal,
                "paths": {k: p.to_dict() for k, p in self.paths.items()},
                "comparisons": [c.to_dict() for c in self.comparisons],
                "findings": [f.to_dict() for f in self.findings]}


def _json_safe(x):
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return repr(x)  # JSON has no inf/nan
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)


def quantizer_name(q) -> str:
    if isinstance(q, (str, Recipe)):
        return get_recipe(q).name
    return getattr(q, "__name__", "callable")


def resolve_refit_inputs(config, weights, before, after, *, seed: int, layers, bucket_bytes, alignment):
    """(cfg, weights, engine recipe, bucket size) from run arguments.

    The engine recipe defaults to the trainer's when that is a recipe (a user callable has none),
    and the bucket defaults to one large enough for the largest tensor, as a real bucket must be.
    """
    cfg = config if isinstance(config, ModelConfig) else load_config(config, layers=layers)
    if isinstance(config, ModelConfig) and layers is not None:
        cfg = cfg.with_layers(layers)
    weights = synthesize_weights(cfg, seed) if weights is None else weights
    if after is None:
        after = before if isinstance(before, (str, Recipe)) else "vllm_per_block"
    if bucket_bytes is None:
        biggest = max(nbytes_of(t.shape, t.dtype) for t in weights.values())
        bucket_bytes = max(64 << 20, -(-biggest // alignment) * alignment)
    return cfg, weights, get_recipe(after), bucket_bytes


def run_refit(config, weights: Optional[dict] = None, before="vllm_per_block", after=None, *, seed: int = 0,
              layers: Optional[int] = None, selection="loader", placement: str = "vllm",
              detection: str = "metadata", bucket_bytes: Optional[int] = None, alignment: int = DEFAULT_ALIGNMENT,
              transport: str = "inprocess", ue8m0_requant: bool = False, output_dtype=torch.bfloat16,
              shape_mismatch_exemption: Optional[bool] = None, paths=("before", "after"),
              keep_sent: bool = False, full_metrics: bool = False, make_contiguous: bool = True,
              engine: Optional[EngineFactory] = None) -> RefitResult:
    """Run FP8-before and FP8-after for `config` and compare what the engine holds.

    before: the trainer's quantizer (preset name, Recipe, or f(w) -> (fp8, scale_inv)).
    after: the engine's on-load recipe (default: `before` when it is a recipe, else vllm_per_block).
    selection: "loader" (robust), "heuristic", an Fp8Selection or a list of HF names.
    engine: builds each path's engine (default: the reference loader with the next four settings).
    placement: "vllm" (vLLM 0.33's block-rounded rule) or "exact" (per-row scales, see placement.py).
    detection: "metadata" (later revision) or "per_batch" (first revision).
    make_contiguous: False reproduces an exporter that sends cropped (non-contiguous) views.
    full_metrics: whole-tensor error vs source with compare.metrics.error_metrics (slow on big shapes).
    """
    cfg, weights, after_recipe, bucket_bytes = resolve_refit_inputs(config, weights, before, after, seed=seed,
                                                                     layers=layers, bucket_bytes=bucket_bytes,
                                                                     alignment=alignment)
    if engine is None:
        engine = ReferenceEngineFactory(placement=placement, detection=detection, ue8m0_requant=ue8m0_requant,
                                        output_dtype=output_dtype, shape_mismatch_exemption=shape_mismatch_exemption)
    options = dict(selection=selection if isinstance(selection, str) else repr(selection), bucket_bytes=bucket_bytes,
                   alignment=alignment, transport=transport, seed=seed, layers=cfg.num_hidden_layers,
                   make_contiguous=make_contiguous, **engine.options)
    result = RefitResult(cfg.name, quantizer_name(before), after_recipe.name, options, probe_cast_semantics(),
                         {}, [], [])
    for path in paths:
        eng = engine(cfg, path, after_recipe)
        pr, sent = _run_path(path, cfg, weights, before, eng, selection, bucket_bytes, alignment, transport,
                             keep_sent, full_metrics, make_contiguous)
        result.paths[path], result.engines[path], result.states[path] = pr, eng, eng.state()
        if keep_sent:
            result.sent[path] = sent
        result.findings.extend(pr.findings)
    if "before" in result.states and "after" in result.states:
        result.comparisons = compare_states(result.states["before"], result.states["after"])
        result.findings.extend(mismatch_findings(result.comparisons, result.states["after"].meta.get("engine", "")))
    return result


def mismatch_findings(comparisons, engine_name: str = "") -> list[Finding]:
    """One bitwise_mismatch finding per tensor the two paths left different."""
    out = []
    on = f" ({engine_name} engine)" if engine_name and engine_name != "reference" else ""
    for c in comparisons:
        if c.equal:
            continue
        fm = c.first_mismatch
        out.append(Finding(
            "bitwise_mismatch", c.tensor, f"{c.n_code_mismatch} codes and {c.n_scale_mismatch} scales differ "
            f"between FP8-before and FP8-after{on}" + (f"; {fm.describe()}" if fm else ""),
            block=c.first_block, detail={"mismatched_blocks": c.mismatched_blocks(), "rank": c.rank}))
    return out


def _run_path(path, cfg, weights, before, engine: Engine, selection, bucket_bytes, alignment, transport,
              keep_sent, full_metrics, make_contiguous):
    """One refit path through the Engine protocol: export, transport, engine.receive per batch, finish."""
    findings: list[Finding] = []
    sent: dict = {}
    completed = True
    export_summary, transfer_stats = {}, {}
    try:
        sel = resolve_selection(selection, engine)
        exporter = TrainerExporter(weights, path, before, sel, make_contiguous=make_contiguous)
        export_summary = exporter.summary().to_dict()
        if path == "before":
            findings.extend(selection_findings(exporter.fp8_names, engine, path))
        metadata = exporter.metadata()
        engine.begin_refit(metadata)
        items = _tap(exporter, sent) if keep_sent else exporter
        transfer_stats = _feed(engine, items, metadata, transport, bucket_bytes, alignment)
    except TransportError as exc:
        completed = False
        transfer_stats = getattr(exc, "stats", None) or transfer_stats
        findings.append(Finding("transport", exc.tensor or "<transport>", str(exc), path=path,
                                detail={"bucket": exc.bucket}))
    except RefitVerifyError as exc:
        completed = False
        findings.append(Finding("load_failed", getattr(exc, "tensor", None) or "<export>", str(exc), path=path))
    engine.finish_refit()
    state = engine.state()
    error = error_vs_source(cfg, state.params(), weights, full_metrics, state.meta.get("block", (128, 128))) \
        if len(state.ranks) == 1 else {}
    pr = PathResult(path, quantizer_name(before), state.meta.get("recipe", ""), completed and state.complete,
                    export_summary, transfer_stats, findings + state.findings, error, state.meta.get("requant", []))
    return pr, sent


def _feed(engine: Engine, items, metadata, transport, bucket_bytes, alignment) -> dict:
    """Move the exported tensors over `transport` into `engine.receive`, batch by batch; returns transfer stats."""
    if transport == "inprocess":
        tr = InProcessTransport(bucket_bytes, alignment)
        try:
            for batch in tr.transfer(items, metadata):
                engine.receive(batch)
        except TransportError as exc:
            exc.stats = tr.stats.to_dict()
            raise
        return tr.stats.to_dict()
    if transport in ("gloo", "nccl"):
        from refit_verify.refit.distributed import broadcast_transfer

        batches, stats = broadcast_transfer(list(items), metadata, bucket_bytes, alignment, backend=transport)
        for batch in batches:
            engine.receive(batch)
        return stats.to_dict()
    raise BadInputError(f"unknown transport {transport!r}: inprocess | gloo | nccl")


def _tap(items, sink: dict):
    for name, t in items:
        sink[name] = t
        yield name, t


def selection_findings(fp8_names, engine, path: str = "") -> list[Finding]:
    """Trainer and engine must agree on the FP8 set (router/first-layer/ignored-layer traps).

    engine: anything with fp8_hf_names() (an Engine, or a reference EngineStore)."""
    held = engine.fp8_hf_names()
    out = []
    for name in sorted(set(fp8_names) - held):
        out.append(Finding("selection_mismatch", name, "trainer quantizes it, the engine keeps it in BF16", path=path))
    for name in sorted(held - set(fp8_names)):
        out.append(Finding("selection_mismatch", name, "the engine keeps it in FP8, the trainer sends it unquantized",
                           path=path))
    return out


def _row_sums(ref: torch.Tensor, got: torch.Tensor) -> dict:
    """Per-row sums in one pass, so whole-tensor and per-shard metrics share the work."""
    ok = torch.isfinite(got)
    bad = int((~ok).sum())
    if bad:
        got = torch.where(ok, got, 0.0)
    d = got - ref
    return {"dd": (d * d).sum(1), "rr": (ref * ref).sum(1), "gg": (got * got).sum(1), "rg": (ref * got).sum(1),
            "max": d.abs().amax(1) if d.shape[1] else torch.zeros(d.shape[0]), "bad": (~ok).sum(1) if bad else None}


def _metrics_from_sums(sums: dict, lo: int, hi: int) -> dict:
    dd, rr, gg, rg = (float(sums[k][lo:hi].double().sum()) for k in ("dd", "rr", "gg", "rg"))
    rel = math.sqrt(dd / rr) if rr else (0.0 if dd == 0 else math.inf)
    return {"rel_l2": rel, "sqnr_db": (-20 * math.log10(rel)) if rel > 0 else math.inf,
            "max_abs": float(sums["max"][lo:hi].max()) if hi > lo else 0.0,
            "cosine": rg / math.sqrt(rr * gg) if rr and gg else 1.0,
            "non_finite": int(sums["bad"][lo:hi].sum()) if sums["bad"] is not None else 0}


def dequantized_linear(params: dict, prefix: str, block=(128, 128)) -> torch.Tensor:
    """An engine linear's weight as float32 values, each row with the scale this engine applies to it."""
    w = params[prefix + ".weight"]
    scale = params.get(prefix + ".weight_scale_inv")
    if scale is None:
        return w.float()
    rows = params.get(prefix + ".weight_scale_inv_rows")  # exact placement: one scale row per weight row
    row_scale = rows if rows is not None else scale.repeat_interleave(block[0], 0)[: w.shape[0]]
    return w.float() * row_scale.repeat_interleave(block[1], 1)[:, : w.shape[1]]


def error_vs_source(cfg: ModelConfig, params: dict, weights: dict, full: bool = False, block=(128, 128)) -> dict:
    """Dequantized engine weights against the BF16 source, whole and per shard rows (float32 sums).

    params: one engine rank's {engine name: tensor}. full=True also runs compare.metrics.error_metrics
    (float64, NaN-aware) on the whole tensor; it costs about a second per 8B-sized linear on CPU.
    """
    out = {}
    for site in engine_linears(cfg):
        if not all(n in weights for n in site.hf_names) or site.prefix + ".weight" not in params:
            continue
        ref = torch.cat([weights[n].float() for n in site.hf_names], 0)
        got = dequantized_linear(params, site.prefix, block)
        sums = _row_sums(ref, got)
        entry = {"all": _metrics_from_sums(sums, 0, ref.shape[0]), "shards": {}}
        if full:
            entry["all_full"] = error_metrics(ref, got)
        if site.spec.fused:
            for off, s in zip(site.offsets, site.spec.shards):
                entry["shards"][str(s.shard_id)] = _metrics_from_sums(sums, off, off + s.rows)
        out[site.prefix + ".weight"] = entry
    return out


def compare_states(a: EngineState, b: EngineState) -> list[TensorComparison]:
    """What two engines hold, rank by rank: FP8 weights as codes + block scales, everything else as bits.

    Works for any layout: ranks are matched by Rank; a rank or parameter one side lacks is a mismatch.
    """
    out = []
    block = tuple(a.meta.get("block", (128, 128)))
    for rank, pa in a.ranks.items():
        pb = b.ranks.get(rank, {})
        label = rank.label if len(a.ranks) > 1 else ""
        for name, ta in pa.items():
            if name.endswith("_scale_inv") and name[: -len("_scale_inv")] in pa \
                    and pa[name[: -len("_scale_inv")]].dtype in FP8_DTYPES:
                continue  # compared with its weight
            tb = pb.get(name)
            fp8 = ta.dtype in FP8_DTYPES and name + "_scale_inv" in pa
            if fp8 and tb is not None and tb.dtype == ta.dtype and name + "_scale_inv" in pb:
                c = compare_fp8(ta, pa[name + "_scale_inv"], tb, pb[name + "_scale_inv"], block, name)
            else:
                c = compare_bits(ta, tb, name, "scale_rows" if name.endswith("_scale_inv_rows") else "bf16")
            c.rank = label
            out.append(c)
    return out
