"""pytest plugin: hypothesis profiles, options that point the suites at a user's implementation,
metrics collection into a refit-verify report, and a repro command for tests that use its fixtures.

Installed through the pytest11 entry point it is loaded by every pytest run of the environment, so
it does nothing to a project that does not use it: hypothesis profiles are registered but loaded
only by our own suites (suites/conftest.py) or when a --refit-* option is given, and the reproduce
section is added only to tests that request a refit-verify fixture."""

from __future__ import annotations

import os
import shlex

import pytest


def register_hypothesis_profiles() -> bool:
    """Register ci/dev/nightly; False when hypothesis is absent (it is a test extra)."""
    try:
        from hypothesis import HealthCheck, settings
    except ImportError:
        return False
    common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    settings.register_profile("ci", derandomize=True, max_examples=20, print_blob=True, **common)
    settings.register_profile("dev", max_examples=100, print_blob=True, **common)
    settings.register_profile("nightly", max_examples=1000, print_blob=True, **common)
    return True


def load_hypothesis_profile() -> None:
    """Load HYPOTHESIS_PROFILE (default ci under CI, else dev); for suites that opted in."""
    if register_hypothesis_profiles():
        from hypothesis import settings

        settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


# fixtures that make a test "ours": only such tests get the reproduce section
REFIT_FIXTURES = frozenset({"refit_seed", "refit_recipe", "refit_quantizer", "refit_exporter", "refit_isolated_quantizer",
                            "refit_record"})
# set by a conftest (ours: suites/conftest.py) whose every test should print a reproduce command
REPRO_ALL = pytest.StashKey[bool]()

# options that change what a test does, so they belong in its repro command
_REPRO_OPTIONS = ("--refit-quantizer", "--refit-quantizer-kwargs", "--refit-against", "--refit-seed",
                  "--refit-exporter")


def pytest_addoption(parser):
    group = parser.getgroup("refit-verify")
    group.addoption("--refit-quantizer", default=None,
                    help="MODULE:ATTR (or path/to/file.py:ATTR) of a quantizer f(w) -> (fp8, scale_inv) to test")
    group.addoption("--refit-quantizer-kwargs", default=None, help="JSON kwargs passed to the quantizer")
    group.addoption("--refit-against", default="vllm_per_block", help="recipe the quantizer must match")
    group.addoption("--refit-seed", default=0, type=int, help="base seed of every random input")
    group.addoption("--refit-exporter", default=None, help="MODULE:ATTR of a trainer exporter (pipeline suites)")
    group.addoption("--refit-report", default=None, metavar="DIR",
                    help="write report.json/md/html with the metrics recorded through `refit_record`")


def hypothesis_profile() -> str:
    try:
        from hypothesis import settings

        return settings.get_current_profile_name()
    except (ImportError, AttributeError):
        return os.environ.get("HYPOTHESIS_PROFILE", "")


def runnable_nodeid(config, nodeid: str, path=None) -> str:
    """nodeid as a path that works from the invocation directory: relative when the test file lies
    under it, else absolute (tests collected with --pyargs from an installed package)."""
    from pathlib import Path

    file, sep, rest = nodeid.partition("::")
    path = Path(path if path is not None else Path(config.rootpath, file)).resolve()
    here = Path(config.invocation_params.dir).resolve()
    try:
        shown = str(path.relative_to(here))
    except ValueError:
        shown = str(path)
    return shown + sep + rest


def repro_command(config, nodeid: str, path=None) -> str:
    parts = ["python", "-m", "pytest", runnable_nodeid(config, nodeid, path), "-p", "no:randomly"]
    for opt in _REPRO_OPTIONS:
        value = config.getoption(opt.lstrip("-").replace("-", "_"), default=None)
        if value is not None and (opt != "--refit-against" or value != "vllm_per_block"):
            parts += [opt, str(value)]
    if "--refit-seed" not in parts:
        parts += ["--refit-seed", str(config.getoption("refit_seed"))]
    profile = hypothesis_profile()
    return (f"HYPOTHESIS_PROFILE={profile} " if profile else "") + shlex.join(parts)


@pytest.fixture(scope="session")
def refit_seed(request) -> int:
    return request.config.getoption("refit_seed")


