"""The one refit driver over the Engine protocol: the reference adapter, and per-rank comparison of states."""

import torch

from refit_verify.layout import Layout, Rank
from refit_verify.model.config import load_config
from refit_verify.refit.engine import Engine, EngineState
from refit_verify.refit.reference_engine import ReferenceEngine
from refit_verify.refit import run as R
from refit_verify.refit.run import run_refit


def test_reference_engine_is_an_engine():
    r = run_refit("tiny-llama", layers=1, seed=3)
    st = r.states["before"]
    assert isinstance(st, EngineState) and list(st.ranks) == [Rank()]
    assert set(st.params()) == set(r.stores["before"].parameters())
    assert r.bitwise_equal
    assert isinstance(ReferenceEngine(load_config("tiny-llama", layers=1)), Engine)


def _two_rank_state(bump: bool) -> EngineState:
    w = torch.arange(12, dtype=torch.float32).reshape(3, 4).to(torch.bfloat16)
    ranks = {Rank(tp=0): {"x.weight": w.clone()}, Rank(tp=1): {"x.weight": w.clone()}}
    if bump:
        ranks[Rank(tp=1)]["x.weight"][1, 2] += 1
    return EngineState(Layout(tp=2), ranks)


def test_compare_states_names_the_rank_that_differs():
    same = R.compare_states(_two_rank_state(False), _two_rank_state(False))
    assert [c.equal for c in same] == [True, True]
    diff = R.compare_states(_two_rank_state(False), _two_rank_state(True))
    bad = [c for c in diff if not c.equal]
    assert [(c.tensor, c.rank, c.n_code_mismatch) for c in bad] == [("x.weight", "tp1.ep0.pp0", 1)]


def test_compare_states_missing_parameter_is_a_mismatch():
    a = EngineState(ranks={Rank(): {"x.weight": torch.zeros(2, 2)}})
    b = EngineState(ranks={Rank(): {}})
    (c,) = R.compare_states(a, b)
    assert not c.equal and c.kind == "missing"
