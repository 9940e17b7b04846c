"""Job `sharded_refit`: both refit paths into the sharded reference engine, on every rank of `--tp/--ep/--pp`.

Passes when FP8-before and FP8-after leave every rank with the same bytes and no hazard is found
(write ledger, silent scale misplacement, placement errors, scope audit, name collisions,
idempotency A -> B -> A, storage identity). Options (`--set`): trainer_recipe, engine_recipe,
trainer_quant=after_gather|before_gather|both, stage_names=global|local, invariants=1|0.
"""

from __future__ import annotations

from refit_verify.jobs import JobContext, JobResult, register_job
from refit_verify.jobs.refit import model_source

CLEAN = "."  # picture cell: the rank holds the tensor and both paths agree
ABSENT = " "  # the rank does not hold the tensor


def rank_tensor_picture(comparisons, labels: list[str]) -> list[dict]:
    """One row per tensor, one column per rank: '.' equal, the mismatch count otherwise, blank if absent."""
    rows: dict = {}
    for c in comparisons:
        row = rows.setdefault(c.tensor, {"tensor": c.tensor, **{label: ABSENT for label in labels}})
        row[c.rank or labels[0]] = CLEAN if c.equal else str(c.n_code_mismatch + c.n_scale_mismatch)
    return [rows[k] for k in sorted(rows)]


def rank_sections(result, findings, labels: list[str]) -> dict:
    """Per rank: its tensors (mismatching first) and its findings, as report tables."""
    tables = {}
    for label in labels:
        mine = [c for c in result.comparisons if (c.rank or labels[0]) == label]
        mine.sort(key=lambda c: (c.equal, c.tensor))
        tables[f"rank {label}"] = [
            {"tensor": c.tensor, "kind": c.kind, "equal": c.equal, "codes_differ": c.n_code_mismatch,
             "scales_differ": c.n_scale_mismatch, "first_mismatch": c.first_mismatch.describe() if c.first_mismatch else ""}
            for c in mine] + [{"tensor": f.tensor, "kind": f"finding:{f.hazard}", "equal": False,
                               "first_mismatch": f.describe()} for f in findings if f.rank == label]
    return tables


def gather_mode_findings(ctx: JobContext, cfg, weights, before, after, result) -> tuple[list, list]:
    """trainer_quant=both: (findings, table rows) of the trainer quantizing before its all-gather as well."""
    from refit_verify.refit.findings import Finding
    from refit_verify.refit.sharded_run import compare_sharded, run_sharded_refit

    other = run_sharded_refit(cfg, ctx.layout, weights, before, after, seed=ctx.seed, trainer_quant="before_gather",
                              paths=("before",))
    out = [dict(f.to_dict(), mode="before_gather") for f in other.findings]
    found = [Finding("bitwise_mismatch", c.tensor, "quantizing before and after the trainer's all-gather leave "
                     f"different engine bytes: {c.n_code_mismatch} codes, {c.n_scale_mismatch} scales", path="before",
                     rank=c.rank)
             for c in compare_sharded(result.states["before"], other.states["before"]) if not c.equal]
    return found + other.findings, out


@register_job("sharded_refit", suites=("full",))
def sharded_refit(ctx: JobContext) -> JobResult:
    """FP8-before vs FP8-after on every rank of a tp/ep/pp engine; ledger, scope audit, idempotency, storage."""
    from refit_verify.refit.sharded_run import refit_invariants, run_sharded_refit

    before = ctx.options.get("trainer_recipe", "vllm_per_block")
    after = ctx.options.get("engine_recipe", before)
    mode = ctx.options.get("trainer_quant", "after_gather")
    cfg, weights = model_source(ctx)
    layout, res, repro = ctx.layout, JobResult("sharded_refit"), ctx.repro_run("sharded_refit")
    ctx.progress(f"{cfg.name} tp={layout.tp} ep={layout.ep} pp={layout.pp}: FP8-before and FP8-after on "
                 f"{layout.world_size} ranks")
    r = run_sharded_refit(cfg, layout, weights, before, after, seed=ctx.seed,
                          trainer_quant="after_gather" if mode == "both" else mode,
                          stage_names=ctx.options.get("stage_names", "global"))
    findings = list(r.findings)
    if mode == "both":
        ctx.progress("trainer quantizing before its all-gather")
        extra, res.tables["before_gather_findings"] = gather_mode_findings(ctx, cfg, weights, before, after, r)
        findings += extra
    if ctx.options.get("invariants", "1") != "0":
        ctx.progress("idempotency A -> B -> A and storage identity")
        findings += refit_invariants(cfg, layout, seed=ctx.seed, before=before, trainer_quant=r.options["trainer_quant"])
    for f in findings:
        if f.severity != "info":
            res.fail(f"{f.rank or 'engine'}/{f.path or 'both'}/{f.hazard}: {f.tensor}", f.describe(), repro)
    labels = [x.label for x in layout.ranks()]
    for c in r.comparisons:
        res.figure("refit_code_mismatch", c.n_code_mismatch, f"{c.rank or labels[0]}: {c.tensor}")
        res.figure("refit_scale_mismatch", c.n_scale_mismatch, f"{c.rank or labels[0]}: {c.tensor}")
    res.tables["rank_x_tensor"] = rank_tensor_picture(r.comparisons, labels)
    res.tables.update(rank_sections(r, findings, labels))
    res.tables["ledger"] = [dict(row, path=p.path) for p in r.paths.values() for row in p.ledger]
    res.tables["scope"] = [{"layer": s["layer"], "both": s["both"], "trainer_only": ", ".join(s["trainer_only"]),
                            "engine_only": ", ".join(s["engine_only"])} for s in r.scope]
    res.tables["findings"] = [f.to_dict() for f in findings]
    res.metrics.update({"model": cfg.name, "layout": f"tp={layout.tp} ep={layout.ep} pp={layout.pp}",
                        "ranks": layout.world_size, "bitwise_equal": r.bitwise_equal, "trainer_quant": mode,
                        "tensors_differing": sum(not c.equal for c in r.comparisons), "findings": len(findings),
                        "hazards": ", ".join(sorted({f.hazard for f in findings})) or "none"})
    return res
