"""Pipeline jobs for `refit-verify run`.

- refit_pipeline: both refit paths end to end (exporter, packed transport, vLLM-style loader) on the
  run's model; the engine stores are compared bitwise per tensor and per block, each path against
  the BF16 source, and every hazard the run observed is a failure. What-if rows: each other
  weight preset as the trainer's quantizer against the same engine (informational).
- refit_hazards: the odd configs on which vLLM's loader is known to go wrong (FACTS.md §4, §5).
  There the hazards are the expected outcome: the job fails when one goes undetected (or an
  unexpected one appears), not because they occur.
"""

from __future__ import annotations

from pathlib import Path

from refit_verify.jobs import JobContext, JobResult, register_job

# (scenario, config, run_refit kwargs, hazards that must be detected; nothing else may appear).
# Observed with the reference on seed 0; each is covered by a test in suites/pr/test_refit_run.py.
HAZARD_SCENARIOS = (
    ("odd-kv64", "odd-kv64", {}, {"placement_raised", "scale_misplaced"}),
    ("odd-mimo", "odd-mimo", {}, {"scale_misplaced"}),
    ("odd-gate-up-320", "odd-gate-up-320", {}, {"placement_raised", "placeholder_scale", "scale_misplaced"}),
    ("odd-deepseek-qkv-a", "odd-deepseek-qkv-a", {}, set()),  # 1536 is block-aligned: the control case
    ("tiny-moe-router/loader", "tiny-moe-router", {}, set()),
    ("tiny-moe-router/heuristic", "tiny-moe-router", {"selection": "heuristic"},
     {"selection_mismatch", "fp8_into_bf16", "unknown_name", "bitwise_mismatch"}),
    ("tiny-llama/ue8m0-requant", "tiny-llama", {"ue8m0_requant": True}, {"requant_drift"}),
)
SLOW_SCENARIOS = {"odd-deepseek-qkv-a"}  # K=7168: ~5 s on CPU, nightly/full only


def model_source(ctx: JobContext):
    """(ModelConfig, {hf name: BF16 tensor}) from --model PATH or --config NAME (+ --layers)."""
    from refit_verify.model import load_config, synthesize_weights

    from refit_verify.model.gguf import load_gguf, resolve_gguf

    gguf_path = resolve_gguf(ctx.model_path) if ctx.model_path else None
    if gguf_path is not None:  # a known packaged model name or a .gguf file: trained weights, dequantized
        cfg, weights = load_gguf(gguf_path, ctx.model_path if not ctx.model_path.endswith(".gguf") else None,
                                 layers=ctx.layers)
    elif ctx.model_path:
        p = Path(ctx.model_path)
        if (p.is_dir() and any(p.glob("*.safetensors"))) or p.suffix == ".safetensors":
            from refit_verify.model.checkpoint import load_checkpoint

            cfg, weights = load_checkpoint(p, None if p.is_dir() else ctx.config)
        else:  # config only: synthetic weights of that shape
            cfg = load_config(str(p / "config.json" if p.is_dir() else p))
            weights = None
    else:
        cfg, weights = load_config(ctx.config), None
    if ctx.layers is not None:
        cfg = cfg.with_layers(ctx.layers)
    if weights is None:
        weights = synthesize_weights(cfg, ctx.seed)
    else:  # a checkpoint cut to fewer layers: the engine must not be sent names it does not have
        known = set(cfg.hf_shapes())
        weights = {n: t for n, t in weights.items() if n in known}
    return cfg, weights


def fp8_comparisons(comparisons) -> list:
    """The FP8 weights among a run's comparisons: they carry per-block detail (rows, heatmaps)."""
    return [c for c in comparisons if c.kind == "fp8"]


def dump_fp8_store(store, folder) -> Path:
    """The engine's FP8 linears as safetensors (`*.weight` float8 + `*.weight_scale_inv`), for `diff`."""
    from refit_verify.files import save_safetensors

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {}
    for prefix, lin in store.linears.items():
        if lin.fp8:
            state[prefix + ".weight"] = lin.weight.contiguous()
            state[prefix + ".weight_scale_inv"] = lin.weight_scale_inv.contiguous()
    save_safetensors(state, folder / "model.safetensors")
    return folder


