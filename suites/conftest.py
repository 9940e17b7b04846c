"""Shared suite wiring: `--refit-mutant NAME` swaps a reference piece for a known-wrong variant.

The self-test runs every suite under every mutant; a check that stays green under all of them
proves nothing and shows up in the kill matrix.
"""

from __future__ import annotations

import importlib
import pkgutil

_ACTIVE = []


def pytest_addoption(parser):
    parser.addoption("--refit-mutant", default=None, help="apply this self-test mutant to the reference")


def _import_all_refit_modules():
    import refit_verify

    for info in pkgutil.walk_packages(refit_verify.__path__, "refit_verify."):
        # __main__ modules run their CLI on import (refit_verify.bench.__main__ exits)
        if info.name.startswith(("refit_verify.engine", "refit_verify.cli")) or info.name.endswith("__main__"):
            continue
        try:
            importlib.import_module(info.name)
        except ImportError:  # optional deps (triton, vllm) stay unimported
            pass


def pytest_configure(config):
    # the installed plugin stays inert in other projects; our suites opt in to profiles and repro lines
    from refit_verify import pytest_plugin

    pytest_plugin.load_hypothesis_profile()
    config.stash[pytest_plugin.REPRO_ALL] = True
    name = config.getoption("--refit-mutant")
    if not name:
        return
    _import_all_refit_modules()
    from refit_verify.selftest.catalog import get_mutant

    ctx = get_mutant(name).applied()
    ctx.__enter__()
    _ACTIVE.append(ctx)


def pytest_unconfigure(config):
    while _ACTIVE:
        _ACTIVE.pop().__exit__(None, None, None)


def pytest_report_header(config):
    name = config.getoption("--refit-mutant")
    return f"refit-verify mutant: {name}" if name else None
