"""The self-test runner counts a kill only when a declared killer fails by assertion or a
refit-verify error; a killer that crashes (TypeError, KeyError, ImportError...) is no kill."""

from __future__ import annotations

import textwrap

import pytest

from refit_verify.selftest.mutant import Mutant, lane_of
from refit_verify.selftest.run import classify, no_junit_error, run_mutant

CONFTEST = '''
def pytest_addoption(parser):
    parser.addoption("--refit-mutant", default=None)
'''
CRASH = '''
def test_crashes():
    {}["missing"]

def test_type_error():
    len(3)
'''
ASSERTS = '''
import pytest
from refit_verify.errors import LoadError

def test_asserts():
    assert 1 == 2

def test_refit_error():
    raise LoadError("scale block (0, 1) of w not written")

def test_expected_raise_missing():
    with pytest.raises(ValueError):
        pass
'''


@pytest.mark.parametrize("message,expected", [
    ("AssertionError: assert 1 == 2", ("assert", "AssertionError")),
    ("Failed: DID NOT RAISE <class 'ValueError'>", ("assert", "Failed")),
    ("refit_verify.errors.ShardPlacementError: rows 64..127", ("assert", "ShardPlacementError")),
    ("refit_verify.refit.checks.CheckFailed: bucket 0: producer packed", ("assert", "CheckFailed")),
    ("refit_verify.refit.checks.NoSuchThing: x", ("crash", "refit_verify.refit.checks.NoSuchThing")),
    ("TypeError: object of type 'int' has no len()", ("crash", "TypeError")),
    ("KeyError: 'missing'", ("crash", "KeyError")),
    ('failed on setup with "ImportError: cannot import name x"', ("crash", "ImportError")),
    ('failed on setup with "AssertionError: fixture check"', ("assert", "AssertionError")),
])
def test_classify_failure_message(message, expected):
    assert classify(message) == expected


def test_exception_group_is_an_assertion_only_when_every_member_is():
    head = "ExceptionGroup: Hypothesis found 2 distinct failures. (2 sub-exceptions)"
    body = "  | ExceptionGroup: Hypothesis found 2\n    | AssertionError: assert 1.0 == inf\n    | {}: boom\n"
    assert classify(head, body.format("refit_verify.errors.LoadError")) == ("assert", "ExceptionGroup(AssertionError, LoadError)")
    assert classify(head, body.format("KeyError"))[0] == "crash"


def test_crash_only_mutant_is_not_killed(tmp_path, monkeypatch):
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_crash.py").write_text(textwrap.dedent(CRASH))
    (tmp_path / "test_asserts.py").write_text(textwrap.dedent(ASSERTS))
    monkeypatch.chdir(tmp_path)
    crash_only = run_mutant(Mutant("crash_only", "a mutant that only crashes its killer", killers=("test_crash.py",)))
    assert crash_only.n_checks == 2 and not crash_only.error, crash_only
    assert not crash_only.killed, crash_only
    assert crash_only.verdict == "SURVIVED (killer crashed: KeyError, TypeError)"
    real = run_mutant(Mutant("asserting", "a mutant its killers catch", killers=("test_asserts.py",)))
    assert sorted(t.split("::")[-1] for t in real.killed_by) == [
        "test_asserts", "test_expected_raise_missing", "test_refit_error"], real
    assert real.verdict == "KILLED"


def test_killer_lanes():
    assert lane_of("suites/pr/test_loader.py::test_x") == "cpu"
    assert lane_of("suites/nightly/test_triton_exact.py") == "gpu"
    assert lane_of("suites/conformance/test_loader_conformance.py") == "conformance"


def test_a_run_without_junit_or_output_still_has_an_error():
    assert no_junit_error(4, "") == "pytest exit 4, no junit written and no output"
    assert no_junit_error(2, "boom\n").endswith(": boom")


def test_never_failed_counts_assertion_failures_and_lists_unreachable_apart():
    from refit_verify.selftest.run import MutantRun, load_unreachable, never_failed

    a, p = "suites/pr/a.py", "suites/pr/p.py"
    checks = [f"{a}::t1", f"{a}::t2[x]", f"{a}::t3", f"{p}::t4", "suites/conformance/c.py::t"]
    runs = [MutantRun("m1", failed_by_assert=[f"{a}::t1"], crashed={f"{a}::t3": "TypeError: x"})]
    left, listed = never_failed(checks, runs, {p: "runs in a subprocess", f"{a}::t2": "why"})
    assert left == [f"{a}::t3"]  # failed only by a crash: still never failed; conformance is no PR check
    assert listed == {f"{a}::t2[x]": "why", f"{p}::t4": "runs in a subprocess"}
    assert all(reason.strip() for reason in load_unreachable().values())


