"""`check`: a correct quantizer exits 0, a wrong one exits 1 naming the first mismatch, user errors are clear."""

from __future__ import annotations

import textwrap

import pytest

from refit_verify.cli import main

USER_CODE = textwrap.dedent('''
    import torch
    from refit_verify.fp8 import quantize

    def right(w):
        q = quantize(w, "vllm_per_block")
        return q.data, q.scale_inv

    def wrong(w):  # NeMo-RL's scale form: 1/(448/a) instead of a/448, off by an ulp in many blocks
        q = quantize(w, "nemo_rl")
        return q.data, q.scale_inv

    def raises(w):
        raise RuntimeError("kernel exploded")
''')
FAST = ["--case", "randn_127x129", "--case", "randn_256x384", "--case", "block_zero_256x256"]


def make_user_file(tmp_path):
    p = tmp_path / "my_quant.py"
    p.write_text(USER_CODE)
    return p


@pytest.fixture
def user_file(tmp_path):
    return make_user_file(tmp_path)


def test_correct_quantizer_exits_0(user_file, capsys):
    assert main(["check", "--quantizer", f"{user_file}:right", *FAST]) == 0
    assert "PASS" in capsys.readouterr().out


def test_wrong_quantizer_exits_1_and_names_first_mismatch(user_file, capsys):
    assert main(["check", "--quantizer", f"{user_file}:wrong", *FAST]) == 1
    out = capsys.readouterr().out
    assert "first mismatch: case randn_127x129" in out
    assert "mismatch in block (" in out and "scale_inv" in out
    assert "reproduce: refit-verify check --quantizer" in out and "--case randn_127x129 --seed 0" in out


def test_dotted_module_and_kwargs(capsys):
    args = ["check", "--quantizer", "refit_verify.fp8:quantize", *FAST]
    assert main(args + ["--kwargs", '{"recipe": "vllm_per_block"}']) == 0
    assert main(args + ["--kwargs", '{"recipe": "deepgemm"}']) == 1
    assert main(args + ["--kwargs", '{"recipe": "deepgemm"}', "--against", "vllm_per_block_ue8m0"]) == 0


def test_raising_callable_is_reported_per_case(user_file, capsys):
    assert main(["check", "--quantizer", f"{user_file}:raises", *FAST]) == 1
    out = capsys.readouterr().out
    assert "quantizer raised RuntimeError: kernel exploded" in out


@pytest.mark.parametrize("spec,msg", [
    ("no_such_module_xyz:f", "importing no_such_module_xyz failed"),
    ("refit_verify.fp8:nope", "has no attribute 'nope'"),
    ("missing/file.py:f", "not found"),
    ("refit_verify.fp8", "expected MODULE:ATTR"),
])
def test_import_problems_exit_2_without_traceback(spec, msg, capsys):
    assert main(["check", "--quantizer", spec]) == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err


def test_bad_kwargs_unknown_case_unknown_recipe(user_file, capsys):
    assert main(["check", "--quantizer", f"{user_file}:right", "--kwargs", "{bad"]) == 2
    assert main(["check", "--quantizer", f"{user_file}:right", "--case", "nope"]) == 2
    assert main(["check", "--quantizer", f"{user_file}:right", "--against", "nope"]) == 2
    assert "presets:" in capsys.readouterr().err


def test_bad_exporter_is_one_line_and_loader_option_is_gone(capsys):
    assert main(["check", "--exporter", "no_such_module_xyz:f"]) == 2  # import error: one line, exit 2
    assert "no_such_module_xyz" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # an option that did nothing is removed, not answered "not yet"
        main(["check", "--loader", "x:y"])
    assert exc.value.code == 2 and "unrecognized arguments: --loader" in capsys.readouterr().err


def test_check_report(user_file, tmp_path):
    out = tmp_path / "r"
    assert main(["check", "--quantizer", f"{user_file}:wrong", *FAST, "--out", str(out), "-q"]) == 1
    import json

    rep = json.loads((out / "report.json").read_text())
    assert rep["jobs"][0]["verdict"] == "fail" and rep["jobs"][0]["failures"][0]["repro"].endswith("--seed 0")


EXITING = textwrap.dedent('''
    import sys
    import torch

    def exits(w):
        sys.exit(0)

    def interrupts(w):
        raise KeyboardInterrupt

    def meta(w):
        return (torch.empty(w.shape, dtype=torch.float8_e4m3fn, device="meta"),
                torch.empty(((w.shape[0] + 127) // 128, (w.shape[1] + 127) // 128), dtype=torch.float32,
                            device="meta"))
''')


