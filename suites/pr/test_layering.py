"""Imports go one way: every room of refit_verify imports only rooms on lower floors
(refit_verify.selftest.layering.FLOORS, listed in docs/ARCHITECTURE.md), so no package imports one
that imports it back, directly or through others."""

from pathlib import Path

import refit_verify
from refit_verify.selftest import layering

ROOT = Path(refit_verify.__file__).parent


def _rooms():
    return {layering.room_of(p, ROOT) for p in ROOT.rglob("*.py")}


def test_every_room_is_on_a_floor():
    assert _rooms() <= set(layering.floor_of()), _rooms() - set(layering.floor_of())


def test_imports_go_down_the_floors():
    bad = layering.violations(layering.import_edges(ROOT))
    assert not bad, "\n".join(bad)


def test_upward_import_is_reported(tmp_path):
    pkg = tmp_path / "refit_verify"
    (pkg / "fp8").mkdir(parents=True)
    (pkg / "fp8" / "x.py").write_text("def f():\n    from refit_verify.refit.run import run_refit\n")
    (pkg / "refit").mkdir()
    (pkg / "refit" / "run.py").write_text("from refit_verify.fp8 import quantize\n")
    bad = layering.violations(layering.import_edges(pkg))
    assert bad == ["fp8 (floor 2) imports refit (floor 6) in refit_verify/fp8/x.py"], bad


def test_no_module_reads_another_modules_private_names():
    bad = layering.private_accesses(ROOT)
    assert not bad, "\n".join(bad)


def test_private_access_is_reported(tmp_path):
    pkg = tmp_path / "refit_verify"
    (pkg / "engine").mkdir(parents=True)
    (pkg / "engine" / "x.py").write_text("from refit_verify.refit import run as R\n"
                                          "from refit_verify.refit.loader import _helper\n"
                                          "def f(store):\n    return R._quantizer_name, store._route\n")
    bad = layering.private_accesses(pkg)
    assert bad == ["refit_verify/engine/x.py:2: imports refit_verify.refit.loader._helper",
                   "refit_verify/engine/x.py:4: reads R._quantizer_name"], bad
