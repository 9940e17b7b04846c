"""After the last batch: vLLM's process_weights_after_loading, and the checks a refit must pass.

UE8M0 requantization (FACTS.md §4): with DeepGEMM usable (bf16 output, N % 64 == 0,
K % 128 == 0) and VLLM_USE_DEEP_GEMM_E8M0 on, vLLM dequantizes each block weight with its loaded
scale and quantizes it again with per_block_cast_to_fp8(use_ue8m0=True). A trainer that sent
non-pow2 scales then no longer matches what the engine holds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from refit_verify.fp8 import quantize
from refit_verify.fp8.format import FP32_FILL
from refit_verify.refit.findings import Finding, row_ranges
from refit_verify.refit.loader import EngineStore

MAX_LISTED_BLOCKS = 16


def deepgemm_requant_applies(ue8m0: bool, n: int, k: int, output_dtype=torch.bfloat16) -> bool:
    return bool(ue8m0) and n % 64 == 0 and k % 128 == 0 and output_dtype == torch.bfloat16


@dataclass
class RequantRecord:
    tensor: str
    applied: bool
    n_codes_changed: int = 0
    n_scales_changed: int = 0
    n_values_changed: int = 0  # dequantized float32 values that differ from what was loaded
    max_abs_value_change: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def process_weights_after_loading(store: EngineStore, ue8m0: bool = False,
                                  output_dtype=torch.bfloat16) -> list[RequantRecord]:
    records = []
    for prefix, lin in store.linears.items():
        if not lin.fp8:
            continue
        n, k = lin.spec.out_features, lin.spec.in_features
        if not deepgemm_requant_applies(ue8m0, n, k, output_dtype):
            records.append(RequantRecord(prefix + ".weight", False))
            continue
        old_codes, old_scale, old_values = lin.weight.clone(), lin.weight_scale_inv.clone(), lin.dequantized()
        q = quantize(old_values, "vllm_per_block_ue8m0", name=prefix + ".weight")
        lin.weight.copy_(q.data)
        lin.weight_scale_inv.copy_(q.scale_inv)
        if lin.weight_scale_inv_rows is not None:  # the fused weight now has one scale per block
            lin.weight_scale_inv_rows.copy_(q.scale_inv.repeat_interleave(lin.block[0], 0)[:n])
        diff = (lin.dequantized() - old_values).abs()
        changed = ~((lin.dequantized() == old_values) | (torch.isnan(lin.dequantized()) & torch.isnan(old_values)))
        records.append(RequantRecord(
            prefix + ".weight", True,
            n_codes_changed=int((lin.weight.view(torch.uint8) != old_codes.view(torch.uint8)).sum()),
            n_scales_changed=int((lin.weight_scale_inv.view(torch.int32) != old_scale.view(torch.int32)).sum()),
            n_values_changed=int(changed.sum()),
            max_abs_value_change=float(torch.nan_to_num(diff, nan=0.0).max()) if diff.numel() else 0.0,
        ))
    return records


def requant_findings(records: list[RequantRecord], path: str = "") -> list[Finding]:
    out = []
    for r in records:
        if r.n_values_changed:
            out.append(Finding("requant_drift", r.tensor, f"UE8M0 requantization changed {r.n_values_changed} "
                               f"dequantized values (max |change| {r.max_abs_value_change:.3g}); the trainer sent "
                               "scales that are not powers of two", path=path, detail=r.to_dict()))
        elif r.n_codes_changed or r.n_scales_changed:
            out.append(Finding("requant_rebytes", r.tensor, f"requantization rewrote {r.n_codes_changed} codes and "
                               f"{r.n_scales_changed} scales with equal values", path=path, severity="info",
                               detail=r.to_dict()))
    return out


def _blocks(mask: torch.Tensor) -> list[tuple[int, int]]:
    return [tuple(int(v) for v in b) for b in mask.nonzero()[:MAX_LISTED_BLOCKS].tolist()]


def post_load_findings(store: EngineStore) -> list[Finding]:
    """Everything wrong with the store's state after a refit, as findings."""
    out: list[Finding] = []
    path = store.path

    def add(hazard, tensor, message, **kw):
        out.append(Finding(hazard, tensor, message, path=path, **kw))

    for prefix, lin in store.linears.items():
        for i, (s, hf) in enumerate(zip(lin.spec.shards, lin.hf_names())):
            got_w, got_s = ("weight", i) in lin.loaded, ("scale", i) in lin.loaded
            if not got_w:
                add("never_loaded", hf, f"no data reached shard {s.shard_id!r} of {prefix}.weight", shard=s.shard_id)
            if lin.fp8 and got_w and not got_s and i not in lin.sent_scales:
                add("missing_scale", hf + "_scale_inv", "the weight arrived but its scale never did", shard=s.shard_id)
        if not lin.fp8:
            continue
        scale_name = prefix + ".weight_scale_inv"
        for tensor_name, scale in ((scale_name, lin.weight_scale_inv), (scale_name + "_rows", lin.weight_scale_inv_rows)):
            if scale is None:
                continue
            fill = scale.view(torch.int32) == torch.tensor(FP32_FILL, dtype=torch.float32).view(torch.int32)
            if fill.any():
                blocks = _blocks(fill)
                add("placeholder_scale", tensor_name, f"{int(fill.sum())} scale entries still hold the "
                    f"finfo(float32).min fill, e.g. at {blocks[:4]}", block=blocks[0],
                    detail={"n": int(fill.sum()), "entries": [list(b) for b in blocks]})
            bad = ~fill & ~(torch.isfinite(scale) & (scale > 0))
            if bad.any():
                blocks = _blocks(bad)
                add("bad_scale", tensor_name, f"{int(bad.sum())} NaN/Inf/zero/negative scales, first "
                    f"{float(scale[blocks[0]])!r} at {blocks[0]}", block=blocks[0],
                    detail={"n": int(bad.sum()), "entries": [list(b) for b in blocks]})
        out.extend(placement_findings(lin, path))
    for name in store.plain:
        if name not in store.plain_loaded:
            add("never_loaded", name, "no data reached this BF16 parameter")
    return out


def misplaced_rows(lin) -> list[tuple[int, int]]:
    """Inclusive row ranges whose effective scale differs from the scale their own shard sent."""
    if not lin.fp8 or not lin.sent_scales:
        return []
    expected, known = lin.expected_row_scale()
    effective = lin.effective_row_scale()
    differs = (effective.view(torch.int32) != expected.view(torch.int32)).any(dim=1) & known
    return row_ranges(differs)


def straddling_blocks(lin) -> list[int]:
    """Block rows holding rows of two shards: one block scale cannot serve both."""
    bn = lin.block[0]
    return sorted({off // bn for off in lin.offsets[1:] if off % bn})


def placement_findings(lin, path: str = "") -> list[Finding]:
    out = []
    rows = misplaced_rows(lin)
    if rows:
        n = sum(b - a + 1 for a, b in rows)
        out.append(Finding("scale_misplaced", lin.prefix + ".weight_scale_inv",
                           f"{n} rows are dequantized with another shard's scale (placement {lin.placement!r})",
                           path=path, rows=rows, block=(rows[0][0] // lin.block[0], 0)))
    if lin.placement == "exact" and lin.fp8:
        for b in straddling_blocks(lin):
            out.append(Finding("straddling_block", lin.prefix + ".weight_scale_inv",
                               "block row holds two shards: exact per-row scales kept in weight_scale_inv_rows; "
                               "a block-scaled kernel would need the fused weight requantized",
                               path=path, severity="info", block=(b, 0)))
    return out
