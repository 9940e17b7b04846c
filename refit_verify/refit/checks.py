"""Plain check functions: each raises CheckFailed (an AssertionError) naming tensor and block.

Engine-state checks are predicates over the run's findings (recorded once, with bit compares, by
the loader, refit.postload and refit.run), never a second look at the values. Tests and the
self-test kill matrix call these; `scenarios.py` wires them to small runs.
"""

from __future__ import annotations

import torch

from refit_verify.errors import RefitVerifyError
from refit_verify.refit.transport import BucketPlan, align_up, nbytes_of, pack_stream, plan_buckets

# Findings that describe a limit of the layout or a harmless rewrite, not a broken refit.
INFORMATIONAL = ("straddling_block", "requant_rebytes")


class CheckFailed(RefitVerifyError, AssertionError):
    pass


def _fail(message: str):
    raise CheckFailed(message)


def check_no_findings(findings, hazards=None, path=None, ignore=INFORMATIONAL) -> None:
    """The one predicate over findings: none of `hazards` (any, when None) on `path` (any, when None)."""
    found = [f for f in findings if (hazards is None or f.hazard in hazards) and f.hazard not in ignore
             and (path is None or f.path == path)]
    if found:
        _fail(f"{len(found)} findings, first: {found[0].describe()}")


def check_no_hazards(result, hazards=None, path=None, ignore=INFORMATIONAL) -> None:
    check_no_findings(result.findings, hazards, path, ignore)


def check_paths_bitwise_equal(result) -> None:
    """FP8-before and FP8-after must both complete and leave the same engine bytes (bitwise_mismatch findings)."""
    for name, p in result.paths.items():
        if not p.completed:
            _fail(f"path {name} did not complete: " + "; ".join(f.describe() for f in p.findings[:3]))
    if not result.comparisons:
        _fail(f"nothing compared: the run has paths {sorted(result.paths)}, both are needed")
    check_no_hazards(result, ("bitwise_mismatch",))


def check_no_misdetected_batches(result) -> None:
    check_no_hazards(result, ("fp8_requantized_as_bf16",))


def check_no_requant_drift(result) -> None:
    check_no_hazards(result, ("requant_drift",))


def check_scales_written(result) -> None:
    """No scale entry still holds the placeholder fill, none is NaN/Inf/zero/negative (bit-compared at load)."""
    check_no_hazards(result, ("placeholder_scale", "bad_scale"))


def check_scale_placement(result) -> None:
    """Every row must be dequantized with the scale its own shard sent."""
    check_no_hazards(result, ("scale_misplaced",))


def check_all_loaded(result) -> None:
    """Every engine parameter and shard received data, every FP8 shard its scale."""
    check_no_hazards(result, ("never_loaded", "missing_scale"))


def check_selection_matches_engine(findings) -> None:
    """Trainer and engine agree on the FP8 set (refit.run.selection_findings)."""
    check_no_findings(findings, ("selection_mismatch",))


def check_transport_roundtrip(sent, batches) -> None:
    """Byte-exact arrival: same names in order, same dtype and shape, same bytes."""
    received = [item for batch in batches for item in batch]
    if len(received) != len(sent):
        lost = [n for n, _ in sent][len(received):] or ["?"]
        _fail(f"{lost[0]}: {len(sent)} tensors sent, {len(received)} received")
    for (n, a), (m, b) in zip(sent, received):
        if n != m:
            _fail(f"{n}: arrived as {m!r}")
        if a.dtype != b.dtype or tuple(a.shape) != tuple(b.shape):
            _fail(f"{n}: sent {tuple(a.shape)} {a.dtype}, received {tuple(b.shape)} {b.dtype}")
        ab, bb = a.contiguous().view(torch.uint8).view(-1), b.contiguous().view(torch.uint8).view(-1)
        if not torch.equal(ab, bb):
            i = int((ab != bb).nonzero()[0])
            _fail(f"{n}: byte {i} differs (0x{int(ab[i]):02x} sent, 0x{int(bb[i]):02x} received)")


def check_bucket_plan(plan: BucketPlan) -> None:
    """Aligned, non-overlapping, within capacity, and greedy: no bucket closes while the next tensor fits."""
    for b in plan.buckets:
        end = 0
        for s in b.slots:
            if s.offset % plan.alignment or s.offset < end:
                _fail(f"{s.name}: offset {s.offset} in bucket {b.index} misaligned or overlapping")
            end = s.offset + s.nbytes
        if end > plan.bucket_bytes:
            _fail(f"{b.slots[-1].name}: bucket {b.index} holds {end} bytes > {plan.bucket_bytes}")
    for b, nxt in zip(plan.buckets, plan.buckets[1:]):
        first = nxt.slots[0]
        if align_up(b.nbytes, plan.alignment) + first.nbytes <= plan.bucket_bytes:
            _fail(f"{first.name}: fits in bucket {b.index} but was put in bucket {nxt.index}")


def check_split_agrees(items, metadata, bucket_bytes, alignment) -> None:
    """The producer's on-the-fly split equals the consumer's split from the metadata."""
    produced = [buf.numel() for _, buf in pack_stream(items, metadata, bucket_bytes, alignment)]
    planned = [b.nbytes for b in plan_buckets(metadata, bucket_bytes, alignment).buckets]
    if produced != planned:
        i = next((k for k, (x, y) in enumerate(zip(produced, planned)) if x != y), min(len(produced), len(planned)))
        _fail(f"bucket {i}: producer packed {produced[i:i + 1]} bytes, consumer planned {planned[i:i + 1]} "
              f"({len(produced)} vs {len(planned)} buckets)")


def exact_fit_bucket_bytes(metadata, alignment: int, upto: str) -> int:
    """A bucket size that the tensors up to and including `upto` fill exactly (an off-by-one trap)."""
    cursor = 0
    for name, (shape, dtype) in metadata.items():
        cursor = align_up(cursor, alignment) + nbytes_of(shape, dtype)
        if name == upto:
            return cursor
    raise KeyError(upto)