def _killers_matrix(tmp_path, pr_checks, extra=()):
    from refit_verify.selftest.run import BASELINE, MutantRun, summarize, write

    a, b = "suites/pr/test_a.py", "suites/pr/test_b.py"
    base = MutantRun(BASELINE, checks=[f"{a}::t1"], n_checks=1)
    runs = [MutantRun("m1", killers=[a], killed_by=[f"{a}::t1"], failed_by_assert=[f"{a}::t1"]),
            MutantRun("m2", killers=[b], crashed={f"{b}::t1": "KeyError: k"})]
    matrix = summarize(base, runs, full=False, extra=list(extra), pr_checks=pr_checks)
    write(matrix, tmp_path)
    return matrix


def test_killers_mode_counts_pr_checks_no_declared_killer_fails(tmp_path):
    from refit_verify.selftest.run import summary_line

    ids = ["suites/pr/test_a.py::t1", "suites/pr/test_a.py::t2", "suites/pr/test_b.py::t1",
           "suites/pr/test_b.py::t2[x]", "suites/pr/test_b.py::t3", "suites/pr/test_plugin.py::t"]
    matrix = _killers_matrix(tmp_path, (ids, ""))
    left = ["suites/pr/test_a.py::t2", "suites/pr/test_b.py::t1", "suites/pr/test_b.py::t2[x]", "suites/pr/test_b.py::t3"]
    assert matrix["checks_never_failed"] == left  # a crash (m2 on test_b::t1) fails nothing
    assert list(matrix["checks_unreachable"]) == ["suites/pr/test_plugin.py::t"]  # listed in unreachable.toml
    assert matrix["never_failed_by_file"] == [("suites/pr/test_b.py", 3), ("suites/pr/test_a.py", 1)]
    assert (tmp_path / "never_failed.txt").read_text().splitlines() == left
    line = summary_line(matrix)
    assert "PR checks no mutant fails: 4 (+1 listed unreachable) of 6, an upper bound" in line, line
    assert "first failure" not in line and "--full can only lower it" in line
    md = (tmp_path / "killmatrix.md").read_text()
    assert "| `suites/pr/test_b.py` | 3 |" in md and "- `suites/pr/test_b.py::t2[x]`" in md
    assert "first failure" in summary_line(_killers_matrix(tmp_path, (ids, ""), ["-x"]))


def test_killers_mode_without_collected_checks_counts_nothing(tmp_path):
    from refit_verify.selftest.run import summary_line

    matrix = _killers_matrix(tmp_path, None)
    assert "checks_never_failed" not in matrix and not (tmp_path / "never_failed.txt").exists()
    failed = _killers_matrix(tmp_path, ([], "collecting suites/pr: pytest exit 4: boom"))
    assert "checks_never_failed" not in failed and "no mutant fails" not in summary_line(failed)
    assert "not counted (collecting suites/pr: pytest exit 4: boom)" in (tmp_path / "killmatrix.md").read_text()


def test_collect_pr_checks_lists_node_ids_without_running(tmp_path, monkeypatch):
    from refit_verify.selftest.run import collect_pr_checks

    (tmp_path / "suites" / "pr").mkdir(parents=True)
    (tmp_path / "suites" / "pr" / "test_x.py").write_text(
        "import pytest\n\n@pytest.mark.parametrize('v', [1, 2])\ndef test_p(v):\n    raise SystemExit(3)\n\n"
        "class TestC:\n    def test_m(self):\n        pass\n")
    monkeypatch.chdir(tmp_path)
    ids, error = collect_pr_checks()
    assert not error and ids == ["suites/pr/test_x.py::test_p[1]", "suites/pr/test_x.py::test_p[2]",
                                 "suites/pr/test_x.py::TestC::test_m"]
    (tmp_path / "suites" / "pr" / "test_x.py").write_text("import no_such_module_here\n")
    ids, error = collect_pr_checks()
    assert ids == [] and "pytest exit 2" in error
