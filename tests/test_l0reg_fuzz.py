"""Seeded fuzz of l0reg.solve on random small problems (``l0reg.testing``): every promise on
every problem, and the enumerated optimum where C(p, k) is small.

The full run (5,000 problems, with a table) is ``benchmarks/fuzz_l0reg.py``.
"""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from l0reg._exhaustive import affordable
from l0reg.testing import check_solve, fuzz_problem

N_PROBLEMS = 200
REQUIRED_OPTIMUM_RATE = 0.995


@pytest.fixture(scope="module")
def outcomes():
    return [(fuzz_problem(seed), check_solve(fuzz_problem(seed))) for seed in range(N_PROBLEMS)]


def test_every_promise_holds(outcomes):
    broken = [f"{o['problem']}: {o['violations']}" for _, o in outcomes if o["violations"]]
    assert not broken, f"{len(broken)} of {len(outcomes)} problems break a promise: " + "; ".join(broken[:5])


def test_global_optimum_where_enumerable(outcomes):
    # λ = 0 in float32 is left out of the rate: there the float64 optimum may use directions the
    # float32 data cannot resolve, with coefficients float32 cannot hold (see _backsolve).
    judged = [o for _, o in outcomes if o["gap"] is not None and (o["lam"] > 0 or o["dtype"] == "float64")]
    misses = [f"{o['problem']}: gap {o['gap']:.3g}" for o in judged if not o["at_optimum"]]
    assert len(judged) >= N_PROBLEMS // 2
    assert 1 - len(misses) / len(judged) >= REQUIRED_OPTIMUM_RATE, "; ".join(misses[:5])
    assert not [m for m, o in zip(misses, judged) if o["lam"] > 0], misses


def test_certified_exactly_where_enumeration_runs(outcomes):
    for problem, o in outcomes:
        n, p = problem.A.shape
        assert o["certified"] == affordable(n, p, problem.k), o["problem"]
        if o["certified"] and o["lam"] > 0:
            assert o["at_optimum"], o["problem"]


@settings(max_examples=40, deadline=None)
@given(st.integers(N_PROBLEMS, 2**32 - 1))
def test_promises_on_more_seeds(seed):
    outcome = check_solve(fuzz_problem(seed))
    assert not outcome["violations"], outcome["problem"]
    if outcome["gap"] is not None and outcome["lam"] > 0:
        assert outcome["at_optimum"], (outcome["problem"], outcome["gap"])


@pytest.mark.parametrize("seed", range(10))
def test_search_alone_keeps_the_promises(seed):
    problem = fuzz_problem(seed)
    assert not check_solve(problem, exhaustive=False)["violations"], problem.describe()
