"""report.html in a real browser (Debian's chromium, headless) at 1400 px: the verdict is on the first screen,
nothing is wider than the page, every image loads; and no two labels of a plot overlap, from the plot's own
layout data. `.ci/run` installs chromium with apt-get; without it the browser tests skip, saying so."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from refit_verify.report import html as html_mod
from refit_verify.report.plots import job_plots, overlapping_labels

WIDTH, HEIGHT = 1400, 900
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")

# Runs in the page after load and writes what it measured into the DOM, which --dump-dom prints.
PROBE = """
<script>
window.addEventListener('load', function () {
  var v = document.getElementById('verdict');
  var r = v ? v.getBoundingClientRect() : null;
  var imgs = Array.prototype.slice.call(document.images);
  var wide = Array.prototype.slice.call(document.querySelectorAll('body *')).filter(function (e) {
    return e.getBoundingClientRect().right > document.documentElement.clientWidth + 1 && !e.closest('.tablebox');
  }).map(function (e) { return e.tagName + '.' + e.className; });
  var out = {
    verdict_top: r ? r.top : null, verdict_bottom: r ? r.bottom : null, inner_height: window.innerHeight,
    verdict_text: v ? v.querySelector('.word').textContent : null,
    scroll_width: document.documentElement.scrollWidth, client_width: document.documentElement.clientWidth,
    wide: wide.slice(0, 5),
    images: imgs.length, broken: imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); }).length
  };
  var pre = document.createElement('pre'); pre.id = 'rv-probe';
  var mark = 'RV' + 'PROBE';  // split, so the marker never matches this script's own source
  pre.textContent = mark + JSON.stringify(out) + mark;
  document.body.appendChild(pre);
});
</script>
"""

LONG = "model.language_model.layers.0.mlp.experts.gate_up_proj.weight"


def report_data(verdict: str = "pass") -> dict:
    """A report with every plot kind, long names and a wide metrics row: what stresses the layout."""
    names = [f"model.layers.{i}.self_attn.qkv_proj.weight" for i in range(12)] + [LONG]
    tensors = [{"tensor": n, "code_mismatch_rate": 0.001 * i, "sqnr_db": 30.0 + i} for i, n in enumerate(names)]
    counts = [[(r * 3 + c) % 5 for c in range(2)] for r in range(4)]  # few blocks: where ticks went fractional
    heat = [{"tensor": n, "block": [0, 0], "counts": counts, "label": "what-if trainer=nemo_rl vs engine=vllm_per_block"}
            for n in names[:5]]
    metrics = {f"metric_with_a_long_name_{i}": 1.0 / (i + 1) for i in range(24)}
    job = {"name": "refit_pipeline", "verdict": verdict, "duration_s": 0.0004, "reason": "r", "repro": "refit-verify run",
           "metrics": metrics, "failures": [], "figures": [
               {"metric": "gen_kl_error", "value": 0.0014, "subject": "bf16 vs fp8_before"},
               {"metric": "refit_code_mismatch", "value": 0, "subject": LONG}],
           "tables": {"tensors": tensors, "block_mismatch": heat,
                      "scale_ulp": [{"ulp_diff": d, "count": c} for d, c in ((-2, 3), (0, 900), (1, 40))],
                      "logits_kl": [{"prompt": p, "position": i, "kl": 1e-4 * (1 + i)} for p in ("a", "b") for i in range(30)],
                      "wide": [{f"column_{i}": LONG for i in range(20)}]}}
    return {"kind": "run", "verdict": verdict, "status": "complete", "command": "refit-verify run " + "--x " * 200,
            "options": {"suite": "pr", "device": "cpu", "config": "tiny-llama"}, "jobs": [job]}


def browser_probe(html: str, tmp_path) -> dict:
    page = tmp_path / "report.html"
    page.write_text(html.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--window-size={WIDTH},{HEIGHT}",
         "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    m = re.search(r"RVPROBE(.*?)RVPROBE", proc.stdout, re.S)
    assert m, f"the probe script did not run in chromium (rc {proc.returncode}): {proc.stderr[-500:]}"
    return json.loads(m.group(1))


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium chromium-driver; .ci/run does this)")
    return browser_probe(html_mod.render(report_data("fail")), tmp_path_factory.mktemp("browser"))


def test_verdict_is_on_the_first_screen(probe):
    assert probe["verdict_text"] == "FAIL"
    assert probe["verdict_top"] is not None and probe["verdict_bottom"] <= probe["inner_height"], probe


def test_nothing_is_wider_than_the_page(probe):
    assert probe["scroll_width"] <= probe["client_width"], probe
    assert probe["wide"] == [], probe


def test_every_image_loads(probe):
    assert probe["images"] >= 4 and probe["broken"] == 0, probe


@pytest.mark.parametrize("kind", ["tensors", "block_mismatch", "scale_ulp", "logits_kl"])
def test_no_two_plot_labels_overlap(kind):
    job = report_data()["jobs"][0]
    job["tables"] = {kind: job["tables"][kind]}
    (plot,) = job_plots(job)
    assert plot.png_b64 and plot.labels, plot.title
    assert overlapping_labels(plot.labels) == []


def test_whatif_plot_is_set_apart_from_the_verdict():
    html = html_mod.render(report_data())
    assert "<div class='whatif'><h3>Per-block mismatch heatmap" in html


def test_first_screen_names_worst_figure_threshold_and_warnings():
    html = html_mod.render(report_data())
    first = html[html.index("id='verdict'"):html.index("</section>")]
    assert "gen_kl_error" in first and "max 0.003" in first and "WARN" in first
    assert "Gate warnings (1)" in first


def test_first_screen_says_when_the_gate_fails_a_passing_run():
    """SmolLM2's default run: every job passes, gen_kl_error breaks the policy. The first screen and the
    report.md headline say both, so a green PASS never hides `refit-verify gate` exiting 1."""
    from refit_verify.report import markdown

    data = report_data("pass")
    data["jobs"][0]["figures"][0]["value"] = 0.0117  # gen_kl_error above max 0.003
    html = html_mod.render(data)
    first = html[html.index("id='verdict'"):html.index("</section>")]
    assert "class='first pass gatefail'" in html and 'refit-verify gate: <span class="fail">FAIL</span>' in first, first
    assert markdown.render(data).splitlines()[0] == "## refit-verify run: ✅ pass · gate: ❌ fail"
    clean = html_mod.render(report_data("pass"))
    assert 'refit-verify gate: <span class="pass">PASS</span>' in clean and "class='first pass'>" in clean


def test_block_axes_have_integer_ticks():
    job = report_data()["jobs"][0]
    job["tables"] = {"block_mismatch": job["tables"]["block_mismatch"]}
    (plot,) = job_plots(job)
    ticks = [t for t, _ in plot.labels if re.fullmatch(r"[−-]?\d+(\.\d+)?", t)]  # heatmap and colour-bar ticks
    assert ticks and all(re.fullmatch(r"\d+", t) for t in ticks), ticks
