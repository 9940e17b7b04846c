"""One rank of a real vLLM 0.33 tensor-parallel group on CPU: its own weight_loaders, per rank.

Run as `python -m refit_verify.engine.vllm_tp --rank R --world W --dir D` in W processes (the
conformance suite starts them). Each process joins a gloo group (file rendezvous in D), initialises
vLLM's model-parallel groups with tensor-parallel size W, builds the layers listed in D/cases.json
(QKVParallelLinear, MergedColumnParallelLinear, RowParallelLinear with block-FP8 Fp8Config, and
FusedMoE), feeds each the whole (gathered) tensors from D/sent.pt through vLLM's own
`weight_loader`s, and writes what its rank then holds (or the exception raised) to D/rank{R}.pt.
Nothing is imported from vllm at module import time.
"""

from __future__ import annotations

import argparse
import json
import os
import traceback


def init_tp(rank: int, world: int, folder: str):
    """Distributed init for one rank, then the single-process driver's CPU substitutions."""
    import torch.distributed as dist
    from vllm.config import set_current_vllm_config
    from vllm.distributed import init_distributed_environment, initialize_model_parallel

    from refit_verify.engine import vllm_cpu

    cfg_dir = os.path.join(folder, f"cfg{rank}")
    os.makedirs(cfg_dir, exist_ok=True)
    with open(os.path.join(cfg_dir, "config.json"), "w") as f:
        json.dump(vllm_cpu.llama_config(256, 512, 4, 2, 1, 512), f)
    cfg = vllm_cpu.make_vllm_config(cfg_dir)
    with set_current_vllm_config(cfg):
        if not dist.is_initialized():
            init_distributed_environment(world_size=world, rank=rank, local_rank=rank, backend="gloo",
                                         distributed_init_method=f"file://{os.path.join(folder, 'rdzv')}")
        initialize_model_parallel(world, 1)
    return vllm_cpu.init_cpu_vllm()  # skips the (done) distributed init; installs kernel + attention substitutes


def load_linear(spec: dict, sent: dict) -> dict:
    from refit_verify.engine import vllm_cpu

    try:
        layer = vllm_cpu.build_linear(spec["kind"], spec["sizes"], spec["K"], spec.get("head_size"))
    except Exception as exc:  # vLLM's create-time validation (e.g. block_k on a row-parallel shard)
        return {"status": "create_raised", "exception": f"{type(exc).__name__}: {exc}"}
    shards = [(sid, sent[hf], sent[hf + "_scale_inv"]) for sid, hf in spec["shards"]]
    out = vllm_cpu.load_shards(layer, shards)
    params = out["loaded"] if out["status"] == "ok" else out["partial"]
    exc = out["exception"] or {}
    return {"status": out["status"], "exception": exc.get("text"), "where": exc.get("where"),
            "shard_id": exc.get("shard_id"), "param": exc.get("param"),
            "allow_mismatch": out["allow_fp8_block_shape_mismatch"], "params": params}


def load_moe(spec: dict, sent: dict) -> dict:
    """FusedMoE block-FP8: construction and weight_loader only (no forward on CPU)."""
    import torch
    from vllm.config import set_current_vllm_config
    from vllm.model_executor.layers.fused_moe import FusedMoEFactory

    from refit_verify.engine import vllm_cpu

    cfg = vllm_cpu.init_cpu_vllm()
    try:
        with set_current_vllm_config(cfg), vllm_cpu.default_dtype(torch.bfloat16):
            moe = FusedMoEFactory(num_experts=spec["experts"], top_k=2, hidden_size=spec["hidden"],
                                  intermediate_size=spec["intermediate"], quant_config=vllm_cpu.fp8_block_quant_config(),
                                  prefix="model.layers.0.mlp.experts")
    except Exception as exc:
        return {"status": "create_raised", "exception": f"{type(exc).__name__}: {exc}",
                "where": vllm_cpu.innermost_vllm_frame(exc)}
    # FusedMoEFactory nests the parameters (e.g. "routed_experts.w13_weight"): key them by their last name
    params = {n.rsplit(".", 1)[-1]: p for n, p in moe.named_parameters()}
    created = {n: p.detach().clone() for n, p in params.items()}
    try:
        with set_current_vllm_config(cfg):
            for e in range(spec["experts"]):
                for hf, wid in (("gate_proj", "w1"), ("up_proj", "w3"), ("down_proj", "w2")):
                    stem = "w2_weight" if wid == "w2" else "w13_weight"
                    name = f"{spec['prefix']}mlp.experts.{e}.{hf}.weight"
                    for pname, t in ((stem, sent[name]), (stem + "_scale_inv", sent[name + "_scale_inv"])):
                        p = params[pname]
                        p.weight_loader(p, t, pname, shard_id=wid, expert_id=e)
    except Exception as exc:
        return {"status": "raised", "exception": f"{type(exc).__name__}: {exc}",
                "where": vllm_cpu.innermost_vllm_frame(exc), "created": created}
    return {"status": "ok", "created": created, "params": {n: p.detach().clone() for n, p in params.items()}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m refit_verify.engine.vllm_tp")
    ap.add_argument("--rank", type=int, required=True)
    ap.add_argument("--world", type=int, required=True)
    ap.add_argument("--dir", required=True)
    args = ap.parse_args(argv)
    import torch

    out: dict = {}
    try:
        init_tp(args.rank, args.world, args.dir)
        cases = json.load(open(os.path.join(args.dir, "cases.json")))
        sent = torch.load(os.path.join(args.dir, "sent.pt"))
        for case in cases:
            out[case["name"]] = load_moe(case, sent) if case["kind"] == "moe" else load_linear(case, sent)
    except Exception as exc:
        out["__error__"] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
    torch.save(out, os.path.join(args.dir, f"rank{args.rank}.pt"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
