"""Plots for report.html, rendered by matplotlib to base64 PNG (the HTML stays one file)."""

from __future__ import annotations

import base64
import io
import math

MAX_BARS = 60  # tensors per bar chart; the worst ones (the full list is in report.json)


def _fig_b64(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # headless CI: never ask for a display
    import matplotlib.pyplot as plt

    return plt


def _num(v):
    from refit_verify.report.policy import as_float

    return as_float(v)


def per_tensor(rows: list[dict]) -> str | None:
    rows = [r for r in rows if "code_mismatch_rate" in r]
    if not rows:
        return None
    rows = sorted(rows, key=lambda r: (-_num(r["code_mismatch_rate"]), r["tensor"]))[:MAX_BARS]
    plt = _plt()
    has_sqnr = any("sqnr_db" in r for r in rows)
    fig, axes = plt.subplots(1, 2 if has_sqnr else 1, figsize=(11, 0.22 * len(rows) + 1.2), sharey=True, squeeze=False)
    names = [r["tensor"] for r in rows]
    y = range(len(rows))
    ax = axes[0][0]
    ax.barh(y, [_num(r["code_mismatch_rate"]) for r in rows], color="#c0392b")
    ax.set_yticks(list(y), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("FP8 code mismatch rate")
    if not any(_num(r["code_mismatch_rate"]) for r in rows):
        ax.set_xlim(0, 1e-3)
        ax.text(5e-4, (len(rows) - 1) / 2, "all codes identical", ha="center", va="center", color="#1e8449")
    ax.set_title("code mismatch rate per tensor")
    if has_sqnr:
        ax2 = axes[0][1]
        vals = [_num(r.get("sqnr_db", math.nan)) for r in rows]
        finite = [v for v in vals if math.isfinite(v)]
        cap = (max(finite) + 5) if finite else 60
        ax2.barh(y, [min(v, cap) if not math.isnan(v) else 0 for v in vals], color="#2471a3")
        ax2.axvline(28, color="k", ls="--", lw=1, label="28 dB (torchao)")
        ax2.set_xlabel("SQNR vs BF16 (dB)")
        ax2.set_title("SQNR per tensor")
        ax2.legend(fontsize=7, loc="lower right")
    return _fig_b64(fig)


def block_heatmaps(rows: list[dict]) -> str | None:
    rows = [r for r in rows if r.get("counts")]
    if not rows:
        return None
    plt = _plt()
    n = len(rows)
    cols = min(3, n)
    fig, axes = plt.subplots(math.ceil(n / cols), cols, figsize=(4.2 * cols, 3.6 * math.ceil(n / cols)), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, r in zip(axes.flat, rows):
        im = ax.imshow(r["counts"], cmap="magma_r", aspect="auto", interpolation="nearest", vmin=0)
        ax.set_title(r["tensor"], fontsize=8)
        ax.set_xlabel("block column", fontsize=7)
        ax.set_ylabel("block row", fontsize=7)
        fig.colorbar(im, ax=ax, fraction=0.046).set_label("mismatching codes", fontsize=7)
    if rows[0].get("label"):
        fig.suptitle(rows[0]["label"], fontsize=9)
    return _fig_b64(fig)


def scale_ulp_hist(rows: list[dict]) -> str | None:
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.bar([r["ulp_diff"] for r in rows], [r["count"] for r in rows], color="#7d3c98")
    ax.set_yscale("log")
    ax.set_xlabel("scale_inv difference A - B (float32 ulps, clipped at ±64)")
    ax.set_ylabel("blocks")
    ax.set_title("scale ratio histogram (0 = bit-identical scale)")
    return _fig_b64(fig)


def logits_kl(rows: list[dict]) -> str | None:
    rows = [r for r in rows if "position" in r and "kl" in r]
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3))
    series: dict = {}
    for r in rows:
        series.setdefault(str(r.get("prompt", "")), []).append((r["position"], _num(r["kl"])))
    for label, pts in sorted(series.items()):
        pts.sort()
        ax.plot([p for p, _ in pts], [v for _, v in pts], lw=1, label=label or None)
    ax.set_yscale("log")
    ax.set_xlabel("token position")
    ax.set_ylabel("KL(engine || trainer)")
    ax.set_title("per-position logits KL")
    if len(series) > 1 and len(series) <= 10:
        ax.legend(fontsize=7)
    return _fig_b64(fig)


PLOTTERS = {  # table name -> (plot title, plotter)
    "tensors": ("Per-tensor code mismatch and SQNR", per_tensor),
    "block_mismatch": ("Per-block mismatch heatmap (worst tensors)", block_heatmaps),
    "scale_ulp": ("Scale ratio histogram", scale_ulp_hist),
    "logits_kl": ("Per-position logits KL", logits_kl),
}


def job_plots(job: dict) -> list[tuple[str, str]]:
    """[(title, base64 png)] for the known tables of one job; a plot failure never loses the report."""
    out = []
    for table, (title, fn) in PLOTTERS.items():
        rows = job.get("tables", {}).get(table)
        if not rows:
            continue
        try:
            b64 = fn(rows)
        except Exception as exc:  # a plotting bug must not cost the run its report
            out.append((f"{title} (plot failed: {type(exc).__name__}: {exc})", ""))
            continue
        if b64:
            out.append((title, b64))
    return out
