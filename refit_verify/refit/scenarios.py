"""Small reference runs, each ending in checks. All pass on the reference; each self-test mutant
of the refit area fails at least one (see selftest/mutants_refit.py KILLED_BY).

Every scenario is deterministic (synthetic weights, seed 0) and takes about a second on CPU.
"""

from __future__ import annotations

from functools import lru_cache


from refit_verify.model import load_config, synthesize_weights
from refit_verify.refit import checks
from refit_verify.refit.exporter import TrainerExporter
from refit_verify.refit.loader import EngineStore
from refit_verify.refit.run import run_refit, selection_findings
from refit_verify.refit.selection import heuristic_selection, matches_pattern
from refit_verify.refit.transport import InProcessTransport, plan_buckets

SEED = 0


@lru_cache(maxsize=None)
def _weights(name: str) -> dict:
    return synthesize_weights(load_config(name), SEED)


def weights_with_tiny_block(name: str = "tiny-llama", tensor: str = "model.layers.0.self_attn.q_proj.weight"):
    """One 128x128 block far below vLLM's amax floor (1e-4): re-quantizing its FP8 codes is not the identity."""
    w = dict(_weights(name))
    t = w[tensor].clone()
    t[:128, :128] *= 1e-5
    w[tensor] = t
    return w


def _before_metadata(name: str):
    return TrainerExporter(_weights(name), "before", "vllm_per_block").metadata()


def scenario_metadata_detection_with_split_scale():
    """A scale split into the next bucket must not make its weight look like BF16."""
    meta = _before_metadata("tiny-llama")
    bb = checks.exact_fit_bucket_bytes(meta, 512, "model.layers.0.self_attn.q_proj.weight")
    r = run_refit("tiny-llama", weights_with_tiny_block(), bucket_bytes=bb, detection="metadata")
    checks.check_no_misdetected_batches(r)
    checks.check_paths_bitwise_equal(r)


def scenario_loader_selection_moe_router():
    """Router and the BF16 first layer must not be quantized when the engine is asked."""
    r = run_refit("tiny-moe-router")
    checks.check_selection_matches_engine(r.findings)
    checks.check_no_hazards(r)
    checks.check_paths_bitwise_equal(r)


def scenario_ignore_pattern_components():
    """Ignoring 'mlp.gate' (the router) must keep gate_proj / gate_up_proj quantized."""
    if not (matches_pattern("model.layers.1.mlp.gate.weight", "mlp.gate")
            and not matches_pattern("model.layers.1.mlp.gate_up_proj.weight", "mlp.gate")):
        raise checks.CheckFailed("mlp.gate pattern matches mlp.gate_up_proj (substring trap)")
    cfg = load_config("tiny-moe-router")
    sel = heuristic_selection(keep_first_layers=1, ignore=("mlp.gate",))
    ex = TrainerExporter(_weights("tiny-moe-router"), "before", "vllm_per_block", sel)
    checks.check_selection_matches_engine(selection_findings(ex.fp8_names, EngineStore(cfg)))


def scenario_exact_placement_mimo():
    """3072/192/128: the correct placement gives every row its own shard's scale."""
    r = run_refit("odd-mimo", placement="exact")
    checks.check_scale_placement(r)
    checks.check_scales_written(r)
    checks.check_paths_bitwise_equal(r)


def scenario_scales_written():
    r = run_refit("tiny-llama")
    checks.check_scales_written(r)
    checks.check_all_loaded(r)
    checks.check_scale_placement(r)
    checks.check_no_hazards(r)


def scenario_no_requant_without_ue8m0():
    """process_weights_after_loading must not touch the weights unless UE8M0 requant is on."""
    checks.check_no_requant_drift(run_refit("tiny-llama", ue8m0_requant=False))


def scenario_ue8m0_sender_survives_requant():
    """A trainer that sends UE8M0 scales keeps its values through the engine's requantization."""
    r = run_refit("tiny-llama", before="vllm_per_block_ue8m0", ue8m0_requant=True)
    checks.check_no_requant_drift(r)
    checks.check_paths_bitwise_equal(r)


def scenario_cropped_recipe_sent_contiguous():
    """nemo_rl crops a padded result (non-contiguous when K % 128 != 0: down_proj K=320)."""
    r = run_refit("odd-gate-up-320", before="nemo_rl", placement="exact")
    checks.check_no_hazards(r, ("transport",))
    checks.check_paths_bitwise_equal(r)


def scenario_bucket_split_exact_fit():
    """A tensor that fills a bucket exactly stays in it, on both sides."""
    meta = _before_metadata("tiny-llama")
    items = list(TrainerExporter(_weights("tiny-llama"), "before", "vllm_per_block"))
    bb = checks.exact_fit_bucket_bytes(meta, 512, "model.layers.0.self_attn.k_proj.weight")
    checks.check_split_agrees(items, meta, bb, 512)
    checks.check_bucket_plan(plan_buckets(meta, bb, 512))
    checks.check_transport_roundtrip(items, list(InProcessTransport(bb, 512).transfer(items, meta)))


def scenario_roundtrip_small_buckets():
    """Every tensor arrives byte-exact, the last partial bucket included (FP8 stays e4m3)."""
    meta = _before_metadata("tiny-llama")
    items = list(TrainerExporter(_weights("tiny-llama"), "before", "vllm_per_block"))
    for bb in (600_000, 1 << 20):
        batches = list(InProcessTransport(bb, 512).transfer(items, meta))
        checks.check_transport_roundtrip(items, batches)
    r = run_refit("tiny-llama", bucket_bytes=600_000)
    checks.check_all_loaded(r)
    checks.check_paths_bitwise_equal(r)


def scenario_compare_states_every_rank():
    """A difference on any rank of a sharded engine state is a mismatch naming that rank."""
    import torch

    from refit_verify.layout import Layout, Rank
    from refit_verify.refit import run as R
    from refit_verify.refit.engine import EngineState

    w = torch.ones(2, 4, dtype=torch.bfloat16)
    a = EngineState(Layout(tp=2), {Rank(tp=0): {"x.weight": w}, Rank(tp=1): {"x.weight": w}})
    b = EngineState(Layout(tp=2), {Rank(tp=0): {"x.weight": w}, Rank(tp=1): {"x.weight": w * 2}})
    bad = [(c.tensor, c.rank) for c in R.compare_states(a, b) if not c.equal]
    assert bad == [("x.weight", "tp1.ep0.pp0")], f"expected the tp1 shard to differ, got {bad}"


SCENARIOS = {name[len("scenario_"):]: fn for name, fn in globals().items() if name.startswith("scenario_")}


def run_all() -> dict:
    """{scenario: None if it passed else the failure message}."""
    out = {}
    for name, fn in SCENARIOS.items():
        try:
            fn()
            out[name] = None
        except AssertionError as exc:
            out[name] = str(exc)
    return out
