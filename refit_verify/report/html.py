"""report.html: one self-contained file (inline CSS, base64 plots), readable offline and in CI artifacts."""

from __future__ import annotations

import json
import os
from html import escape

from refit_verify.report.markdown import SHOWN_TABLES, fmt_value

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1200px;color:#222;padding:0 16px}
h1{font-size:22px} h2{font-size:18px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
.tablebox{max-width:100%;overflow-x:auto;margin:8px 0}
table{border-collapse:collapse;font-size:13px} td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top;overflow-wrap:break-word}
th{background:#f4f4f4} code,pre{background:#f6f8fa;padding:2px 4px;border-radius:3px;font-size:12px;overflow-wrap:break-word}
pre{padding:8px;overflow-x:auto;white-space:pre-wrap} .pass,.ok{color:#1e8449}.fail,.error{color:#c0392b}.skipped{color:#7f8c8d}.warn{color:#b9770e}
.banner{background:#fdebd0;border:1px solid #e59866;padding:8px 12px;border-radius:4px}
.first{border:2px solid #999;border-radius:6px;padding:10px 16px;margin:8px 0 16px}
.first.pass{border-color:#1e8449;background:#eafaf1;color:#222}.first.fail,.first.error,.first.incomplete{border-color:#c0392b;background:#fdedec;color:#222}
.first .word{font-size:28px;font-weight:700} .first .gate{font-size:16px;font-weight:600} .first ul{margin:4px 0}
.first.pass.gatefail{border-color:#b9770e;background:#fef5e7}
.whatif{border:1px dashed #7f8c8d;background:#f8f9f9;padding:4px 12px;margin:12px 0;border-radius:4px}
.whatif h3::before{content:"What-if, not part of the verdict: ";color:#7f8c8d;font-weight:400}
img{max-width:100%;border:1px solid #eee;margin:6px 0} details{margin:6px 0} summary{cursor:pointer;color:#2471a3}
"""
MAX_ROWS = 200  # per table in the HTML; report.json has every row


def _table(rows: list[dict], limit: int = MAX_ROWS) -> str:
    if not rows:
        return "<p><i>empty</i></p>"
    cols: list[str] = []
    for r in rows[:limit]:
        cols += [k for k in r if k not in cols and k != "counts"]
    head = "".join(f"<th>{escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(_cell(r.get(c, '')))}</td>" for c in cols) + "</tr>" for r in rows[:limit]
    )
    more = f"<p><i>{len(rows) - limit} more rows in report.json</i></p>" if len(rows) > limit else ""
    return f"<div class='tablebox'><table><tr>{head}</tr>{body}</table></div>{more}"


def _cell(v) -> str:
    if isinstance(v, float):
        return fmt_value(v)
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    return str(v)


def _verdict(v: str) -> str:
    # words, not emoji: headless browsers and PDF printers often lack an emoji font
    return f'<span class="{escape(v)}">{escape(v.upper())}</span>'


def _first_screen(screen) -> str:
    """Verdict, what was compared, the worst gated figure against its threshold, the gate's warnings."""
    gate_fails = screen.gate == "fail" and screen.verdict == "pass"
    p = [f"<section id='verdict' class='first {escape(screen.verdict)}{' gatefail' if gate_fails else ''}'>",
         f"<div class='word'>{_verdict(screen.verdict)}</div>",
         f"<div class='gate'>refit-verify gate: {_verdict(screen.gate)}"
         + (f" ({len(screen.failures)} reason(s) below; the checks passed, a figure breaks the policy)" if gate_fails else "")
         + "</div>", f"<div>{escape(screen.compared)}</div>"]
    w = screen.worst
    if w is not None:
        p.append(f"<div>Worst gated figure: <b>{escape(w.metric)}</b> = {escape(fmt_value(w.value))} "
                 f"({escape(w.subject)}, job {escape(w.job)}) against {escape(w.threshold)}: "
                 f"<span class='{w.status}'>{w.status.upper()}</span></div>")
    for title, items in (("Gate failures", screen.failures), ("Gate warnings", screen.warnings)):
        if items:
            lis = "".join(f"<li>{escape(i)}</li>" for i in items[:10])
            more = f"<li>… {len(items) - 10} more</li>" if len(items) > 10 else ""
            p.append(f"<div>{title} ({len(items)}):<ul>{lis}{more}</ul></div>")
    if not screen.failures and not screen.warnings:
        p.append("<div>Gate: no failures, no warnings under the default policy.</div>")
    p.append("</section>")
    return "".join(p)


def _gated_table(screen) -> str:
    rows = [{"figure": g.metric, "worst": g.value, "subject": g.subject, "job": g.job, "threshold": g.threshold,
             "status": g.status.upper(), "n": g.n} for g in screen.gated]
    out = "<h3>Gated figures (worst of each, default policy)</h3>" + _table(rows)
    if screen.ungated:
        out += f"<p>Also reported, no threshold: {escape(', '.join(screen.ungated))}</p>"
    return out


def _job_section(job: dict, plots: bool) -> str:
    from refit_verify.report.plots import job_plots

    p = [f"<h2 id='job-{escape(job['name'])}'>{escape(job['name'])} · {_verdict(job['verdict'])}</h2>"]
    if job.get("reason"):
        p.append(f"<pre>{escape(job['reason'])}</pre>")
    p.append(f"<p>Rerun: <code>{escape(job.get('repro', ''))}</code></p>")
    if job.get("failures"):
        p.append("<h3>Failures</h3>")
        p.append(_table([{"case": f["case"], "reason": f["reason"], "reproduce": f.get("repro", "")} for f in job["failures"]]))
    if job.get("metrics"):
        p.append(_table([job["metrics"]]))
    for plot in (job_plots(job) if plots else []):
        block = [f"<h3>{escape(plot.title)}</h3>"]
        if plot.png_b64:
            block.append(f'<img alt="{escape(plot.title)}" src="data:image/png;base64,{plot.png_b64}">')
        p.append(f"<div class='whatif'>{''.join(block)}</div>" if plot.whatif else "".join(block))
    for name, rows in job.get("tables", {}).items():
        if name in SHOWN_TABLES and rows:
            p.append(f"<h3>{escape(SHOWN_TABLES[name])}</h3>{_table(rows)}")
            continue
        p.append(f"<details><summary>table: {escape(name)} ({len(rows)} rows)</summary>{_table(rows)}</details>")
    if job.get("figures"):
        p.append(f"<details><summary>figures ({len(job['figures'])})</summary>{_table(job['figures'])}</details>")
    return "\n".join(p)


def render(data: dict, plots: bool = True) -> str:
    from refit_verify.report.summary import first_screen, fmt_duration

    # REFIT_VERIFY_NO_PLOTS=1 / --no-plots: matplotlib costs seconds; tables stay
    plots = plots and os.environ.get("REFIT_VERIFY_NO_PLOTS", "") in ("", "0")
    screen = first_screen(data)
    verdict = data.get("verdict", "incomplete")
    p = [f"<h1>refit-verify {escape(data.get('kind', 'run'))}</h1>", _first_screen(screen)]
    if data.get("status") != "complete":
        p.append(f'<p class="banner"><b>Incomplete report</b>: {escape(str(data.get("interrupted") or "run did not finish"))}. '
                 f"Not run: {escape(', '.join(data.get('not_run', [])) or '—')}</p>")
    p.append(f"<p><code>{escape(data.get('command', ''))}</code><br>run {escape(str(data.get('run_id')))} · "
             f"{escape(str(data.get('started_at')))} → {escape(str(data.get('finished_at')))} · seeds {escape(json.dumps(data.get('seeds', {})))}</p>")
    p.append("<h2>Summary</h2><div class='tablebox'><table><tr><th>job</th><th>verdict</th><th>time</th><th>reason / metrics</th></tr>")
    for job in data.get("jobs", []):
        summary = job.get("reason") or ", ".join(f"{k}={fmt_value(v)}" for k, v in job.get("metrics", {}).items())
        p.append(f"<tr><td><a href='#job-{escape(job['name'])}'>{escape(job['name'])}</a></td><td>{_verdict(job['verdict'])}</td>"
                 f"<td>{escape(fmt_duration(job.get('duration_s', 0)))}</td><td>{escape(summary)}</td></tr>")
    p.append("</table></div>")
    if screen.gated or screen.ungated:
        p.append(_gated_table(screen))
    p += [_job_section(job, plots) for job in data.get("jobs", [])]
    p.append("<h2>Environment</h2>")
    p.append(f"<pre>{escape(json.dumps(data.get('environment', {}), indent=1))}</pre>")
    p.append(f"<h2>Options</h2><pre>{escape(json.dumps(data.get('options', {}), indent=1))}</pre>")
    title = f"refit-verify {data.get('kind', 'run')} {data.get('run_id', '')} {verdict}"
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{escape(title)}</title>"
            f"<style>{CSS}</style></head><body>\n" + "\n".join(p) + "\n</body></html>\n")
