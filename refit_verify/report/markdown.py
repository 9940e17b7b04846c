"""report.md: a summary short enough for a PR comment or $GITHUB_STEP_SUMMARY."""

from __future__ import annotations

ICON = {"pass": "✅ pass", "fail": "❌ fail", "error": "💥 error", "skipped": "⏭️ skipped", "incomplete": "⚠️ incomplete"}
MAX_FAILURES = 20  # per job; the JSON has them all


def fmt_value(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def worst_figures(data: dict) -> dict:
    """metric -> (min, max, subject of max, n) over all jobs: the numbers a reviewer looks for."""
    from refit_verify.report.policy import as_float

    out: dict = {}
    for job in data.get("jobs", []):
        for f in job.get("figures", []):
            v = as_float(f["value"])
            lo, hi, who_lo, who_hi, n = out.get(f["metric"], (v, v, f["subject"], f["subject"], 0))
            if v < lo or v != v:
                lo, who_lo = v, f["subject"]
            if v > hi or v != v:
                hi, who_hi = v, f["subject"]
            out[f["metric"]] = (lo, hi, who_lo, who_hi, n + 1)
    return out


# tables shown in full in the summary (others stay in report.json / the html details)
SHOWN_TABLES = {"greedy_text": "greedy continuations per engine (⟦ marks the first token that differs from bf16)"}


def _cell(s) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def render(data: dict) -> str:
    verdict = data.get("verdict", "incomplete")
    lines = [f"## refit-verify {data.get('kind', 'run')}: {ICON.get(verdict, verdict)}", ""]
    if data.get("status") != "complete":
        why = data.get("interrupted") or "still running or killed"
        lines += [f"> ⚠️ **Report incomplete** ({_cell(why)}). Not run: {', '.join(data.get('not_run', [])) or '—'}", ""]
    env = data.get("environment", {})
    cs = env.get("cast_semantics", {}).get("cpu", {})
    lines += [
        f"`{_cell(data.get('command', ''))}` · torch {env.get('torch')} · vllm {env.get('vllm') or 'absent'}"
        f" · device {env.get('device_name', env.get('device'))} · e4m3 overflow: {cs.get('overflow', '?')}"
        f" · seeds {data.get('seeds', {})}",
        "",
        "| job | verdict | time | summary |",
        "|---|---|---|---|",
    ]
    for job in data.get("jobs", []):
        summary = job.get("reason") or ", ".join(f"{k}={fmt_value(v)}" for k, v in list(job.get("metrics", {}).items())[:4])
        lines.append(f"| {job['name']} | {ICON.get(job['verdict'], job['verdict'])} | {job.get('duration_s', 0):.1f}s | {_cell(summary)} |")
    figs = worst_figures(data)
    if figs:
        lines += ["", "| figure | min | max | worst subject | n |", "|---|---|---|---|---|"]
        for metric, (lo, hi, who_lo, who_hi, n) in sorted(figs.items()):
            worst = who_lo if metric in ("sqnr_db", "logits_cosine", "top1_match") else who_hi
            lines.append(f"| {metric} | {fmt_value(lo)} | {fmt_value(hi)} | {_cell(worst)} | {n} |")
    for job in data.get("jobs", []):
        for name, title in SHOWN_TABLES.items():
            rows = job.get("tables", {}).get(name)
            if rows:
                cols = list(rows[0])
                lines += ["", f"**{job['name']}: {title}**", "", "| " + " | ".join(cols) + " |",
                          "|" + "---|" * len(cols)]
                lines += ["| " + " | ".join(_cell(r.get(c, "")) for c in cols) + " |" for r in rows]
    for job in data.get("jobs", []):
        fails = job.get("failures", [])
        if not fails and job["verdict"] != "error":
            continue
        lines += ["", f"### {job['name']}: {ICON.get(job['verdict'], job['verdict'])}"]
        if job["verdict"] == "error":
            lines += ["", f"```\n{job.get('reason', '')}\n```", "Rerun: `" + job.get("repro", "") + "`"]
        for f in fails[:MAX_FAILURES]:
            lines += [f"- **{_cell(f['case'])}**: {_cell(f['reason'])}"]
            if f.get("repro"):
                lines += [f"  `{f['repro']}`"]
        if len(fails) > MAX_FAILURES:
            lines.append(f"- … {len(fails) - MAX_FAILURES} more in report.json")
    return "\n".join(lines) + "\n"
