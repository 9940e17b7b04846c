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
from refit_verify.fp8 import format as fmt
from refit_verify.fp8.format import FP32_FILL
from refit_verify.results import JobResult
from refit_verify.compare.statedict import FP8_DTYPES, StateDict, source_tensor
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
                     progress: Callable[[str], None] = lambda m: None, repro: str = "",
                     into: Optional[JobResult] = None) -> DiffOutcome:
    """Compare A and B tensor by tensor. `into` (a JobResult already in the report) is filled as tensors
    finish, so a diff interrupted by ^C or SIGTERM still reports the tensors it finished."""
    res = into if into is not None else JobResult("diff", repro=repro)
    issues: list[dict] = []
    rows, cmps, ulps = [], [], Counter()
    res.tables.update(tensors=rows, issues=issues)

    def issue(tensor: str, kind: str, msg: str):
        issues.append({"tensor": tensor, "kind": kind, "message": msg})
        res.fail(tensor, f"{kind}: {msg}", repro)

    for side, sd in (("A", a), ("B", b)) + ((("source", source),) if source else ()):
        for where, kind, msg in sd.issues:
            issue(where, kind, f"{side} ({sd.root}): {msg}")
        if not sd.entries:  # nothing to compare is never "zero drift"
            issue(sd.root, "empty", f"side {side} ({sd.root}) holds no readable tensors")
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
    common = sorted(names_a & names_b)
    done = 0
    try:
        for done, name in enumerate(common):
            progress(f"{name} ({done + 1}/{len(common)})")
            _diff_one(name, a, b, pa, pb, source, issue, res, (rows, cmps, ulps))
        done = len(common)
    finally:
        _summarize(res, rows, cmps, ulps, issues)
        if done < len(common):  # interrupted: what finished is kept, the verdict can't be a pass
            res.verdict = "error"
            res.reason = f"interrupted after {done}/{len(common)} tensors; {res.reason}"
    return DiffOutcome(res, issues, len(rows))


def _diff_one(name, a, b, pa, pb, source, issue, res, acc) -> None:
    rows, cmps, ulps = acc
    ea, eb = a.entries[name], b.entries[name]
    if (name in pa.fp8) != (name in pb.fp8) or (ea.dtype != eb.dtype and not {ea.dtype, eb.dtype} <= {"F8_E4M3", "U8"}):
        issue(name, "dtype_mismatch", f"{name}: dtype {ea.dtype} in A vs {eb.dtype} in B")
        return
    if ea.shape != eb.shape:
        issue(name, "shape_mismatch", f"{name}: shape {list(ea.shape)} in A vs {list(eb.shape)} in B")
        return
    if name in pa.fp8 and len(ea.shape) != 2:
        issue(name, "bad_rank", f"{name}: FP8 weight of rank {len(ea.shape)} (shape {list(ea.shape)}); block FP8 "
              "weights are 2-D [out, in]")
        return
    try:
        if name in pa.fp8:
            row, cmp, counts = _diff_fp8(name, a, b, pa.fp8[name], source, issue)
            if row is None:
                return
            rows.append(row)
            cmps.append(cmp)
            ulps.update(counts)
            res.figure("refit_code_mismatch", cmp.n_code_mismatch, name)
            res.figure("refit_scale_mismatch", cmp.n_scale_mismatch, name)
            for side in ("a", "b"):
                if f"sqnr_db_{side}" in row:
                    res.figure("sqnr_db", row[f"sqnr_db_{side}"], f"{name} [{side.upper()}]")
                    res.figure("calc_diff", row[f"calc_diff_{side}"], f"{name} [{side.upper()}]")
            if not cmp.equal:
                res.fail(name, cmp.first_mismatch.describe(), res.repro)
        else:
            ta, tb = a.get(name), b.get(name)
            same = _same_bytes(ta, tb)
            rows.append({"tensor": name, "shape": list(ea.shape), "dtype": ea.dtype, "equal": same,
                         "max_abs": 0.0 if same else float((ta.double() - tb.double()).abs().max())})
            res.figure("plain_tensor_mismatch", 0 if same else 1, name)
            if not same:
                res.fail(name, f"{ea.dtype} tensor differs (max abs {rows[-1]['max_abs']:.4g})", res.repro)
    except Exception as exc:  # a corrupt payload behind a valid header must not end the diff
        issue(name, "unreadable", f"{name}: {type(exc).__name__}: {exc}")


