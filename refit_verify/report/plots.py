"""Plots for report.html, rendered by matplotlib to base64 PNG (the HTML stays one file)."""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass, field

MAX_BARS = 60  # tensors per bar chart; the worst ones (the full list is in report.json)
DPI = 90


@dataclass(frozen=True)
class Plot:
    title: str
    png_b64: str  # "" when the plot failed (the title says why)
    # every visible text of the figure as (text, (x0, y0, x1, y1)) in pixels: what a layout test checks
    labels: tuple = field(default=(), repr=False)
    whatif: bool = False  # a comparison shown for information, not part of the job's verdict


@dataclass(frozen=True)
class PanelLayout:
    width: float  # inches per panel
    height: float
    engine: str | None  # matplotlib layout engine; "constrained" keeps colour bars clear of the next panel


HEATMAP_LAYOUT = PanelLayout(4.6, 3.8, "constrained")


@dataclass(frozen=True)
class Rendered:
    png_b64: str
    labels: tuple
    whatif: bool = False


def _axis_labels(ax, renderer) -> list:
    """Title, axis labels and the tick labels drawn inside the axes' span (ticks beyond it aren't drawn)."""
    box = ax.get_window_extent(renderer)
    texts = [ax.title, ax.xaxis.label, ax.yaxis.label]
    texts += [t for t in ax.xaxis.get_ticklabels() if box.x0 - 1 <= _center(t, renderer)[0] <= box.x1 + 1]
    texts += [t for t in ax.yaxis.get_ticklabels() if box.y0 - 1 <= _center(t, renderer)[1] <= box.y1 + 1]
    legend = ax.get_legend()
    if legend is not None:
        texts += list(legend.get_texts())
    return texts


def _center(text, renderer) -> tuple:
    b = text.get_window_extent(renderer)
    return ((b.x0 + b.x1) / 2, (b.y0 + b.y1) / 2)