@pytest.mark.parametrize("fn,msg", [("exits", "SystemExit(0)"), ("interrupts", "KeyboardInterrupt"),
                                    ("meta", "comparing the quantizer's output failed")])
def test_exiting_or_unusable_quantizer_is_a_case_error(tmp_path, capsys, fn, msg):
    p = tmp_path / "exiting.py"
    p.write_text(EXITING)
    try:
        code = main(["check", "--quantizer", f"{p}:{fn}", *FAST])
    except BaseException as exc:  # noqa: BLE001 - the user's exit must not become ours
        code = f"escaped {exc!r}"
    assert code == 1
    out = capsys.readouterr().out
    assert msg in out


def test_sys_exit_at_import_is_a_load_error(tmp_path, capsys):
    p = tmp_path / "exits_at_import.py"
    p.write_text("import sys\nsys.exit(0)\n")
    assert main(["check", "--quantizer", f"{p}:f"]) == 2
    assert "SystemExit(0)" in capsys.readouterr().err


PRINTING = textwrap.dedent('''
    from refit_verify.fp8 import quantize

    def chatty(w):
        print("chatty: quantizing", tuple(w.shape))
        q = quantize(w, "nemo_rl")
        return q.data, q.scale_inv

    def asserts(w):
        assert w.dim() == 3
''')


def test_messages_count_apart_label_sides_and_print_user_output_after_verdict(tmp_path, capsys):
    p = tmp_path / "printing.py"
    p.write_text(PRINTING)
    assert main(["check", "--quantizer", f"{p}:chatty", *FAST]) == 1
    out = capsys.readouterr().out
    assert out.startswith("FAIL: 0 cases raised, ")
    assert "reference=" in out and "yours=" in out
    assert out.index("chatty: quantizing") > out.index("reproduce:")
    assert main(["check", "--quantizer", f"{p}:asserts", *FAST]) == 1
    out = capsys.readouterr().out
    assert out.startswith("FAIL: 3 cases raised, 0 differ (of 3)")
    assert f"AssertionError at {p}:" in out and "assert w.dim() == 3" in out


HOSTILE = textwrap.dedent('''
    import ctypes, os, time
    from refit_verify.fp8 import quantize

    def hostile(w):
        if w.shape == (127, 129):
            os._exit(0)
        if w.shape == (256, 384):
            ctypes.string_at(0)  # segfault
        if w.shape == (256, 256):
            time.sleep(1000)
        q = quantize(w, "vllm_per_block")
        return q.data, q.scale_inv
''')


def test_os_exit_segfault_and_hang_are_each_that_cases_error_with_a_report(tmp_path, capsys):
    p = tmp_path / "hostile.py"
    p.write_text(HOSTILE)
    out = tmp_path / "r"
    code = main(["check", "--quantizer", f"{p}:hostile", *FAST, "--case", "randn_1x1", "--timeout", "3",
                 "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 1 and text.startswith("FAIL: 3 cases raised, 0 differ (of 4)"), text
    assert "exited with code 0" in text and "SIGSEGV" in text and "time limit of 3 s" in text
    import json

    rep = json.loads((out / "report.json").read_text())
    assert rep["status"] == "complete" and rep["jobs"][0]["verdict"] == "fail"
    assert rep["jobs"][0]["metrics"]["cases_raised"] == 3


@pytest.mark.parametrize("body,msg", [("import os\nos._exit(0)\n", "exited with code 0"),
                                      ("import sys\nsys.exit(3)\n", "SystemExit(3)")])
def test_exiting_at_import_in_the_child_is_one_usage_error(tmp_path, capsys, body, msg):
    p = tmp_path / "bad_import.py"
    p.write_text(body)
    assert main(["check", "--quantizer", f"{p}:f", *FAST]) == 2
    err = capsys.readouterr().err
    assert msg in err and str(p) in err and "Traceback" not in err


def test_a_folder_as_quantizer_is_a_clear_usage_error(tmp_path, capsys):
    (tmp_path / "pkg").mkdir()
    assert main(["check", "--quantizer", f"{tmp_path / 'pkg'}:f", "--in-process"]) == 2
    err = capsys.readouterr().err
    assert "is a folder" in err and "Traceback" not in err
