"""Jobs that need the real vLLM (registered lazily; skipped with a reason where vllm is absent)."""

from __future__ import annotations

from refit_verify.jobs import JobContext, JobResult, register_job


@register_job("vllm_refit", suites=("full",), needs=("vllm", "module:refit_verify.refit.run"))
def vllm_refit(ctx: JobContext) -> JobResult:
    """Both refit paths through the real vLLM 0.33 loader (run_refit_vllm); findings become failures."""
    from refit_verify.engine.vllm_refit import run_refit_vllm
    from refit_verify.model import load_config

    opts = ctx.options
    cfg = load_config(ctx.config, layers=ctx.layers)
    patched = str(opts.get("patched_loader", "0")).lower() in ("1", "true", "yes")
    ctx.progress(f"run_refit_vllm {cfg.name} (patched_loader={patched})")
    res_ = run_refit_vllm(cfg, seed=ctx.seed, before=opts.get("trainer_recipe", "vllm_per_block"),
                          after=opts.get("engine_recipe"), patched_loader=patched)
    res = JobResult("vllm_refit")
    res.metrics = {"bitwise_equal": res_.bitwise_equal, "n_findings": len(res_.findings),
                   "vllm": res_.options.get("vllm", ""), "patched_loader": patched}
    rows = []
    for path, pr in res_.paths.items():
        for tensor, e in pr.error_vs_source.items():
            rows.append({"path": path, "tensor": tensor, "rel_l2": e["all"]["rel_l2"], "sqnr_db": e["all"]["sqnr_db"]})
            res.figure("rel_l2", e["all"]["rel_l2"], f"{path}/{tensor}")
    res.tables["error_vs_source"] = rows
    res.tables["findings"] = [f.to_dict() for f in res_.findings]
    for f in res_.findings:
        if f.severity == "error":
            res.fail(f"{f.path or '-'}:{f.hazard}:{f.tensor}", f.describe())
    if res.failures:
        hz = sorted({f.hazard for f in res_.findings if f.severity == "error"})
        res.reason = f"{len(res.failures)} error finding(s) against real vLLM: {', '.join(hz)}"
    return res
