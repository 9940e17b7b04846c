"""Mutants of report.html's layout: each is a way the report stops being readable at a glance."""

from __future__ import annotations

from refit_verify.selftest.mutant import Mutant

BROWSER = "suites/pr/test_report_browser.py"


def _unboxed_table(original):
    # tables back in the page flow: a wide one widens the whole page instead of scrolling in its box
    return lambda rows, limit=200: original(rows, limit).replace("<div class='tablebox'>", "").replace("</table></div>", "</table>")


def _old_heatmap_layout(original):
    # the panel size and matplotlib's default placement the report once used: colour-bar labels run into
    # the next panel
    return type(original)(4.2, 3.6, None)


def _truncated_png(original):
    def render(fig, whatif=False):
        r = original(fig, whatif)
        return type(r)(r.png_b64[8:], r.labels, r.whatif)  # the PNG signature lost
    return render


MUTANTS = [
    Mutant("report_table_widens_page", "a wide metrics table makes the whole report scroll sideways (seen at 3000 px)",
           {"refit_verify.report.html:_table": _unboxed_table}, area="report",
           killers=(f"{BROWSER}::test_nothing_is_wider_than_the_page",)),
    Mutant("report_verdict_below_the_fold", "the verdict only in a small title, the first screen says nothing of pass/fail",
           {"refit_verify.report.html:_first_screen": lambda original: (lambda screen: "")}, area="report",
           killers=(f"{BROWSER}::test_verdict_is_on_the_first_screen",
                    f"{BROWSER}::test_first_screen_names_worst_figure_threshold_and_warnings")),
    Mutant("report_plot_labels_collide", "colour-bar labels overlapping the next panel's axis labels",
           {"refit_verify.report.plots:HEATMAP_LAYOUT": _old_heatmap_layout}, area="report",
           killers=(f"{BROWSER}::test_no_two_plot_labels_overlap",)),
    Mutant("report_fractional_block_ticks", "block axes ticked -0.5 ... 1.5 instead of whole blocks",
           {"refit_verify.report.plots:_integer_ticks": lambda original: (lambda ax: None)}, area="report",
           killers=(f"{BROWSER}::test_block_axes_have_integer_ticks",)),
    Mutant("report_broken_image", "a plot embedded with a damaged PNG shows as a broken image",
           {"refit_verify.report.plots:_render": _truncated_png}, area="report",
           killers=(f"{BROWSER}::test_every_image_loads",)),
]
