"""`diff`: two FP8 state dicts (trainer dump vs engine dump) compared bitwise, tensor by tensor.

Every problem (missing or orphan scale, shape or dtype mismatch, unloaded scale, corrupt file) is a
recorded issue naming the tensor; the report is always written.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from refit_verify.compare.bitwise import compare_fp8
from refit_verify.compare.metrics import error_metrics
from refit_verify.fp8 import dequantize
from refit_verify.fp8.format import FP32_FILL
from refit_verify.results import JobResult
from refit_verify.compare.statedict import FP8_DTYPES, StateDict
from refit_verify.compare.tensors import heatmap_rows, scale_ulp_counts, scale_ulp_rows, tensor_row

SCALE_SUFFIX = "_scale_inv"
BLOCK = (128, 128)


@dataclass
class Pairing:
    fp8: dict[str, str] = field(default_factory=dict)  # weight name -> scale name
    plain: list[str] = field(default_factory=list)  # non-FP8 tensors (norms, embeddings ...)
    issues: list[tuple[str, str, str]] = field(default_factory=list)  # (tensor, kind, message)


def pair_tensors(sd: StateDict, side: str) -> Pairing:
    """Split one side into (fp8 weight, scale_inv) pairs and plain tensors; flag orphans both ways."""
    out = Pairing()
    names = set(sd.entries)
    for name in sorted(names):
        e = sd.entries[name]
        if name.endswith(SCALE_SUFFIX):
            if name[: -len(SCALE_SUFFIX)] not in names:
                out.issues.append((name, "orphan_scale", f"side {side}: {name} has no FP8 tensor {name[:-len(SCALE_SUFFIX)]}"))
            continue
        has_scale = name + SCALE_SUFFIX in names
        if e.dtype in FP8_DTYPES or (e.dtype == "U8" and has_scale):  # some dumpers store fp8 as uint8
            if has_scale:
                out.fp8[name] = name + SCALE_SUFFIX
            else:
                out.issues.append((name, "missing_scale", f"side {side}: FP8 tensor {name} has no {name}{SCALE_SUFFIX}"))
        else:
            out.plain.append(name)
    return out


def _expected_scale_shape(shape) -> tuple:
    return tuple(math.ceil(d / b) for d, b in zip(shape, BLOCK))


@dataclass
class DiffOutcome:
    result: JobResult
    issues: list[dict]
    n_compared: int

    @property
    def zero_drift(self) -> bool:
        return self.result.verdict == "pass"


def diff_state_dicts(a: StateDict, b: StateDict, source: Optional[StateDict] = None,
                     progress: Callable[[str], None] = lambda m: None, repro: str = "") -> DiffOutcome:
    res = JobResult("diff", repro=repro)
    issues: list[dict] = []

    def issue(tensor: str, kind: str, msg: str):
        issues.append({"tensor": tensor, "kind": kind, "message": msg})
        res.fail(tensor, f"{kind}: {msg}", repro)

    for side, sd in (("A", a), ("B", b)) + ((("source", source),) if source else ()):
        for where, msg in sd.issues:
            issue(where, "unreadable" if where.endswith(".safetensors") else "duplicate", f"{side} ({sd.root}): {msg}")
    pa, pb = pair_tensors(a, "A"), pair_tensors(b, "B")
    for tensor, kind, msg in pa.issues + pb.issues:
        issue(tensor, kind, msg)
    names_a = set(pa.fp8) | set(pa.plain)
    names_b = set(pb.fp8) | set(pb.plain)
    for n in sorted(names_a - names_b):
        if n not in pb.fp8 and not any(n == t for t, _, _ in pb.issues):
            issue(n, "missing_in_b", f"{n} is in A ({a.root}) but not in B ({b.root})")
    for n in sorted(names_b - names_a):
        if not any(n == t for t, _, _ in pa.issues):
            issue(n, "missing_in_a", f"{n} is in B ({b.root}) but not in A ({a.root})")

    rows, cmps, ulps = [], [], Counter()
    common = sorted(names_a & names_b)
    for i, name in enumerate(common):
        progress(f"{name} ({i + 1}/{len(common)})")
        ea, eb = a.entries[name], b.entries[name]
        if (name in pa.fp8) != (name in pb.fp8) or (ea.dtype != eb.dtype and not {ea.dtype, eb.dtype} <= {"F8_E4M3", "U8"}):
            issue(name, "dtype_mismatch", f"{name}: dtype {ea.dtype} in A vs {eb.dtype} in B")
            continue
        if ea.shape != eb.shape:
            issue(name, "shape_mismatch", f"{name}: shape {list(ea.shape)} in A vs {list(eb.shape)} in B")
            continue
        try:
            if name in pa.fp8:
                row, cmp, counts = _diff_fp8(name, a, b, pa.fp8[name], source, issue)
                if row is None:
                    continue
                rows.append(row)
                cmps.append(cmp)
                ulps += counts
                res.figure("refit_code_mismatch", cmp.n_code_mismatch, name)
                res.figure("refit_scale_mismatch", cmp.n_scale_mismatch, name)
                for side in ("a", "b"):
                    if f"sqnr_db_{side}" in row:
                        res.figure("sqnr_db", row[f"sqnr_db_{side}"], f"{name} [{side.upper()}]")
                        res.figure("calc_diff", row[f"calc_diff_{side}"], f"{name} [{side.upper()}]")
                if not cmp.equal:
                    res.fail(name, cmp.first_mismatch.describe(), repro)
            else:
                ta, tb = a.get(name), b.get(name)
                same = _same_bytes(ta, tb)
                rows.append({"tensor": name, "shape": list(ea.shape), "dtype": ea.dtype, "equal": same,
                             "max_abs": 0.0 if same else float((ta.double() - tb.double()).abs().max())})
                res.figure("plain_tensor_mismatch", 0 if same else 1, name)
                if not same:
                    res.fail(name, f"{ea.dtype} tensor differs (max abs {rows[-1]['max_abs']:.4g})", repro)
        except Exception as exc:  # a corrupt payload behind a valid header must not end the diff
            issue(name, "unreadable", f"{name}: {type(exc).__name__}: {exc}")
    res.tables["tensors"] = rows
    res.tables["block_mismatch"] = heatmap_rows(cmps)
    res.tables["scale_ulp"] = scale_ulp_rows(ulps)
    res.tables["issues"] = issues
    n_code = sum(c.n_code_mismatch for c in cmps)
    n_el = sum(c.n_elements for c in cmps)
    res.metrics = {
        "fp8_tensors_compared": len(cmps), "plain_tensors_compared": len(rows) - len(cmps),
        "tensors_differing": sum(not r["equal"] for r in rows), "issues": len(issues),
        "code_mismatch_rate": n_code / n_el if n_el else 0.0,
        "n_code_mismatch": n_code, "n_scale_mismatch": sum(c.n_scale_mismatch for c in cmps),
    }
    if res.failures:
        res.reason = (f"{res.metrics['tensors_differing']} tensor(s) differ, {len(issues)} issue(s); "
                      f"first: {res.failures[0].reason}")
    else:
        res.reason = f"{len(rows)} tensors bit-identical"
    return DiffOutcome(res, issues, len(rows))


def _same_bytes(x: torch.Tensor, y: torch.Tensor) -> bool:
    """Bytes, not values: -0 vs +0 and NaN payloads matter to a bit-exact refit."""
    return x.dtype == y.dtype and x.shape == y.shape and torch.equal(
        x.contiguous().view(torch.uint8), y.contiguous().view(torch.uint8))


def _diff_fp8(name, a, b, scale_name, source, issue):
    da, db = a.get(name), b.get(name)
    da = da.view(torch.float8_e4m3fn) if da.dtype == torch.uint8 else da
    db = db.view(torch.float8_e4m3fn) if db.dtype == torch.uint8 else db
    sa, sb = a.get(scale_name), b.get(scale_name)
    want = _expected_scale_shape(da.shape)
    for side, s in (("A", sa), ("B", sb)):
        got = tuple(s.shape[:2]) if (s.dim() == 3 and s.shape[-1] == 1) else tuple(s.shape)
        if got != want:
            issue(scale_name, "scale_shape", f"side {side}: {scale_name} shape {list(s.shape)}, expected {list(want)} for {name} {list(da.shape)}")
            return None, None, None
        if s.dtype != torch.float32:
            issue(scale_name, "scale_dtype", f"side {side}: {scale_name} is {s.dtype}, expected float32")
        unloaded = int((s.float() == FP32_FILL).sum())
        if unloaded:
            issue(scale_name, "scale_unloaded", f"side {side}: {unloaded} block(s) of {scale_name} hold float32 min "
                  "(vLLM's fill value: the scale was never loaded)")
    cmp = compare_fp8(da, sa.float(), db, sb.float(), BLOCK, name)
    err_a = err_b = None
    if source is not None:
        if name not in source.entries:
            issue(name, "missing_in_source", f"{name} not in the BF16 source {source.root}")
        else:
            w = source.get(name)
            if tuple(w.shape) != tuple(da.shape):
                issue(name, "shape_mismatch", f"{name}: source shape {list(w.shape)} vs FP8 {list(da.shape)}")
            else:
                err_a = error_metrics(w.float(), dequantize(da, sa.float().reshape(want), BLOCK))
                err_b = error_metrics(w.float(), dequantize(db, sb.float().reshape(want), BLOCK))
    return tensor_row(cmp, err_a, err_b), cmp, scale_ulp_counts(sa, sb)