@pytest.fixture(scope="session")
def refit_recipe(request) -> str:
    from refit_verify.fp8 import get_recipe

    return get_recipe(request.config.getoption("refit_against")).name


@pytest.fixture(scope="session")
def refit_quantizer(request, refit_recipe):
    """The user's quantizer (--refit-quantizer), else the reference for --refit-against.

    Always f(w) -> (fp8 data, scale_inv)."""
    loaded = request.config.stash.get(_USER_HOOKS, {}).get("refit_quantizer")
    if loaded is not None:
        return loaded
    from refit_verify.fp8 import quantize

    def reference(w):
        q = quantize(w, refit_recipe)
        return q.data, q.scale_inv

    reference.__name__ = f"reference[{refit_recipe}]"
    return reference


@pytest.fixture(scope="session")
def refit_exporter(request):
    return _pipeline_hook(request, "refit_exporter")


def _pipeline_hook(request, opt):
    return request.config.stash.get(_USER_HOOKS, {}).get(opt)


# the user's callables, loaded once at configure time: a bad spec is one usage error for the session
# (exit 4), not a setup error with a traceback in every test that requests the fixture
_USER_HOOKS = pytest.StashKey[dict]()


def _load_user_hooks(config) -> None:
    from refit_verify.usercode import UserCodeError, load_callable
    from refit_verify.userworker import IsolatedQuantizer

    hooks = {}
    config.stash[_USER_HOOKS] = hooks
    try:
        for opt in ("refit_quantizer", "refit_exporter"):
            spec = config.getoption(opt, default=None)
            if not spec:
                continue
            kwargs = config.getoption("refit_quantizer_kwargs") if opt == "refit_quantizer" else None
            if opt == "refit_quantizer":
                # loaded first in a child: os._exit or a crash at import must not end pytest with exit 0;
                # refit_verify.testing then calls the quantizer there, one case at a time
                hooks["isolated_quantizer"] = iso = IsolatedQuantizer(spec, kwargs)
                iso.start()
            fn = load_callable(spec, kwargs)
            hooks[opt] = fn if opt == "refit_quantizer" else fn.__wrapped__
    except UserCodeError as exc:
        raise pytest.UsageError(f"--{opt.replace('_', '-')}: {exc}") from None


def isolated_quantizer(config):
    """The child process running --refit-quantizer (None without one): `run` for check.check_case."""
    return config.stash.get(_USER_HOOKS, {}).get("isolated_quantizer")


@pytest.fixture(scope="session")
def refit_isolated_quantizer(request):
    """--refit-quantizer running in a child process (None without one), as `run` for check.check_case."""
    return isolated_quantizer(request.config)


def pytest_unconfigure(config):
    iso = isolated_quantizer(config)
    if iso is not None:
        iso.close()


