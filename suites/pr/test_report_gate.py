"""`gate`: limits from the policy, NaN never passes, regressions vs a baseline, incomplete reports."""

from __future__ import annotations

import copy
import json

import pytest

from refit_verify.cli import main
from refit_verify.report import SCHEMA
from refit_verify.report.gate import gate
from refit_verify.report.policy import load_policy


def report(figures, status="complete", verdict="pass", extra_jobs=()):
    return {
        "schema": SCHEMA, "kind": "run", "status": status, "interrupted": None, "not_run": [],
        "jobs": [{"name": "model_recipe_drift", "verdict": verdict, "reason": "",
                  "figures": [{"metric": m, "value": v, "subject": s} for m, v, s in figures]}, *extra_jobs],
    }


GOOD = [("refit_code_mismatch", 0, "q_proj"), ("sqnr_db", 31.3, "q_proj"), ("calc_diff", 0.0004, "q_proj"),
        ("gen_kl_error", 0.0009, "prompt0"), ("sqnr_db", "inf", "zeros")]


@pytest.fixture(scope="module")
def policy():
    return load_policy()


def test_default_policy_states_a_source_for_every_threshold(policy):
    assert {"refit_code_mismatch", "refit_scale_mismatch", "sqnr_db", "calc_diff", "token_mult_prob_error",
            "gen_kl_error", "logits_cosine", "top1_match"} <= set(policy.rules)
    for rule in policy.rules.values():
        assert rule.source and (rule.max is not None or rule.min is not None)
    assert policy.rules["sqnr_db"].min == 28 and policy.rules["refit_code_mismatch"].max == 0
    assert policy.rules["gen_kl_error"].max == 0.003 and policy.rules["token_mult_prob_error"].max == 1.1


def test_within_policy_passes(policy):
    res = gate(report(GOOD), policy)
    assert res.ok, res.failures
    assert res.checked == len(GOOD)


@pytest.mark.parametrize("bad", [("refit_code_mismatch", 1, "q_proj"), ("sqnr_db", 27.9, "k_proj"),
                                 ("calc_diff", 0.0011, "v_proj"), ("token_mult_prob_error", 1.2, "median"),
                                 ("logits_cosine", 0.9990, "p1")])
def test_over_policy_fails_naming_metric_and_subject(policy, bad):
    res = gate(report(GOOD + [bad]), policy)
    assert not res.ok
    assert bad[0] in res.failures[0] and bad[2] in res.failures[0]


@pytest.mark.parametrize("value", [float("nan"), "nan", "garbage"])
def test_nan_figure_never_passes(policy, value):
    assert not gate(report([("sqnr_db", value, "q_proj")]), policy).ok
    assert not gate(report([("refit_code_mismatch", value, "q_proj")]), policy).ok


def test_regression_against_baseline(policy):
    base = report(GOOD)
    worse = report([("sqnr_db", 30.0, "q_proj") if f[0] == "sqnr_db" and f[2] == "q_proj" else f for f in GOOD])
    res = gate(worse, policy, base)  # 31.3 -> 30.0 dB: inside the limit but 1.3 dB worse (> 0.5 allowed)
    assert not res.ok and "regressed" in res.failures[0]
    assert gate(report(GOOD), policy, base).ok
    slight = report([("sqnr_db", 31.0, "q_proj") if f[0] == "sqnr_db" and f[2] == "q_proj" else f for f in GOOD])
    assert gate(slight, policy, base).ok  # within the 0.5 dB tolerance


def test_lost_coverage_is_a_regression(policy):
    base = report(GOOD, extra_jobs=[{"name": "refit_pipeline", "verdict": "pass", "figures": []}])
    now = report(GOOD, extra_jobs=[{"name": "refit_pipeline", "verdict": "skipped", "reason": "needs cuda", "figures": []}])
    assert not gate(now, policy, base).ok
    assert not gate(report(GOOD), policy, base).ok  # the job vanished


def test_incomplete_or_failed_report_fails(policy):
    assert not gate(report(GOOD, status="incomplete"), policy).ok
    assert not gate(report(GOOD, verdict="error"), policy).ok


def test_policy_typo_is_rejected(tmp_path):
    p = tmp_path / "p.toml"
    p.write_text('[metrics.sqnr_db]\nminn = 28\nsource = "x"\n')
    from refit_verify.errors import BadInputError

    with pytest.raises(BadInputError, match="unknown key"):
        load_policy(p)


