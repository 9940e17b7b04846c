"""Packed refit transport: tensors as flat uint8 in buckets, split again on arrival (FACTS.md §5).

The producer packs on the fly as tensors stream out of the exporter; the consumer rebuilds the same
split from the metadata alone (`plan_buckets`). Both sides agree only if they make the same
decision, which is the property the tests hold them to. Each tensor starts at a multiple of
`alignment` bytes within its bucket; a tensor larger than a bucket is an error, as in the CUDA-IPC
path. Batches reach the loader one bucket at a time: batch boundaries are visible to it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import torch

from refit_verify.errors import NonContiguousTensorError, OversizedTensorError, TransportError

DEFAULT_ALIGNMENT = 512
DEFAULT_BUCKET_BYTES = 64 << 20
Batch = list  # [(name, tensor)]


@dataclass(frozen=True)
class Slot:
    name: str
    shape: tuple
    dtype: torch.dtype
    offset: int
    nbytes: int


@dataclass(frozen=True)
class Bucket:
    index: int
    slots: tuple[Slot, ...]

    @property
    def nbytes(self) -> int:  # bytes on the wire: no trailing pad after the last tensor
        return self.slots[-1].offset + self.slots[-1].nbytes if self.slots else 0


@dataclass(frozen=True)
class BucketPlan:
    buckets: tuple[Bucket, ...]
    bucket_bytes: int
    alignment: int

    @property
    def payload_bytes(self) -> int:
        return sum(s.nbytes for b in self.buckets for s in b.slots)

    @property
    def wire_bytes(self) -> int:
        return sum(b.nbytes for b in self.buckets)

    def to_dict(self) -> dict:
        return {"bucket_bytes": self.bucket_bytes, "alignment": self.alignment, "n_buckets": len(self.buckets),
                "payload_bytes": self.payload_bytes, "wire_bytes": self.wire_bytes,
                "buckets": [[s.name for s in b.slots] for b in self.buckets]}


@dataclass
class TransferStats:
    backend: str
    bucket_bytes: int
    alignment: int
    n_tensors: int = 0
    n_buckets: int = 0
    payload_bytes: int = 0  # tensor bytes
    wire_bytes: int = 0  # bucket bytes including alignment padding
    per_dtype_bytes: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dict(vars(self))


def nbytes_of(shape, dtype) -> int:
    return math.prod(shape) * torch.empty(0, dtype=dtype).element_size()


def align_up(x: int, alignment: int) -> int:
    return -(-x // alignment) * alignment


def fits_in_bucket(start: int, nbytes: int, capacity: int) -> bool:
    return start + nbytes <= capacity


def _check_config(bucket_bytes: int, alignment: int) -> None:
    if bucket_bytes <= 0 or alignment <= 0:
        raise TransportError(f"bucket_bytes ({bucket_bytes}) and alignment ({alignment}) must be positive")


def _next_start(cursor: int, nbytes: int, alignment: int, capacity: int, name: str) -> tuple[bool, int]:
    """(opens a new bucket?, start offset) for the next tensor; shared rule of both sides."""
    if nbytes > capacity:
        raise OversizedTensorError(f"{nbytes} bytes exceed the bucket size {capacity}", name)
    start = align_up(cursor, alignment)
    if cursor and not fits_in_bucket(start, nbytes, capacity):
        return True, 0
    return False, start


def plan_buckets(metadata: dict, bucket_bytes: int = DEFAULT_BUCKET_BYTES, alignment: int = DEFAULT_ALIGNMENT) -> BucketPlan:
    """The consumer's split, from `{name: (shape, dtype)}` in send order."""
    _check_config(bucket_bytes, alignment)
    buckets, current, cursor = [], [], 0
    for name, (shape, dtype) in metadata.items():
        nbytes = nbytes_of(shape, dtype)
        new, start = _next_start(cursor, nbytes, alignment, bucket_bytes, name)
        if new:
            buckets.append(Bucket(len(buckets), tuple(current)))
            current = []
        current.append(Slot(name, tuple(shape), dtype, start, nbytes))
        cursor = start + nbytes
    if current:
        buckets.append(Bucket(len(buckets), tuple(current)))
    return BucketPlan(tuple(buckets), bucket_bytes, alignment)


def tensor_to_bytes(name: str, t: torch.Tensor) -> torch.Tensor:
    if not t.is_contiguous():
        raise NonContiguousTensorError(
            f"non-contiguous tensor (shape {tuple(t.shape)}, strides {t.stride()}) cannot be viewed as flat uint8; "
            "call .contiguous() before sending", name)
    return t.view(torch.uint8).view(-1)


