"""Magnitude metrics used by peers (FACTS.md §6), computed in float64, NaN-aware."""

from __future__ import annotations

import math

import torch

from refit_verify.fp8 import format as fmt


def _pair(x: torch.Tensor, y: torch.Tensor):
    x, y = x.detach().double().flatten().cpu(), y.detach().double().flatten().cpu()
    ok = torch.isfinite(x) & torch.isfinite(y)
    return x[ok], y[ok], int((~ok).sum())


def sqnr_db(ref: torch.Tensor, test: torch.Tensor) -> float:
    """torch.ao numeric suite: 20 log10(|ref| / |ref - test|); inf when identical."""
    x, y, _ = _pair(ref, test)
    noise = torch.linalg.vector_norm(x - y)
    signal = torch.linalg.vector_norm(x)
    if noise == 0:
        return math.inf
    if signal == 0:
        return -math.inf
    return float(20 * torch.log10(signal / noise))


def rel_l2(ref: torch.Tensor, test: torch.Tensor) -> float:
    x, y, _ = _pair(ref, test)
    den = torch.linalg.vector_norm(x)
    num = torch.linalg.vector_norm(x - y)
    if den == 0:
        return 0.0 if num == 0 else math.inf
    return float(num / den)


def cosine(ref: torch.Tensor, test: torch.Tensor) -> float:
    x, y, _ = _pair(ref, test)
    den = torch.linalg.vector_norm(x) * torch.linalg.vector_norm(y)
    if den == 0:
        return 1.0 if torch.equal(x, y) else 0.0
    return float(torch.dot(x, y) / den)


def calc_diff(x: torch.Tensor, y: torch.Tensor) -> float:
    """DeepGEMM: 1 - 2 sum(xy) / sum(x^2 + y^2), float64. Its FP8 GEMM threshold is 0.001."""
    a, b, _ = _pair(x, y)
    den = (a * a + b * b).sum()
    if den == 0:
        return 0.0
    return float(1 - 2 * (a * b).sum() / den)


def max_abs(ref: torch.Tensor, test: torch.Tensor) -> float:
    x, y, _ = _pair(ref, test)
    return float((x - y).abs().max()) if x.numel() else 0.0


def nan_accounting(t: torch.Tensor) -> dict:
    if t.dtype in (torch.float8_e4m3fn, torch.uint8):
        n = int(fmt.is_nan_code(fmt.codes(t)).sum())
        return {"nan": n, "inf": 0, "total": t.numel()}
    t = t.detach()
    return {"nan": int(torch.isnan(t).sum()), "inf": int(torch.isinf(t).sum()), "total": t.numel()}


def scale_stats(a: torch.Tensor, b: torch.Tensor) -> dict:
    """Scale ratio a/b and float32 ulp distance over blocks whose scales are finite and non-zero."""
    a, b = a.float().flatten().cpu(), b.float().flatten().cpu()
    ok = torch.isfinite(a) & torch.isfinite(b) & (b != 0)
    if not ok.any():
        return {"n": 0, "n_differ": int((a.view(torch.int32) != b.view(torch.int32)).sum())}
    ratio = (a[ok].double() / b[ok].double())
    ulp = (fmt.ordered_f32(a[ok]) - fmt.ordered_f32(b[ok])).abs()
    return {
        "n": int(ok.sum()),
        "n_differ": int((a.view(torch.int32) != b.view(torch.int32)).sum()),
        "ratio_min": float(ratio.min()),
        "ratio_max": float(ratio.max()),
        "ulp_max": int(ulp.max()),
        "ulp_hist": {int(k): int(v) for k, v in zip(*torch.unique(ulp, return_counts=True))},
    }


def error_metrics(ref: torch.Tensor, test: torch.Tensor) -> dict:
    return {
        "sqnr_db": sqnr_db(ref, test),
        "rel_l2": rel_l2(ref, test),
        "cosine": cosine(ref, test),
        "calc_diff": calc_diff(ref, test),
        "max_abs": max_abs(ref, test),
        "nan_ref": nan_accounting(ref)["nan"],
        "nan_test": nan_accounting(test)["nan"],
    }