def test_gate_cli_exit_codes(tmp_path, capsys):
    good, bad = tmp_path / "good.json", tmp_path / "bad"
    good.write_text(json.dumps(report(GOOD)))
    bad.mkdir()
    (bad / "report.json").write_text(json.dumps(report(GOOD + [("sqnr_db", 12.0, "o_proj")])))
    assert main(["gate", str(good)]) == 0
    assert main(["gate", str(bad)]) == 1
    assert "o_proj" in capsys.readouterr().out
    assert main(["gate", str(good), "--baseline", str(bad)]) == 0
    custom = tmp_path / "policy.json"
    custom.write_text(json.dumps({"metrics": {"sqnr_db": {"min": 40, "source": "stricter"}}}))
    assert main(["gate", str(good), "--policy", str(custom)]) == 1
    (tmp_path / "x.json").write_text("{not json")
    assert main(["gate", str(tmp_path / "x.json")]) == 2
    other = copy.deepcopy(report(GOOD))
    other["schema"] = "something/else"
    (tmp_path / "o.json").write_text(json.dumps(other))
    assert main(["gate", str(tmp_path / "o.json")]) == 2


def _without(key):
    r = report(GOOD)
    del r["jobs"][0][key]
    return r


@pytest.mark.parametrize("bad,key", [
    ({k: v for k, v in report(GOOD).items() if k != "jobs"}, "'jobs'"),
    ({**report(GOOD), "jobs": []}, "'jobs'"),
    ({**report(GOOD), "jobs": {"a": 1}}, "'jobs'"),
    (report(GOOD, verdict="weird"), "'verdict'"),
    (report(GOOD, verdict="PASS"), "'verdict'"),
    (_without("verdict"), "'verdict'"),
    (_without("name"), "'name'"),
    ({**report(GOOD), "jobs": [{"name": "j", "verdict": "pass", "figures": [{"metric": "sqnr_db"}]}]}, "'value'"),
    ({**report(GOOD), "jobs": [{"name": "j", "verdict": "pass", "figures": None}]}, "'figures'"),
    ([report(GOOD)], "report"),
])
def test_malformed_report_fails_closed_exit_2(tmp_path, capsys, bad, key):
    p = tmp_path / "r.json"
    p.write_text(json.dumps(bad))
    assert main(["gate", str(p)]) == 2
    assert key in capsys.readouterr().err


def test_baseline_without_verdicts_is_bad_input(tmp_path, capsys):
    good, base = tmp_path / "good.json", tmp_path / "base.json"
    good.write_text(json.dumps(report(GOOD)))
    b = report(GOOD)
    del b["jobs"][0]["verdict"]
    base.write_text(json.dumps(b))
    assert main(["gate", str(good), "--baseline", str(base)]) == 2
    assert "baseline" in capsys.readouterr().err


@pytest.mark.parametrize("bad,key", [
    ({**report(GOOD), "extra": 1}, "'extra'"),
    ({**report(GOOD), "status": "done"}, "'status'"),
    ({**report(GOOD), "jobs": [{"name": "j", "verdict": "pass", "figures": [], "verdicts": "pass"}]}, "'verdicts'"),
    ({**report(GOOD), "jobs": [{"name": "j", "verdict": "pass", "figures": [{"metric": "sqnr_db", "value": [1]}]}]},
     "'value'"),
    ({**report(GOOD), "jobs": [{"name": "j", "verdict": "pass", "failures": "none"}]}, "'failures'"),
    ({**report(GOOD), "jobs": [{"name": "j", "verdict": "pass"}, {"name": "j", "verdict": "fail"}]}, "['j']"),
])
def test_report_schema_unknown_keys_and_wrong_types_exit_2(tmp_path, capsys, bad, key):
    p = tmp_path / "r.json"
    p.write_text(json.dumps(bad))
    assert main(["gate", str(p)]) == 2
    assert key in capsys.readouterr().err


