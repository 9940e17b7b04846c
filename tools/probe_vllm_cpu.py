"""Exercise refit_verify.engine.vllm_cpu against the real vLLM and the goldens.

Run with the vLLM venv's python from the repo root:
    ~/.cache/refit-verify/vllm-0.33.0/bin/python tools/probe_vllm_cpu.py [--json out.json]
Exit status 0 only if every golden reproduces bit for bit and the model probes behave
as documented. Reads goldens from fixtures/golden (never ../shared).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
GOLD = ROOT / "fixtures" / "golden"
KINDS = {"QKVParallelLinear": "qkv", "MergedColumnParallelLinear": "merged",
         "RowParallelLinear": "row", "ColumnParallelLinear": "column"}

results: list[tuple[str, bool, str]] = []


def check(name, ok, detail=""):
    results.append((name, bool(ok), detail))
    print(f"{'PASS' if ok else 'FAIL'} {name} {detail}".rstrip(), flush=True)


def bits(t):
    # Bitwise identity, NaN payloads included: compare integer views.
    import torch
    iv = {1: torch.uint8, 2: torch.int16, 4: torch.int32}[t.element_size()]
    return t.contiguous().view(iv)


def same(a, b):
    import torch
    return a.shape == b.shape and torch.equal(bits(a), bits(b))


def read_golden(name):
    from safetensors import safe_open
    with safe_open(str(GOLD / name), framework="pt") as f:
        meta = json.loads(f.metadata()["meta"])
        return meta, {k: f.get_tensor(k) for k in f.keys()}


def probe_quantizers(V):
    import torch
    meta, t = read_golden("vllm-0.33.0-fp8.safetensors")
    for case in meta["cases"]:
        act = case.startswith("act.")
        x = t[f"{case}.x"]
        for u in (0, 1):
            if act:
                q, s = V.quant_fp8_group_native(x, 128, use_ue8m0=bool(u))
            else:
                q, s = V.per_block_cast_to_fp8(x, use_ue8m0=bool(u))
            ok_q = same(q.view(torch.uint8), t[f"{case}.q.ue8m0_{u}"])
            ok_s = same(s.float(), t[f"{case}.s.ue8m0_{u}"])
            check(f"quant {case} ue8m0={u}", ok_q and ok_s,
                  "" if ok_q and ok_s else f"codes={ok_q} scales={ok_s} s.shape={tuple(s.shape)}")


def probe_loaders(V):
    import torch
    meta, t = read_golden("vllm-0.33.0-loader.safetensors")
    fill = meta["scale_fill_value"]
    for cfg, c in meta["configs"].items():
        kind = KINDS[c["layer"]]
        layer = V.build_linear(kind, c["shard_sizes"], c["K"],
                               head_size=c["ctor_kwargs"].get("head_size"))
        check(f"loader {cfg} ctor", V.ctor_kwargs_of(layer) == c["ctor_kwargs"],
              f"{V.ctor_kwargs_of(layer)}")
        shards = []
        for i, sid in enumerate(c["shard_ids"]):
            x, q, s = (t[f"{cfg}.shard{i}.{k}"] for k in "xqs")
            q2, s2 = V.per_block_cast_to_fp8(x, use_ue8m0=False)
            check(f"loader {cfg} shard{i} requantized", same(q2.view(torch.uint8), q) and same(s2, s))
            shards.append((sid, q, s))
        r = V.load_shards(layer, shards)
        exp_status = "raised" if c["status"] == "raised" else "ok"
        for key in ("params_before", "params_after", "kernel", "loader",
                    "allow_fp8_block_shape_mismatch", "non_param_attrs_after"):
            check(f"loader {cfg} {key}", r[key] == c[key], f"{r[key]!r} vs {c[key]!r}"
                  if r[key] != c[key] else "")
        check(f"loader {cfg} status", r["status"] == exp_status, r["status"])
        if exp_status == "raised":
            e = r["exception"] or {}
            got_on = {"shard_id": e.get("shard_id"), "param": e.get("param")}
            check(f"loader {cfg} exception", e.get("text") == c["exception"]
                  and e.get("where") == c["exception_at"] and got_on == c["raised_on"],
                  f"{e.get('text')!r} at {e.get('where')} on {got_on}")
            ps = r["partial"]["weight_scale_inv"]
            check(f"loader {cfg} partial scale", same(ps, t[f"{cfg}.partial.weight_scale_inv"]),
                  f"{int((ps == fill).sum())} entries at fill")
            continue
        for stage in ("loaded", "processed"):
            for pname, got in r[stage].items():
                exp = t[f"{cfg}.{stage}.{pname}"]
                got = got.view(torch.uint8) if got.dtype == torch.float8_e4m3fn else got
                check(f"loader {cfg} {stage}.{pname}", same(got, exp))


class Grab(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.msgs = []

    def emit(self, rec):
        self.msgs.append(rec.getMessage())


def probe_model(V, report):
    """get_model from a tiny folder, then both refit paths through load_weights."""
    import torch
    from vllm.config import set_current_vllm_config
    tmp = tempfile.mkdtemp(prefix="refit-verify-llama-")
    bf16 = V.write_tiny_llama_folder(tmp, seed=0)
    t0 = time.perf_counter()
    model = V.load_llama_from_folder(tmp)
    report["get_model_s"] = round(time.perf_counter() - t0, 3)
    p0 = V.named_params(model)
    report["model_params"] = {n: [list(p.shape), str(p.dtype)] for n, p in p0.items()}
    q, s = V.per_block_cast_to_fp8(bf16["model.layers.0.self_attn.k_proj.weight"])
    hd = 64  # 256 hidden / 4 heads
    check("model qkv k-rows from checkpoint",
          same(p0["model.layers.0.self_attn.qkv_proj.weight"][256:256 + 2 * hd].view(torch.uint8),
               q.view(torch.uint8)))

    # FP8-before: new trainer weights, quantized by the trainer, sent with _scale_inv.
    g = torch.Generator().manual_seed(1)
    new = {n: (torch.randn(w.shape, generator=g) * 0.05).bfloat16()
           for n, w in bf16.items() if ".layers." in n and w.dim() == 2}
    batch = []
    for n, w in new.items():
        q, s = V.per_block_cast_to_fp8(w)
        batch += [(n, q), (n + "_scale_inv", s)]
    r = V.load_weights_into(model, batch, process=True)
    pa = r["params"]
    q, s = V.per_block_cast_to_fp8(new["model.layers.1.mlp.up_proj.weight"])
    up = pa["model.layers.1.mlp.gate_up_proj.weight"][512:]
    ups = pa["model.layers.1.mlp.gate_up_proj.weight_scale_inv"][4:]
    check("refit fp8-before lands bit-exact", same(up.view(torch.uint8), q.view(torch.uint8))
          and same(ups, s), f"{len(r['loaded'])} vLLM params loaded")

    # FP8-after: bf16 into fp8 params. vLLM 0.33 plain fp8 has no online quantization.
    grab = Grab()
    logging.getLogger("vllm").addHandler(grab)
    sent = {n: w * 100 for n, w in new.items() if n.startswith("model.layers.0.")}
    try:
        r = V.load_weights_into(model, list(sent.items()))
        outcome = "no exception"
    except Exception as e:  # recorded, not fatal: the point is to learn what happens
        r, outcome = None, f"{type(e).__name__}: {e}"
    finally:
        logging.getLogger("vllm").removeHandler(grab)
    fa = {"outcome": outcome, "warnings": grab.msgs}
    if r is not None:
        pa2 = r["params"]
        o = pa2["model.layers.0.self_attn.o_proj.weight"]
        w = sent["model.layers.0.self_attn.o_proj.weight"]
        fa["param_dtype_after"] = str(o.dtype)
        fa["weight_equals_plain_cast"] = same(o.view(torch.uint8), w.to(torch.float8_e4m3fn).view(torch.uint8))
        fa["scale_unchanged"] = same(pa2["model.layers.0.self_attn.o_proj.weight_scale_inv"],
                                     pa["model.layers.0.self_attn.o_proj.weight_scale_inv"])
        deq = o.float() * pa2["model.layers.0.self_attn.o_proj.weight_scale_inv"].repeat_interleave(
            128, 0).repeat_interleave(128, 1)
        fa["dequant_rel_err_vs_sent"] = float((deq - w.float()).norm() / w.float().norm())
        q_gate = pa2["model.layers.0.mlp.gate_up_proj.weight"][:512]
        fa["stacked_gate_equals_plain_cast"] = same(
            q_gate.view(torch.uint8),
            sent["model.layers.0.mlp.gate_proj.weight"].to(torch.float8_e4m3fn).view(torch.uint8))
    report["fp8_after_bf16_into_fp8"] = fa

    # A packed transport hands fp8 as uint8 bytes; raw load_weights (not our helper,
    # which re-views uint8 as fp8) value-casts them: byte 0x38 becomes the number 56.
    w = new["model.layers.1.self_attn.o_proj.weight"]
    q, _ = V.per_block_cast_to_fp8(w)
    with set_current_vllm_config(V.vllm_config_of(model)):
        model.load_weights([("model.layers.1.self_attn.o_proj.weight", q.view(torch.uint8))])
    o = dict(model.named_parameters())["model.layers.1.self_attn.o_proj.weight"].detach()
    u8 = {"bit_exact": same(o.view(torch.uint8), q.view(torch.uint8)),
          "equals_value_cast": same(o.view(torch.uint8),
                                    q.view(torch.uint8).to(torch.float8_e4m3fn).view(torch.uint8))}
    report["uint8_bytes_into_fp8"] = u8
    check("raw uint8 into fp8 param is value-cast (documented hazard)",
          u8["equals_value_cast"] and not u8["bit_exact"], json.dumps(u8))
    check("refit fp8-after (bf16) behaviour recorded", True, json.dumps(fa))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", help="write the summary here")
    ap.add_argument("--skip-model", action="store_true")
    ap.add_argument("--fast-exit", action="store_true",
                    help="os._exit after the summary: skips vLLM's multi-second interpreter teardown")
    a = ap.parse_args()
    t0 = time.perf_counter()
    from refit_verify.engine import vllm_cpu as V
    ok, why = V.vllm_available()
    report = {"vllm_available": [ok, why], "import_s": round(time.perf_counter() - t0, 3)}
    print("vllm:", why, flush=True)
    if not ok:
        return 2
    import torch
    t1 = time.perf_counter()
    V.init_cpu_vllm()
    report["init_s"] = round(time.perf_counter() - t1, 3)
    from vllm.platforms import current_platform
    from vllm.utils import deep_gemm
    import vllm.envs as envs
    report["facts"] = {
        "torch": torch.__version__, "platform": type(current_platform).__name__,
        "platform_unspecified": current_platform.is_unspecified(),
        "deep_gemm_installed": deep_gemm.has_deep_gemm(),
        "is_deep_gemm_supported": deep_gemm.is_deep_gemm_supported(),
        "is_deep_gemm_e8m0_used": deep_gemm.is_deep_gemm_e8m0_used(),
        "VLLM_USE_DEEP_GEMM": envs.VLLM_USE_DEEP_GEMM,
        "VLLM_USE_DEEP_GEMM_E8M0": envs.VLLM_USE_DEEP_GEMM_E8M0,
        "fp8_cast": {str(v): torch.tensor([v]).to(torch.float8_e4m3fn).view(torch.uint8).item()
                     for v in (448.0, 460.0, 464.0, 500.0, 1e9, float("inf"), float("-inf"))},
    }
    print("facts:", json.dumps(report["facts"]), flush=True)
    t1 = time.perf_counter()
    probe_quantizers(V)
    report["quantizers_s"] = round(time.perf_counter() - t1, 3)
    t1 = time.perf_counter()
    probe_loaders(V)
    report["loaders_s"] = round(time.perf_counter() - t1, 3)
    if not a.skip_model:
        probe_model(V, report)
    failed = [r for r in results if not r[1]]
    report["checks"] = len(results)
    report["failed"] = [f"{n} {d}" for n, _, d in failed]
    report["total_s"] = round(time.perf_counter() - t0, 3)
    print(f"\n{len(results) - len(failed)}/{len(results)} checks passed; "
          f"import {report['import_s']}s init {report['init_s']}s total {report['total_s']}s")
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=1, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    rc = main()
    if "--fast-exit" in sys.argv:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    sys.exit(rc)
