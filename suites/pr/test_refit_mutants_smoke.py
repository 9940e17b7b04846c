"""Each refit mutant is killed: under it, at least one of its scenarios' checks fails.

The full kill matrix runs the whole PR suite per mutant: `pytest suites/pr --refit-mutant NAME`.
"""

import pytest

from refit_verify.refit.scenarios import SCENARIOS
from refit_verify.selftest.mutants_refit import KILLED_BY, MUTANTS


def test_every_mutant_has_a_killer():
    assert {m.name for m in MUTANTS} == set(KILLED_BY)
    assert all(m.area in ("exporter", "transport", "loader") for m in MUTANTS)


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_mutant_is_killed(mutant):
    failures = []
    with mutant.applied():
        for name in KILLED_BY[mutant.name]:
            try:
                SCENARIOS[name]()
            except AssertionError as exc:
                failures.append(f"{name}: {exc}")
    assert failures, f"{mutant.name} survived scenarios {KILLED_BY[mutant.name]}"
