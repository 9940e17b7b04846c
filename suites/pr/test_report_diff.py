"""`diff` of two FP8 safetensors folders: zero drift when identical, exact drift when one block changes,
and every malformed input recorded as an issue naming the tensor."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from refit_verify.cli import main
from refit_verify.fp8 import quantize

SHAPES = {"model.layers.0.self_attn.q_proj.weight": (256, 384), "model.layers.0.mlp.down_proj.weight": (300, 130)}


def bf16_weights(seed=0):
    g = torch.Generator().manual_seed(seed)
    w = {n: (torch.randn(s, generator=g) * 0.02).bfloat16() for n, s in SHAPES.items()}
    w["model.norm.weight"] = torch.ones(256, dtype=torch.bfloat16)
    return w


def fp8_state(weights, recipe="vllm_per_block"):
    out = {}
    for n, w in weights.items():
        if w.dim() == 2:
            q = quantize(w, recipe, n)
            out[n] = q.data.contiguous()
            out[n + "_scale_inv"] = q.scale_inv.contiguous()
        else:
            out[n] = w
    return out


def write(folder, state, shards=2):
    folder.mkdir(parents=True, exist_ok=True)
    names = sorted(state)
    for i in range(shards):
        part = {n: state[n] for n in names[i::shards]}
        save_file(part, str(folder / f"model-{i:05d}.safetensors"))
    return folder


def run_diff(tmp_path, a, b, *extra):
    out = tmp_path / "report"
    rc = main(["diff", str(a), str(b), "--out", str(out), "--quiet", "--no-plots", *extra])
    return rc, json.loads((out / "report.json").read_text())


def make_pair(tmp_path):
    state = fp8_state(bf16_weights())
    return state, write(tmp_path / "a", state), tmp_path


@pytest.fixture
def pair(tmp_path):
    return make_pair(tmp_path)


def test_identical_folders_zero_drift(pair, capsys):
    state, a, tmp = pair
    b = write(tmp / "b", dict(state), shards=1)  # different sharding, same content
    rc, rep = run_diff(tmp, a, b)
    assert rc == 0, capsys.readouterr().out
    job = rep["jobs"][0]
    assert job["verdict"] == "pass" and rep["status"] == "complete"
    assert job["metrics"]["fp8_tensors_compared"] == 2 and job["metrics"]["n_code_mismatch"] == 0
    assert all(f["value"] == 0 for f in job["figures"])
    assert "ZERO DRIFT" in capsys.readouterr().out


def test_one_block_scale_altered_gives_exact_drift(pair, capsys):
    state, a, tmp = pair
    name = "model.layers.0.self_attn.q_proj.weight"
    altered = dict(state)
    s = state[name + "_scale_inv"].clone()
    s[1, 2] = s[1, 2] * 2  # one block's scale doubled: codes equal, that scale off
    altered[name + "_scale_inv"] = s
    rc, rep = run_diff(tmp, a, write(tmp / "b", altered))
    assert rc == 1
    job = rep["jobs"][0]
    assert job["metrics"]["n_scale_mismatch"] == 1 and job["metrics"]["n_code_mismatch"] == 0
    row = next(r for r in job["tables"]["tensors"] if r["tensor"] == name)
    assert row["n_scale_mismatch"] == 1
    assert "block (1, 2)" in row["first_mismatch"]
    assert job["failures"][0]["case"] == name
    assert {r["ulp_diff"] for r in job["tables"]["scale_ulp"]} == {0, -64}  # 2x = 2^23 ulps, clipped
    assert name in capsys.readouterr().out


def test_signed_zero_is_drift_and_equal_nan_payload_is_not(pair):
    state, a, tmp = pair
    name = "model.layers.0.mlp.down_proj.weight"
    codes = state[name].view(torch.uint8).clone()
    codes[0, 0] = 0x00
    codes[0, 1] = 0x7F  # NaN, identical bytes on both sides
    base = dict(state, **{name: codes.view(torch.float8_e4m3fn)})
    a = write(tmp / "a0", base)
    rc, _ = run_diff(tmp, a, write(tmp / "same", dict(base)))
    assert rc == 0, "identical bytes (including a NaN code) must be zero drift"
    neg = codes.clone()
    neg[0, 0] = 0x80  # -0: equal as a float, different as a byte
    rc, rep = run_diff(tmp, a, write(tmp / "neg", dict(base, **{name: neg.view(torch.float8_e4m3fn)})))
    assert rc == 1
    assert rep["jobs"][0]["metrics"]["n_code_mismatch"] == 1


def _issues(rep):
    return {(i["tensor"], i["kind"]) for i in rep["jobs"][0]["tables"]["issues"]}


def test_malformed_inputs_are_issues_naming_the_tensor(pair):
    state, a, tmp = pair
    q, d = "model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.down_proj.weight"
    bad = dict(state)
    del bad[q + "_scale_inv"]  # missing scale
    bad["model.layers.9.ghost.weight_scale_inv"] = torch.ones(1, 1)  # orphan scale
    bad[d] = state[d].float()  # dtype mismatch (and then no longer fp8 with a scale)
    bad["model.norm.weight"] = torch.ones(128, dtype=torch.bfloat16)  # shape mismatch
    rc, rep = run_diff(tmp, a, write(tmp / "b", bad))
    assert rc == 1 and rep["status"] == "complete"
    issues = _issues(rep)
    assert (q, "missing_scale") in issues
    assert ("model.layers.9.ghost.weight_scale_inv", "orphan_scale") in issues
    assert (d, "dtype_mismatch") in issues
    assert ("model.norm.weight", "shape_mismatch") in issues


def test_corrupt_shard_names_file_and_its_tensors(pair):
    state, a, tmp = pair
    b = write(tmp / "b", dict(state))  # shard 1 holds both scale_inv tensors (sorted, every other name)
    (b / "model-00001.safetensors").write_bytes(b"\x00garbage")
    rc, rep = run_diff(tmp, a, b)
    assert rc == 1 and rep["status"] == "complete"
    issues = _issues(rep)
    assert ("model-00001.safetensors", "unreadable") in issues
    for name in SHAPES:  # each FP8 tensor that lost its scale, by name
        assert (name, "missing_scale") in issues


def test_unloaded_scale_is_flagged(pair):
    state, a, tmp = pair
    q = "model.layers.0.self_attn.q_proj.weight"
    s = state[q + "_scale_inv"].clone()
    s[0, 0] = torch.finfo(torch.float32).min  # vLLM's pre-fill: the scale was never loaded
    rc, rep = run_diff(tmp, a, write(tmp / "b", dict(state, **{q + "_scale_inv": s})))
    assert rc == 1
    assert (q + "_scale_inv", "scale_unloaded") in _issues(rep)


def test_source_gives_each_side_error_vs_bf16(pair):
    state, a, tmp = pair
    src = write(tmp / "src", bf16_weights(), shards=1)
    other = write(tmp / "b", fp8_state(bf16_weights(), "nemo_rl"))
    rc, rep = run_diff(tmp, a, other, "--source", str(src))
    assert rc == 1  # nemo_rl vs vllm_per_block scales differ by an ulp (FACTS.md §3)
    row = next(r for r in rep["jobs"][0]["tables"]["tensors"] if r["tensor"].endswith("q_proj.weight"))
    assert 28 < row["sqnr_db_a"] < 40 and 28 < row["sqnr_db_b"] < 40
    assert any(f["metric"] == "sqnr_db" for f in rep["jobs"][0]["figures"])


def test_missing_path_is_a_clear_exit_2(tmp_path, capsys):
    assert main(["diff", str(tmp_path / "nope"), str(tmp_path / "nope2"), "--out", str(tmp_path / "r")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


Q = "model.layers.0.self_attn.q_proj.weight"


def _with_scale(state, value, at=(0, 0)):
    s = state[Q + "_scale_inv"].clone()
    s[at] = value
    return dict(state, **{Q + "_scale_inv": s})


@pytest.mark.parametrize("value,kind", [(float("nan"), "scale_invalid"), (float("inf"), "scale_invalid"),
                                        (-1.0, "scale_invalid"), (0.0, "scale_invalid"),
                                        (-3.4e38, "scale_unloaded")])
def test_each_side_is_validated_alone_bad_scales_are_never_zero_drift(tmp_path, value, kind):
    state = _with_scale(fp8_state(bf16_weights()), value)
    rc, rep = run_diff(tmp_path, write(tmp_path / "a", state), write(tmp_path / "b", dict(state)))
    assert rc == 1 and (Q + "_scale_inv", kind) in _issues(rep)


def test_all_nan_codes_and_bad_ranks_are_issues(tmp_path):
    state = fp8_state(bf16_weights())
    state[Q] = torch.full(state[Q].shape, 0x7F, dtype=torch.uint8).view(torch.float8_e4m3fn)
    for name, shape in (("x.one_d.weight", (130,)), ("x.zero_d.weight", ()), ("x.three_d.weight", (2, 3, 4))):
        state[name] = torch.zeros(shape, dtype=torch.float8_e4m3fn)
        state[name + "_scale_inv"] = torch.ones(1, 1)
    rc, rep = run_diff(tmp_path, write(tmp_path / "a", state), write(tmp_path / "b", dict(state)))
    issues = _issues(rep)
    assert rc == 1 and (Q, "nan_codes") in issues
    for name in ("x.one_d.weight", "x.zero_d.weight", "x.three_d.weight"):
        assert (name, "bad_rank") in issues


def test_empty_state_dicts_are_not_zero_drift(tmp_path, capsys):
    for side in "ab":
        (tmp_path / side).mkdir()
        save_file({}, str(tmp_path / side / "model.safetensors"))
    rc, rep = run_diff(tmp_path, tmp_path / "a", tmp_path / "b")
    assert rc == 1 and rep["jobs"][0]["verdict"] == "fail" and "ZERO DRIFT" not in capsys.readouterr().out
    assert ("empty" in {k for _, k in _issues(rep)})


def test_pickle_and_fifo_are_refused_never_opened(tmp_path, capsys):
    import os

    pkl = tmp_path / "model.bin"
    torch.save({"w": torch.ones(2)}, pkl)
    assert main(["diff", str(pkl), str(pkl), "--out", str(tmp_path / "r1")]) == 2
    assert "refused, never loaded" in capsys.readouterr().err
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    assert main(["diff", str(fifo), str(fifo), "--out", str(tmp_path / "r2")]) == 2  # would block if opened
    assert "not a regular file" in capsys.readouterr().err
    state = fp8_state(bf16_weights())
    b = write(tmp_path / "b", dict(state))
    torch.save({"w": torch.ones(2)}, b / "model-00001.safetensors")  # pickle behind a safetensors name
    rc, rep = run_diff(tmp_path, write(tmp_path / "a", state), b)
    assert rc == 1 and ("model-00001.safetensors", "refused") in _issues(rep)


def test_sigterm_keeps_the_tensors_finished(pair, monkeypatch):
    from refit_verify.compare import diff as diff_mod
    from refit_verify.errors import Terminated

    state, a, tmp = pair
    real, calls = diff_mod._diff_one, []

    def one_then_terminated(*args):
        calls.append(args[0])
        if len(calls) > 1:
            raise Terminated()
        return real(*args)

    monkeypatch.setattr(diff_mod, "_diff_one", one_then_terminated)
    out = tmp / "report"
    assert main(["diff", str(a), str(write(tmp / "b", dict(state))), "--out", str(out), "-q", "--no-plots"]) == 143
    rep = json.loads((out / "report.json").read_text())
    assert rep["status"] == "incomplete" and rep["interrupted"] == "terminated (SIGTERM)"
    job = rep["jobs"][0]
    assert job["verdict"] == "error" and [r["tensor"] for r in job["tables"]["tensors"]] == calls[:1]
    assert (out / "report.html").exists()


# --- fuzz: malformed safetensors headers never give a traceback or exit 0 ------------------------------
from hypothesis import HealthCheck, assume, given, settings, strategies as st  # noqa: E402

DTYPES = st.sampled_from(["F8_E4M3", "F32", "BF16", "U8", "I64", "F4", "", "f32"])
ENTRY = st.fixed_dictionaries({"dtype": DTYPES, "shape": st.lists(st.integers(-2, 300), max_size=3),
                               "data_offsets": st.lists(st.integers(-1, 70000), min_size=0, max_size=3)})
HEADER = st.dictionaries(st.sampled_from([Q, Q + "_scale_inv", "model.norm.weight", "__metadata__", ""]),
                         ENTRY | st.integers() | st.text(max_size=4), max_size=3)


def _safetensors_bytes(header, payload: int, length_delta: int) -> bytes:
    raw = json.dumps(header).encode()
    return (len(raw) + length_delta).to_bytes(8, "little", signed=True) + raw + b"\x3c" * payload


def _readable(path) -> bool:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            for k in f.keys():
                f.get_tensor(k)
        return True
    except Exception:  # noqa: BLE001
        return False


@settings(max_examples=30, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(HEADER, st.integers(0, 4096), st.sampled_from([0, 0, 0, -1, 3, 1 << 40]))
def test_fuzz_malformed_safetensors_header_is_never_zero_drift(tmp_path_factory, header, payload, delta):
    tmp = tmp_path_factory.mktemp("fuzz")
    f = tmp / "model.safetensors"
    f.write_bytes(_safetensors_bytes(header, payload, delta))
    assume(not _readable(f))  # a header that happens to be valid is not malformed input
    rc = main(["diff", str(f), str(f), "--out", str(tmp / "r"), "-q", "--no-plots"])
    assert rc in (1, 2)
    if rc == 1:
        assert json.loads((tmp / "r" / "report.json").read_text())["jobs"][0]["verdict"] != "pass"