class _Collector:
    """Per-test metrics recorded via `refit_record`, turned into one report at session end."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir
        self.tests: dict[str, dict] = {}

    def entry(self, nodeid: str) -> dict:
        return self.tests.setdefault(nodeid, {"metrics": {}, "figures": [], "outcome": "not run", "reason": ""})


_KEY = pytest.StashKey[_Collector]() if hasattr(pytest, "StashKey") else None


def _refit_option_given(config) -> bool:
    return any(str(a).startswith("--refit-") for a in config.invocation_params.args)


def pytest_configure(config):
    if _refit_option_given(config):
        register_hypothesis_profiles()
        load_hypothesis_profile()
        _load_user_hooks(config)
    out = config.getoption("refit_report", default=None)
    if out and _KEY is not None and not hasattr(config, "workerinput"):  # xdist: the controller writes
        config.stash[_KEY] = _Collector(out)


@pytest.fixture
def refit_record(request):
    """record(metric, value, subject="") -> also gated by `refit-verify gate` when the metric is in the policy.

    Works with or without --refit-report; under xdist the values travel to the controller via user_properties.
    """

    def record(metric: str, value, subject: str = "") -> None:
        request.node.user_properties.append(("refit_figure", (metric, float(value), subject)))

    return record


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    ours = item.config.stash.get(REPRO_ALL, False) or REFIT_FIXTURES & set(getattr(item, "fixturenames", ()))
    if rep.failed and ours:
        rep.sections.append(("refit-verify: reproduce", repro_command(item.config, item.nodeid, item.path)))


def pytest_runtest_logreport(report):
    collector = _collector_from(report)
    if collector is None:
        return
    e = collector.entry(report.nodeid)
    for key, value in getattr(report, "user_properties", []):
        if key == "refit_figure" and tuple(value) not in {tuple(f) for f in e["figures"]}:
            e["figures"].append(tuple(value))
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        e["outcome"] = report.outcome
        if report.outcome != "passed":
            e["reason"] = _short(report)
    elif report.when == "teardown" and report.failed:
        e["outcome"] = "failed"
        e["reason"] = _short(report)


_SESSION_CONFIG = []


def _collector_from(report):
    if not _SESSION_CONFIG or _KEY is None:
        return None
    return _SESSION_CONFIG[0].stash.get(_KEY, None)


def pytest_sessionstart(session):
    _SESSION_CONFIG[:] = [session.config]


def _short(report) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2])
    text = getattr(report, "longreprtext", "") or ""
    e_lines = [ln[1:].strip() for ln in text.splitlines() if ln.startswith("E ")]
    if e_lines:
        return " ".join(e_lines[:3])[:300]
    lines = text.strip().splitlines()
    return lines[-1][:300] if lines else ""


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    failed = [r for r in terminalreporter.stats.get("failed", [])
              if any(title == "refit-verify: reproduce" for title, _ in getattr(r, "sections", []))]
    if failed:
        terminalreporter.section("refit-verify: reproduce failing tests")
        for rep in failed:
            terminalreporter.write_line(next(text for title, text in rep.sections if title == "refit-verify: reproduce"))
    collector = config.stash.get(_KEY, None) if _KEY is not None else None
    if collector is not None:
        path = _write_report(config, collector, exitstatus)
        terminalreporter.write_line(f"refit-verify report: {path}")


def _write_report(config, collector: _Collector, exitstatus) -> str:
    import sys

    from refit_verify.results import JobResult
    from refit_verify.report import env
    from refit_verify.report.document import Report, ReportWriter, now_iso

    by_file: dict[str, JobResult] = {}
    for nodeid, e in sorted(collector.tests.items()):
        fname = nodeid.split("::", 1)[0]
        job = by_file.setdefault(fname, JobResult(f"pytest:{fname}", repro=f"python -m pytest {fname}"))
        job.tables.setdefault("tests", []).append(
            {"test": nodeid, "outcome": e["outcome"], "reason": e["reason"],
             **{f"{m}[{s}]" if s else m: v for m, v, s in e["figures"]}})
        for m, v, s in e["figures"]:
            job.figure(m, v, f"{nodeid}{'/' + s if s else ''}")
        if e["outcome"] == "failed":
            job.fail(nodeid, e["reason"], repro_command(config, nodeid))
    for job in by_file.values():
        outcomes = [r["outcome"] for r in job.tables["tests"]]
        if job.verdict == "pass" and outcomes and all(o == "skipped" for o in outcomes):
            job.verdict, job.reason = "skipped", "every test skipped"
        job.metrics = {k: outcomes.count(k) for k in ("passed", "failed", "skipped") if outcomes.count(k)}
    interrupted = exitstatus in (2, pytest.ExitCode.INTERRUPTED)
    rep = Report("pytest", now_iso(), "python -m pytest " + shlex.join(sys.argv[1:]) if sys.argv else "pytest",
                 options={k.lstrip("-"): config.getoption(k.lstrip("-").replace("-", "_"), default=None) for k in _REPRO_OPTIONS},
                 seeds={"base": config.getoption("refit_seed"), "hypothesis_profile": hypothesis_profile()},
                 environment=env.collect("cpu"), jobs=list(by_file.values()),
                 planned_jobs=list(by_file))
    w = ReportWriter(collector.out_dir, rep)
    w.finish("incomplete" if interrupted else "complete", f"pytest exit status {int(exitstatus)}" if interrupted else None)
    return os.path.join(collector.out_dir, "report.html")
