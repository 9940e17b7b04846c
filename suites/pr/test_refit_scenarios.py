"""Every refit scenario passes on the reference (each ends in checks from refit_verify.refit.checks)."""

import pytest

from refit_verify.refit.scenarios import SCENARIOS


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario_passes_on_reference(name):
    SCENARIOS[name]()