def _summarize(res: JobResult, rows, cmps, ulps, issues) -> None:
    res.tables["block_mismatch"] = heatmap_rows(cmps)
    res.tables["scale_ulp"] = scale_ulp_rows(ulps)
    n_code = sum(c.n_code_mismatch for c in cmps)
    n_el = sum(c.n_elements for c in cmps)
    res.metrics = {
        "fp8_tensors_compared": len(cmps), "plain_tensors_compared": len(rows) - len(cmps),
        "tensors_differing": sum(not r["equal"] for r in rows), "issues": len(issues),
        "code_mismatch_rate": n_code / n_el if n_el else 0.0,
        "n_code_mismatch": n_code, "n_scale_mismatch": sum(c.n_scale_mismatch for c in cmps),
    }
    if not rows and not res.failures:  # two empty state dicts: nothing was checked, never "zero drift"
        res.fail("<state dicts>", "no tensors compared: nothing was checked", res.repro)
    if res.failures:
        res.reason = (f"{res.metrics['tensors_differing']} tensor(s) differ, {len(issues)} issue(s); "
                      f"first: {res.failures[0].reason}")
    else:
        res.reason = f"{len(rows)} tensors bit-identical"


def _same_bytes(x: torch.Tensor, y: torch.Tensor) -> bool:
    """Bytes, not values: -0 vs +0 and NaN payloads matter to a bit-exact refit."""
    return x.dtype == y.dtype and x.shape == y.shape and torch.equal(
        x.contiguous().view(torch.uint8), y.contiguous().view(torch.uint8))


# vLLM pre-fills weight_scale_inv with float32 min; a dump that went through a cast or an
# approximate write may hold a value near it. No real scale is anywhere close (they are positive).
PLACEHOLDER_BELOW = FP32_FILL / 2


def _first_block(mask: torch.Tensor) -> tuple:
    return tuple(int(i) for i in mask.nonzero()[0])


def _validate_scale(s: torch.Tensor, side: str, scale_name: str, issue) -> None:
    """One side alone: every scale_inv finite and positive, else an issue naming count and first block."""
    unloaded = s <= PLACEHOLDER_BELOW
    if unloaded.any():
        issue(scale_name, "scale_unloaded", f"side {side}: {int(unloaded.sum())} block(s) of {scale_name} hold "
              f"~float32 min (vLLM's fill value: the scale was never loaded), first block {_first_block(unloaded)}")
    bad = ~(torch.isfinite(s) & (s > 0)) & ~unloaded
    if bad.any():
        blk = _first_block(bad)
        issue(scale_name, "scale_invalid", f"side {side}: {int(bad.sum())} block(s) of {scale_name} are not finite "
              f"and positive (NaN, inf, zero or negative), first block {blk} = {float(s[blk])!r}")


def _validate_codes(d: torch.Tensor, side: str, name: str, issue) -> None:
    """A block whose every code is NaN holds no weight at all (a stray NaN, the same on both sides, may be a
    faithfully quantized NaN input: that is compared bitwise, not flagged here)."""
    nan = fmt.is_nan_code(fmt.codes(d)).float()
    if not nan.numel() or not nan.any():
        return
    per_block = torch.nn.functional.avg_pool2d(nan[None, None], BLOCK, ceil_mode=True)[0, 0]
    full = per_block == 1.0
    if full.any():
        issue(name, "nan_codes", f"side {side}: {int(full.sum())} block(s) of {name} are all NaN codes, "
              f"first block {_first_block(full)}")


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
        _validate_scale(s.float().reshape(want), side, scale_name, issue)
    for side, d in (("A", da), ("B", db)):
        _validate_codes(d, side, name, issue)
    cmp = compare_fp8(da, sa.float(), db, sb.float(), BLOCK, name)
    err_a = err_b = None
    if source is not None:
        w = source_tensor(source, name)
        if w is None:
            issue(name, "missing_in_source", f"{name} not in the BF16 source {source.root} (nor its unfused parts)")
        else:
            if tuple(w.shape) != tuple(da.shape):
                issue(name, "shape_mismatch", f"{name}: source shape {list(w.shape)} vs FP8 {list(da.shape)}")
            else:
                err_a = error_metrics(w.float(), dequantize(da, sa.float().reshape(want), BLOCK))
                err_b = error_metrics(w.float(), dequantize(db, sb.float().reshape(want), BLOCK))
    return tensor_row(cmp, err_a, err_b), cmp, scale_ulp_counts(sa, sb)