@pytest.mark.parametrize("text,key", [
    ("", "'metrics'"),
    ('[gatee]\nrequire_complete = true\n[metrics.sqnr_db]\nmin = 28\n', "'gatee'"),
    ('[metric.sqnr_db]\nmin = 28\n', "'metric'"),
    ('[gate]\nfail_on_verdicts = "fail"\n[metrics.sqnr_db]\nmin = 28\n', "gate.fail_on_verdicts"),
    ('[gate]\nfail_on_verdicts = ["fial"]\n[metrics.sqnr_db]\nmin = 28\n', "'fial'"),
    ('[gate]\nrequire_complete = "no"\n[metrics.sqnr_db]\nmin = 28\n', "gate.require_complete"),
    ('[gate]\nstrict = true\n[metrics.sqnr_db]\nmin = 28\n', "gate.strict"),
    ('[metrics.sqnr_db]\nmin = "28"\n', "metrics.sqnr_db.min"),
    ('[metrics.sqnr_db]\nmin = inf\n', "metrics.sqnr_db.min"),
    ('[metrics.calc_diff]\nmax = nan\n', "metrics.calc_diff.max"),
    ('[metrics.sqnr_db]\nmin = 30\nmax = 20\n', "metrics.sqnr_db"),
    ('[metrics.calc_diff]\nmax = -0.001\n', "metrics.calc_diff.max"),
    ('[metrics.calc_diff]\nmax = 0.001\nregress_abs = -1\n', "metrics.calc_diff.regress_abs"),
    ('[metrics.calc_diff]\nsource = "x"\n', "gates nothing"),
    ('metrics = 5\n', "'metrics'"),
])
def test_malformed_policy_fails_closed_exit_2(tmp_path, capsys, text, key):
    pol = tmp_path / "p.toml"
    pol.write_text(text)
    good = tmp_path / "good.json"
    good.write_text(json.dumps(report(GOOD)))
    assert main(["gate", str(good), "--policy", str(pol)]) == 2
    err = capsys.readouterr().err
    assert key in err and str(pol) in err and "Traceback" not in err


# --- fuzz: malformed reports and policies never give a traceback or exit 0 -----------------------------
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=False), st.text(max_size=5))
JSON = st.recursive(JSON_LEAF, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids,
                                                                                          max_size=3), max_leaves=8)
FUZZ = settings(max_examples=30, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


def _corrupt(data, path_choice: int, value):
    """Replace one node of a valid report/policy (picked by index) with `value`."""
    nodes = []

    def walk(node, parent, key):
        nodes.append((parent, key))
        children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for k, v in children:
            walk(v, node, k)
    walk(data, None, None)
    parent, key = nodes[path_choice % len(nodes)]
    if parent is None:
        return value
    parent[key] = value
    return data


def _gate_rc(tmp, rep, pol=..., ) -> int:
    r = tmp / "r.json"
    r.write_text(json.dumps(rep))
    args = ["gate", str(r)]
    if pol is not ...:
        (tmp / "p.json").write_text(json.dumps(pol))
        args += ["--policy", str(tmp / "p.json")]
    return main(args)  # any exception other than a clean exit code fails the test with its traceback


@FUZZ
@given(st.integers(0, 200), JSON)
def test_fuzz_corrupted_report_exits_2_or_fails(tmp_path_factory, choice, value):
    tmp = tmp_path_factory.mktemp("fuzz")
    rep = _corrupt(copy.deepcopy(report(GOOD)), choice, value)
    ok = copy.deepcopy(report(GOOD))
    rc = _gate_rc(tmp, rep)
    if rep != ok:  # the corruption changed something: never a pass unless it is still a valid report
        from refit_verify.report.gate import validate_report

        try:
            validate_report(rep)
            valid = rep.get("schema") == SCHEMA
        except Exception:  # noqa: BLE001
            valid = False
        assert rc in ((0, 1) if valid else (2,)), (rep, rc)


@FUZZ
@given(st.integers(0, 200), JSON)
def test_fuzz_corrupted_policy_exits_2_or_is_valid(tmp_path_factory, choice, value):
    import tomllib

    from refit_verify.report.policy import default_policy_path, validate_policy

    tmp = tmp_path_factory.mktemp("fuzz")
    pol = _corrupt(tomllib.loads(default_policy_path().read_text()), choice, value)
    try:
        validate_policy(pol, "fuzz")
        valid = True
    except Exception as exc:  # noqa: BLE001
        assert type(exc).__name__ == "BadInputError", repr(exc)
        valid = False
    bad = copy.deepcopy(report(GOOD + [("refit_code_mismatch", 1, "x")]))
    rc = _gate_rc(tmp, bad, pol)
    assert rc == (1 if valid else 2), (pol, rc)
