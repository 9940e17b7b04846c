"""report.md: a summary short enough for a PR comment or $GITHUB_STEP_SUMMARY."""

from __future__ import annotations

ICON = {"pass": "✅ pass", "fail": "❌ fail", "error": "💥 error", "skipped": "⏭️ skipped", "incomplete": "⚠️ incomplete"}
MAX_FAILURES = 20  # per job; the JSON has them all


def fmt_value(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


# tables shown in full in the summary (others stay in report.json / the html details)
SHOWN_TABLES = {"greedy_text": "greedy continuations per engine (⟦ marks the first token that differs from bf16)"}


def _cell(s) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _first_lines(screen) -> list[str]:
    """The same first facts as report.html's first screen."""
    lines = [_cell(screen.compared), ""]
    w = screen.worst
    if w is not None:
        lines += [f"Worst gated figure: **{w.metric}** = {fmt_value(w.value)} ({_cell(w.subject)}, job {w.job}) "
                  f"against {w.threshold}: **{w.status.upper()}**", ""]
    for title, items in (("Gate failures", screen.failures), ("Gate warnings", screen.warnings)):
        if items:
            lines += [f"{title} ({len(items)}):"] + [f"- {_cell(i)}" for i in items[:10]] + [""]
    return lines


def _gated_lines(screen) -> list[str]:
    if not screen.gated:
        return []
    lines = ["", "| figure | worst | subject | threshold | status | n |", "|---|---|---|---|---|---|"]
    for g in screen.gated:
        lines.append(f"| {g.metric} | {fmt_value(g.value)} | {_cell(g.subject)} | {g.threshold} | {g.status.upper()} | {g.n} |")
    if screen.ungated:
        lines += ["", "Also reported, no threshold: " + ", ".join(screen.ungated)]
    return lines


def render(data: dict) -> str:
    from refit_verify.report.summary import first_screen, fmt_duration

    verdict = data.get("verdict", "incomplete")
    screen = first_screen(data)
    lines = [f"## refit-verify {data.get('kind', 'run')}: {ICON.get(verdict, verdict)} · gate: {ICON[screen.gate]}",
             ""] + _first_lines(screen)
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
        lines.append(f"| {job['name']} | {ICON.get(job['verdict'], job['verdict'])} | {fmt_duration(job.get('duration_s', 0))} | {_cell(summary)} |")
    lines += _gated_lines(screen)
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
