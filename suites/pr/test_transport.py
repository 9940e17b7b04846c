"""Packed transport: byte-exact, aligned, counted; typed errors naming the tensor; 2-process gloo."""

import pytest
import torch

from refit_verify.errors import NonContiguousTensorError, OversizedTensorError, TransportError
from refit_verify.fp8 import quantize
from refit_verify.model import load_config, synthesize_weights
from refit_verify.refit import checks
from refit_verify.refit.exporter import TrainerExporter
from refit_verify.refit.transport import InProcessTransport, pack_stream, plan_buckets, unpack_stream

W = synthesize_weights(load_config("tiny-llama"), 0)
EX = TrainerExporter(W, "before", "vllm_per_block")
META, ITEMS = EX.metadata(), list(EX)


def _mixed():
    g = torch.Generator().manual_seed(3)
    items = [("a.f32", torch.randn(3, 5, generator=g)), ("b.bf16", torch.randn(7, generator=g).bfloat16()),
             ("c.fp8", (torch.randn(9, 11, generator=g) * 100).to(torch.float8_e4m3fn)),
             ("d.i64", torch.arange(5)), ("e.nan", torch.tensor([float("nan"), -0.0, float("inf")]))]
    return items, {n: (tuple(t.shape), t.dtype) for n, t in items}


@pytest.mark.parametrize("bucket_bytes,alignment", [(1 << 20, 512), (1200, 512), (300, 1), (4096, 64)])
def test_roundtrip_is_byte_exact(bucket_bytes, alignment):
    items, meta = _mixed()
    tr = InProcessTransport(bucket_bytes, alignment)
    batches = list(tr.transfer(items, meta))
    checks.check_transport_roundtrip(items, batches)
    plan = plan_buckets(meta, bucket_bytes, alignment)
    checks.check_bucket_plan(plan)
    assert tr.stats.n_buckets == len(batches) == len(plan.buckets)
    assert tr.stats.payload_bytes == plan.payload_bytes == sum(t.numel() * t.element_size() for _, t in items)
    assert tr.stats.wire_bytes == plan.wire_bytes >= tr.stats.payload_bytes


def test_offsets_are_aligned_to_512_by_default():
    plan = plan_buckets(META)
    assert all(s.offset % 512 == 0 for b in plan.buckets for s in b.slots)


def test_exact_fit_bucket_agrees_on_both_sides():
    bb = checks.exact_fit_bucket_bytes(META, 512, "model.layers.0.self_attn.k_proj.weight")
    checks.check_split_agrees(ITEMS, META, bb, 512)
    plan = plan_buckets(META, bb, 512)
    assert plan.buckets[0].slots[-1].name == "model.layers.0.self_attn.k_proj.weight_scale_inv" or \
        plan.buckets[0].nbytes == bb


def test_payload_counts_fp8_and_scales():
    tr = InProcessTransport(1 << 20)
    list(tr.transfer(ITEMS, META))
    assert tr.stats.per_dtype_bytes["float8_e4m3fn"] == sum(t.numel() for _, t in ITEMS if t.dtype == torch.float8_e4m3fn)


def test_non_contiguous_tensor_is_named():
    q = quantize(torch.randn(256, 320).bfloat16(), "nemo_rl")  # cropped padded result: a view
    assert not q.data.is_contiguous()
    items = [("x.weight", q.data)]
    with pytest.raises(NonContiguousTensorError, match="x.weight.*non-contiguous"):
        list(InProcessTransport().transfer(items, {"x.weight": (tuple(q.data.shape), q.data.dtype)}))


def test_oversized_tensor_is_named():
    with pytest.raises(OversizedTensorError, match="model.embed_tokens.weight"):
        plan_buckets(META, bucket_bytes=100_000)


def test_stream_that_diverges_from_metadata_is_named():
    items = list(ITEMS)
    items[3] = (items[3][0], items[3][1][:1])
    with pytest.raises(TransportError, match=items[3][0]):
        list(InProcessTransport().transfer(items, META))


def test_lost_last_bucket_is_reported():
    plan = plan_buckets(META, 600_000)
    buffers = list(pack_stream(ITEMS, META, 600_000))[:-1]
    with pytest.raises(TransportError, match="stream ended after"):
        list(unpack_stream(plan, buffers))


def test_gloo_broadcast_between_two_processes_is_byte_exact():
    from refit_verify.refit.distributed import broadcast_transfer

    batches, stats = broadcast_transfer(ITEMS, META, bucket_bytes=600_000, backend="gloo", timeout_s=60)
    checks.check_transport_roundtrip(ITEMS, batches)
    assert stats.n_buckets == len(batches) == len(plan_buckets(META, 600_000).buckets) > 1
    assert stats.backend == "torch.distributed/gloo"