@register_job("refit_pipeline", suites=("pr", "nightly", "full"))
def refit_pipeline(ctx: JobContext) -> JobResult:
    """FP8-before vs FP8-after through exporter, transport and loader; engine bytes compared per block."""
    from refit_verify.fp8 import WEIGHT_PRESETS
    from refit_verify.refit.run import run_refit
    from refit_verify.compare.tensors import heatmap_rows, scale_ulp_counts, scale_ulp_rows, tensor_row

    trainer = ctx.options.get("trainer_recipe", "vllm_per_block")
    engine = ctx.options.get("engine_recipe", "vllm_per_block")
    cfg, weights = model_source(ctx)
    res = JobResult("refit_pipeline")
    repro = ctx.repro_run("refit_pipeline")
    ctx.progress(f"{cfg.name}: FP8-before ({trainer}) and FP8-after ({engine})")
    # whole-tensor float64 metrics (calc_diff too) cost ~1 s per 8B-sized linear: small models only
    full = ctx.options.get("full_metrics", "auto")
    full = sum(t.numel() for t in weights.values()) < 50_000_000 if full == "auto" else full not in ("0", "false")
    r = run_refit(cfg, weights, before=trainer, after=engine, seed=ctx.seed, full_metrics=full)
    sa, sb = r.stores["before"], r.stores["after"]
    err_a, err_b = r.paths["before"].error_vs_source, r.paths["after"].error_vs_source

    cmps = fp8_comparisons(r.comparisons)
    rows, ulps = [], None
    for cmp in cmps:
        rows.append(tensor_row(cmp, _row_metrics(err_a.get(cmp.tensor)), _row_metrics(err_b.get(cmp.tensor))))
        prefix = cmp.tensor[: -len(".weight")]
        c = scale_ulp_counts(sa.linears[prefix].weight_scale_inv, sb.linears[prefix].weight_scale_inv)
        ulps = c if ulps is None else ulps + c
    for path, err in (("fp8_before", err_a), ("fp8_after", err_b)):
        for tensor, e in err.items():
            res.figure("sqnr_db", e["all"]["sqnr_db"], f"{path}: {tensor}")
            if "all_full" in e:
                res.figure("calc_diff", e["all_full"]["calc_diff"], f"{path}: {tensor}")
    # every engine parameter, FP8 or BF16, must hold the same bytes after both paths
    for c in r.comparisons:
        res.figure("refit_code_mismatch", c.n_code_mismatch, c.tensor)
        res.figure("refit_scale_mismatch", c.n_scale_mismatch, c.tensor)
    for f in r.findings:
        if f.severity != "info":
            res.fail(f"{f.path or 'both'}/{f.hazard}: {f.tensor}", f.describe(), repro)
    res.tables["tensors"] = rows
    res.tables["block_mismatch"] = [dict(h, label=f"trainer={trainer} vs engine={engine}") for h in heatmap_rows(cmps)]
    res.tables["scale_ulp"] = scale_ulp_rows(ulps or {})
    res.tables["findings"] = [f.to_dict() for f in r.findings]
    res.tables["paths"] = [{"path": p.path, "completed": p.completed, "trainer_quantizer": p.trainer_quantizer,
                            "engine_recipe": p.engine_recipe, **{f"transfer_{k}": v for k, v in p.transfer.items()
                                                                  if isinstance(v, (int, float))}}
                           for p in r.paths.values()]
    if ctx.options.get("whatif", "1") != "0":
        res.tables["whatif"], shown = _whatif_rows(ctx, cfg, weights, engine, r.states["after"],
                                                    [p for p in WEIGHT_PRESETS if p != trainer])
        if not res.tables["block_mismatch"] and shown:
            # nothing to show for the run's pair: show the classic drift (NeMo-RL scale form vs vLLM)
            res.tables["block_mismatch"] = [dict(h, label=f"what-if trainer={shown[0]} vs engine={engine}")
                                            for h in heatmap_rows(shown[1])]
    if ctx.options.get("dump_dir"):  # both engine stores as safetensors, for `refit-verify diff`
        d = Path(ctx.options["dump_dir"])
        res.metrics["dump_before"] = str(dump_fp8_store(sa, d / "before"))
        res.metrics["dump_after"] = str(dump_fp8_store(sb, d / "after"))
    sqnr = [e["all"]["sqnr_db"] for err in (err_a, err_b) for e in err.values()]
    res.metrics.update({
        "model": cfg.name, "layers": cfg.num_hidden_layers, "trainer_recipe": trainer, "engine_recipe": engine,
        "fp8_tensors": len(cmps), "tensors_differing": sum(not c.equal for c in r.comparisons),
        "bitwise_equal": r.bitwise_equal, "findings": len(r.findings),
        "hazards": ", ".join(sorted(r.hazards())) or "none",
        "min_sqnr_db": min(sqnr, default=float("nan")),
        "payload_bytes_before": r.paths["before"].transfer.get("payload_bytes", 0),
        "payload_bytes_after": r.paths["after"].transfer.get("payload_bytes", 0),
    })
    if res.failures:
        res.reason = (f"{res.metrics['tensors_differing']} engine tensor(s) differ, {len(res.failures)} finding(s); "
                      f"first: {res.failures[0].reason[:200]}")
    else:
        res.reason = f"{len(r.comparisons)} engine tensors bit-identical after FP8-before and FP8-after"
    return res


