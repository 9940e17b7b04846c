"""The CLI's live-run commands: `digest` (engine dump), `expect` (trainer checkpoint), `diff` of digest files.

Exit codes as everywhere: 0 equal, 1 a difference found (named), 2 bad input (one clear line).
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from refit_verify.errors import BadInputError
from refit_verify.layout import Layout
from refit_verify.live.compare import compare_documents
from refit_verify.live.dump import iter_dump, rank_sources, read_files
from refit_verify.live.fileformat import FORMAT, digest_document, load_document, write_document

SHOWN = 10  # block mismatches printed one per line after the first; the report holds all


def _sample(args):
    if getattr(args, "sample", None) is None:
        return None
    if args.sample < 1:
        raise BadInputError(f"--sample must be a positive number of blocks per tensor, got {args.sample}")
    return {"k": args.sample, "seed": args.sample_seed}


def cmd_digest(args) -> int:
    from refit_verify.fp8 import get_recipe

    recipe = get_recipe(args.recipe)
    layout, ranks = iter_dump(args.dump)
    doc = digest_document(ranks, recipe.name, recipe.block, layout, "engine", _sample(args))
    return _write_and_say(doc, args.out, "digest", "parameters")


def read_checkpoint(path) -> dict:
    """HF-named weights of a safetensors file or folder, as stored (the trainer's BF16)."""
    sources = rank_sources(path)
    if len(sources) != 1:
        raise BadInputError(f"{path}: a trainer checkpoint is one unsharded set of HF-named tensors")
    weights = read_files(next(iter(sources.values())), path)
    for name, t in weights.items():
        if name.endswith("_scale_inv") or t.dtype.itemsize == 1 and t.is_floating_point():
            raise BadInputError("the checkpoint is already quantized; `expect` takes the trainer's BF16 weights",
                                name)
    return weights


def cmd_expect(args) -> int:
    from refit_verify.live.expect import expect
    from refit_verify.live.expect_sharded import config_for

    layout = Layout(tp=args.tp, ep=args.ep, pp=args.pp)
    weights = read_checkpoint(args.checkpoint)
    # more than one rank: what each holds depends on the model's heads and experts (the config)
    cfg = None if layout.is_single else config_for(args.checkpoint, args.config)
    doc = expect(weights, args.recipe, layout, config=cfg, sample=_sample(args))
    return _write_and_say(doc, args.out, "expect", "engine parameters")


def _write_and_say(doc: dict, out, command: str, what: str) -> int:
    write_document(doc, out)
    n = sum(len(p) for p in doc["ranks"].values())
    print(f"{command}: {n} {what} on {len(doc['ranks'])} rank(s) -> {out}")
    return 0


def is_digest_file(path) -> bool:
    """A JSON file (by name or first byte): digest files, or foreign/truncated JSON to be refused as such."""
    p = Path(path)
    if not p.is_file():
        return False
    if p.suffix == ".json":
        return True
    with open(p, "rb") as f:
        return f.read(64).lstrip()[:1] == b"{"


def _incompatible(a: dict, b: dict, pa, pb) -> None:
    for key in ("block", "sample"):
        if a.get(key) != b.get(key):
            raise BadInputError(f"incompatible digest files: {pa} has {key}={a.get(key)!r}, {pb} has "
                                f"{key}={b.get(key)!r} (they digest different blocks; take both with the same "
                                f"recipe and --sample/--sample-seed)")


def _block_where(rec: dict, index: int) -> str:
    bm, bn = rec["block"]
    gn = -(-rec["shape"][1] // bn) if len(rec["shape"]) == 2 and not rec.get("raw") else None
    if gn is None:
        return f"block {index} (bytes {index * bn}..{(index + 1) * bn - 1})"
    r, c = divmod(index, gn)
    return f"block {index} = ({r}, {c}): rows {r * bm}..{r * bm + bm - 1}, cols {c * bn}..{c * bn + bn - 1}"


def diff_job(expected: dict, engine: dict, repro: str):
    """(JobResult, DigestDiff): one failure per finding, all blocks in the job's tables."""
    from refit_verify.results import JobResult

    d = compare_documents(expected, engine)
    job = JobResult("digest_diff", repro=repro)
    for key, e, g in d.meta:
        job.fail(f"<{key}>", f"{key} disagrees: expected {e!r}, engine {g!r}", repro)
    for rank, name in d.missing:
        job.fail(f"{rank}/{name}", "never written: expected on this rank, the engine does not hold it", repro)
    for rank, name in d.extra:
        job.fail(f"{rank}/{name}", "extra: the engine holds it, the trainer never sent it", repro)
    for rank, name, what, e, g in d.shape:
        job.fail(f"{rank}/{name}", f"{what} differs: expected {e}, engine {g}", repro)
    by_tensor = {}
    for rank, name, b, e, g in d.blocks:
        by_tensor.setdefault((rank, name), []).append((b, e, g))
    for (rank, name), blocks in by_tensor.items():
        rec = expected["ranks"][rank][name]
        b, e, g = blocks[0]
        job.fail(f"{rank}/{name}", f"{len(blocks)} block(s) differ; first {_block_where(rec, b)}: expected digest "
                 f"{e}, engine {g}; blocks {[x[0] for x in blocks[:50]]}", repro)
    job.tables["blocks"] = [{"rank": r, "tensor": n, "block": b, "expected": e, "engine": g}
                            for r, n, b, e, g in d.blocks]
    job.metrics = {"compared_blocks": d.compared_blocks, "mismatched_blocks": len(d.blocks),
                   "missing": len(d.missing), "extra": len(d.extra), "sampled": expected.get("sample") is not None}
    job.figure("digest_blocks_differing", len(d.blocks), "all")
    total = sum(rec.get("n_blocks", 0) for params in expected["ranks"].values() for rec in params.values())
    job.metrics["total_blocks"] = total
    job.reason = (f"{d.compared_blocks} of {total} blocks compared"
                  + (f" (sampled: {expected['sample']['k']} per tensor, seed {expected['sample']['seed']})"
                     if expected.get("sample") else "")
                  + ("; equal" if d.equal else f"; {len(job.failures)} finding(s)"))
    return job, d


def cmd_digest_diff(args, run_id: str, out: str) -> int:
    from refit_verify.report import env
    from refit_verify.report.document import Report, ReportWriter

    a, b = load_document(args.a), load_document(args.b)
    _incompatible(a, b, args.a, args.b)
    repro = shlex.join(["refit-verify", "diff", args.a, args.b])
    report = Report("diff", run_id, args.command_line, options={"expected": args.a, "engine": args.b,
                    "format": FORMAT}, environment=env.collect("cpu"), planned_jobs=["digest_diff"])
    writer = ReportWriter(out, report, plots=False)
    status = "incomplete"
    try:
        writer.write()
        job, d = diff_job(a, b, repro)
        report.jobs.append(job)
        status = "complete"
    finally:
        writer.finish(status)
    md = os.path.join(out, "report.md")
    if d.equal:
        print(f"EQUAL: {job.reason} — {md}")
        return 0
    print(f"DIFFERENT: {job.reason} — {md}")
    for f in job.failures[:SHOWN]:
        print(f"  {f.case}: {f.reason[:300]}")
    if len(job.failures) > SHOWN:
        print(f"  ... {len(job.failures) - SHOWN} more in {os.path.join(out, 'report.json')}")
    return 1