def tensor_from_bytes(raw: torch.Tensor, dtype: torch.dtype, shape) -> torch.Tensor:
    # clone: the consumer reuses bucket buffers, and a slice at an unaligned offset cannot change dtype
    return raw.clone().view(dtype).view(shape)


def pack_stream(items: Iterable, metadata: dict, bucket_bytes: int = DEFAULT_BUCKET_BYTES,
                alignment: int = DEFAULT_ALIGNMENT, stats: TransferStats | None = None) -> Iterator[tuple[int, torch.Tensor]]:
    """Producer: fills buckets as tensors arrive; yields (bucket index, flat uint8 buffer)."""
    _check_config(bucket_bytes, alignment)
    expected = iter(metadata.items())
    parts, cursor, index = [], 0, 0

    def flush():
        buf = torch.zeros(cursor, dtype=torch.uint8)
        for start, raw in parts:
            buf[start : start + raw.numel()] = raw
        return buf

    for name, t in items:
        meta_name, (shape, dtype) = next(expected, (None, (None, None)))
        if meta_name != name or tuple(t.shape) != tuple(shape) or t.dtype != dtype:
            raise TransportError(f"arrived as {tuple(t.shape)} {t.dtype}, but the metadata's next entry is "
                                 f"{meta_name!r} {shape} {dtype}", name)
        raw = tensor_to_bytes(name, t)
        new, start = _next_start(cursor, raw.numel(), alignment, bucket_bytes, name)
        if new:
            yield index, flush()
            parts, cursor, index = [], 0, index + 1
        parts.append((start, raw))
        cursor = start + raw.numel()
        if stats is not None:
            stats.n_tensors += 1
            stats.payload_bytes += raw.numel()
            key = str(t.dtype).replace("torch.", "")
            stats.per_dtype_bytes[key] = stats.per_dtype_bytes.get(key, 0) + raw.numel()
    missing = [n for n, _ in expected]
    if missing:
        raise TransportError(f"{len(missing)} tensors in the metadata were never produced", missing[0])
    if parts:
        yield index, flush()


def unpack_bucket(bucket: Bucket, buf: torch.Tensor) -> Batch:
    if buf.numel() != bucket.nbytes:
        first = bucket.slots[0].name if bucket.slots else None
        raise TransportError(f"received {buf.numel()} bytes, the plan expects {bucket.nbytes}: producer and "
                             "consumer split the stream differently", first, bucket.index)
    return [(s.name, tensor_from_bytes(buf[s.offset : s.offset + s.nbytes], s.dtype, s.shape)) for s in bucket.slots]


def unpack_stream(plan: BucketPlan, buffers: Iterable[tuple[int, torch.Tensor]]) -> Iterator[Batch]:
    """Consumer: one batch per bucket, in order; complains about buckets that never came."""
    received = 0
    for index, buf in buffers:
        if index != received or index >= len(plan.buckets):
            raise TransportError(f"bucket {index} arrived, expected bucket {received} of {len(plan.buckets)}",
                                 bucket=index)
        yield unpack_bucket(plan.buckets[index], buf)
        received += 1
    if received != len(plan.buckets):
        lost = plan.buckets[received]
        raise TransportError(f"stream ended after {received} of {len(plan.buckets)} buckets",
                             lost.slots[0].name, lost.index)


class InProcessTransport:
    """Producer and consumer in one process; same packing and split as the distributed backends."""

    backend = "inprocess"

    def __init__(self, bucket_bytes: int = DEFAULT_BUCKET_BYTES, alignment: int = DEFAULT_ALIGNMENT):
        _check_config(bucket_bytes, alignment)
        self.bucket_bytes, self.alignment = bucket_bytes, alignment
        self.stats = TransferStats(self.backend, bucket_bytes, alignment)

    def transfer(self, items: Iterable, metadata: dict) -> Iterator[Batch]:
        self.stats = TransferStats(self.backend, self.bucket_bytes, self.alignment)
        plan = plan_buckets(metadata, self.bucket_bytes, self.alignment)
        for batch in unpack_stream(plan, self._count(pack_stream(items, metadata, self.bucket_bytes,
                                                                  self.alignment, self.stats))):
            yield batch

    def _count(self, buffers):
        for index, buf in buffers:
            self.stats.n_buckets += 1
            self.stats.wire_bytes += buf.numel()
            yield index, buf