def _row_metrics(e):
    """tensor_row's error columns: float64 whole-tensor metrics when computed, else the fast sums."""
    if not e:
        return None
    return e.get("all_full") or dict(e["all"], calc_diff=float("nan"))


def _whatif_rows(ctx, cfg, weights, engine, after_state, presets):
    """Each other preset as the trainer's quantizer, FP8-before only, against the FP8-after engine state.

    Returns (rows, (preset, its FP8 TensorComparisons) of the NeMo-RL row for the heatmap, or None)."""
    from refit_verify.refit.run import compare_states, run_refit

    rows, shown = [], None
    for p in presets:
        ctx.progress(f"what-if trainer={p}")
        w = run_refit(cfg, weights, before=p, after=engine, seed=ctx.seed, paths=("before",))
        comps = compare_states(w.states["before"], after_state)
        n_el = sum(c.n_elements for c in comps if c.kind == "fp8")
        n_code = sum(c.n_code_mismatch for c in comps)
        rows.append({"trainer": p, "engine": engine, "n_code_mismatch": n_code,
                     "n_scale_mismatch": sum(c.n_scale_mismatch for c in comps),
                     "code_mismatch_rate": n_code / n_el if n_el else 0.0,
                     "tensors_differing": sum(not c.equal for c in comps),
                     "hazards": sorted(w.hazards())})
        if p == "nemo_rl":
            shown = (p, fp8_comparisons(comps))
    return rows, shown


def hazard_mismatch(expected: set, got: set) -> tuple[set, set]:
    """(expected hazards not detected, detected hazards not expected)."""
    return expected - got, got - expected


@register_job("refit_hazards", suites=("pr", "nightly", "full"))
def refit_hazards(ctx: JobContext) -> JobResult:
    """Odd configs where vLLM's loader misbehaves: each known hazard must be detected (informational rows)."""
    from refit_verify.refit.run import run_refit

    res = JobResult("refit_hazards")
    rows, detected = [], 0
    only = {s.strip() for s in ctx.options.get("hazard_scenarios", "").split(",") if s.strip()}
    for name, config, kwargs, expected in HAZARD_SCENARIOS:
        if only and name not in only:
            continue
        if not only and ctx.suite == "pr" and name in SLOW_SCENARIOS:
            rows.append({"scenario": name, "skipped": "slow on CPU: suite nightly/full"})
            continue
        ctx.progress(name)
        r = run_refit(config, before=ctx.options.get("trainer_recipe", "vllm_per_block"), seed=ctx.seed, **kwargs)
        got = r.hazards()
        missing, extra = hazard_mismatch(expected, got)
        detected += len(expected & got)
        repro = ctx.repro_run("refit_hazards") + f" --set hazard_scenarios={name}"
        for h in sorted(missing):
            res.fail(f"{name}/{h}", f"expected hazard {h!r} was not detected on {config} "
                     f"(options {kwargs or 'default'}); detected: {sorted(got) or 'none'}", repro)
        for h in sorted(extra):
            first = r.findings_of(h)[0]
            res.fail(f"{name}/{h}", f"unexpected hazard on {config}: {first.describe()[:300]}", repro)
        for f in r.findings:
            rows.append({"scenario": name, "hazard": f.hazard, "path": f.path, "tensor": f.tensor,
                         "severity": f.severity, "expected": f.hazard in expected, "message": f.describe()[:300]})
        if not r.findings:
            rows.append({"scenario": name, "hazard": "", "expected": not expected, "message": "no findings"})
        res.figure("hazards_undetected", len(missing), name)
    res.tables["findings"] = rows
    res.metrics = {"scenarios": len({r["scenario"] for r in rows}), "expected_hazards_detected": detected}
    res.reason = (f"{len(res.failures)} expected/unexpected hazard mismatch(es)" if res.failures
                  else f"every expected hazard detected ({detected}); rows are informational")
    return res