def text_boxes(fig) -> tuple:
    """(text, bbox) of every visible, non-empty text in the drawn figure."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = list(fig.texts)
    suptitle = getattr(fig, "_suptitle", None)  # some matplotlib versions keep it apart from fig.texts
    if suptitle is not None and all(t is not suptitle for t in texts):
        texts.append(suptitle)
    for ax in fig.axes:
        if ax.get_visible() and ax.axison:
            texts += _axis_labels(ax, renderer)
    out = []
    for t in texts:
        if t.get_visible() and t.get_text().strip():
            b = t.get_window_extent(renderer)
            out.append((t.get_text(), (round(b.x0, 1), round(b.y0, 1), round(b.x1, 1), round(b.y1, 1))))
    return tuple(out)


def overlapping_labels(labels: tuple, tol: float = 1.0) -> list:
    """Pairs of labels whose boxes overlap by more than `tol` pixels both ways."""
    out = []
    for i, (ta, a) in enumerate(labels):
        for tb, b in labels[i + 1:]:
            w = min(a[2], b[2]) - max(a[0], b[0])
            h = min(a[3], b[3]) - max(a[1], b[1])
            if w > tol and h > tol:
                out.append((ta, tb))
    return out


def _render(fig, whatif: bool = False) -> Rendered:
    import matplotlib.pyplot as plt

    labels = text_boxes(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return Rendered(base64.b64encode(buf.getvalue()).decode("ascii"), labels, whatif)


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # headless CI: never ask for a display
    import matplotlib.pyplot as plt

    return plt


def _num(v):
    from refit_verify.report.policy import as_float

    return as_float(v)


def per_tensor(rows: list[dict]) -> Rendered | None:
    rows = [r for r in rows if "code_mismatch_rate" in r]
    if not rows:
        return None
    rows = sorted(rows, key=lambda r: (-_num(r["code_mismatch_rate"]), r["tensor"]))[:MAX_BARS]
    plt = _plt()
    has_sqnr = any("sqnr_db" in r for r in rows)
    fig, axes = plt.subplots(1, 2 if has_sqnr else 1, figsize=(11, 0.22 * len(rows) + 1.4), sharey=True, squeeze=False,
                             layout="constrained", dpi=DPI)
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
        # outside the axes: inside, it covers the bars it explains
        ax2.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    return _render(fig)


def _integer_ticks(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # blocks are counted, never -0.5 or 1.5
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def block_heatmaps(rows: list[dict]) -> Rendered | None:
    from matplotlib.ticker import MaxNLocator

    rows = [r for r in rows if r.get("counts")]
    if not rows:
        return None
    plt = _plt()
    n = len(rows)
    cols = min(3, n)
    lay = HEATMAP_LAYOUT
    fig, axes = plt.subplots(math.ceil(n / cols), cols, figsize=(lay.width * cols, lay.height * math.ceil(n / cols)),
                             squeeze=False, layout=lay.engine, dpi=DPI)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, r in zip(axes.flat, rows):
        im = ax.imshow(r["counts"], cmap="magma_r", aspect="auto", interpolation="nearest", vmin=0)
        ax.set_title(r["tensor"], fontsize=8)
        ax.set_xlabel("block column", fontsize=7)
        ax.set_ylabel("block row", fontsize=7)
        ax.tick_params(labelsize=7)
        _integer_ticks(ax)
        bar = fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02)
        bar.ax.tick_params(labelsize=7)
        bar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # codes are counted
        bar.set_label("mismatching codes", fontsize=7)
    label = str(rows[0].get("label") or "")
    if label:
        fig.suptitle(label, fontsize=9)
    return _render(fig, whatif=label.startswith("what-if"))


def scale_ulp_hist(rows: list[dict]) -> Rendered | None:
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3), layout="constrained", dpi=DPI)
    counts = [r["count"] for r in rows]
    ax.bar([r["ulp_diff"] for r in rows], counts, color="#7d3c98", width=0.8)
    positive = [c for c in counts if c > 0]
    if positive and max(positive) / min(positive) > 20:  # log only where the counts span decades
        ax.set_yscale("log")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("scale_inv difference, side A - side B (float32 ulps, clipped at ±64)")
    ax.set_ylabel("blocks")
    ax.set_title("scale_inv difference per block (0 = bit-identical)")
    return _render(fig)


def logits_kl(rows: list[dict]) -> Rendered | None:
    rows = [r for r in rows if "position" in r and "kl" in r]
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3), layout="constrained", dpi=DPI)
    series: dict = {}
    for r in rows:
        series.setdefault(str(r.get("prompt", "")), []).append((r["position"], _num(r["kl"])))
    for label, pts in sorted(series.items()):
        pts.sort()
        ax.plot([p for p, _ in pts], [v for _, v in pts], lw=1, label=label or None)
    values = [v for pts in series.values() for _, v in pts if v > 0]
    if values and max(values) / min(values) > 20:
        ax.set_yscale("log")
    ax.set_xlabel("token position")
    ax.set_ylabel("KL(engine || trainer)")
    ax.set_title("per-position logits KL")
    if len(series) > 1 and len(series) <= 10:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    return _render(fig)


PLOTTERS = {  # table name -> (plot title, plotter)
    "tensors": ("Per-tensor code mismatch and SQNR", per_tensor),
    "block_mismatch": ("Per-block mismatch heatmap (worst tensors)", block_heatmaps),
    "scale_ulp": ("scale_inv difference per block", scale_ulp_hist),
    "logits_kl": ("Per-position logits KL", logits_kl),
}


def job_plots(job: dict) -> list[Plot]:
    """The plots of one job's known tables; a plot failure never loses the report."""
    out = []
    for table, (title, fn) in PLOTTERS.items():
        rows = job.get("tables", {}).get(table)
        if not rows:
            continue
        try:
            r = fn(rows)
        except Exception as exc:  # a plotting bug must not cost the run its report
            out.append(Plot(f"{title} (plot failed: {type(exc).__name__}: {exc})", ""))
            continue
        if r:
            out.append(Plot(title, r.png_b64, r.labels, r.whatif))
    return out
