"""Lower bounds (``SolveResult.lower_bound``, ``_relaxation``) and branch and bound (``l0reg.certify``)
checked against enumeration."""
import itertools
import pathlib
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import l0reg
from l0reg._relaxation import Relaxation, initial_working_set, with_lower_bound


def random_problem(seed, n, p, design, with_centre):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, p))
    if design == "toeplitz":  # AR(1) columns, correlation 0.9^|i−j|
        for j in range(1, p):
            A[:, j] = 0.9 * A[:, j - 1] + np.sqrt(1 - 0.81) * A[:, j]
    elif design == "duplicated":
        A[:, -1] = A[:, 0]
    w_true = np.zeros(p)
    w_true[rng.choice(p, size=min(p, 3), replace=False)] = rng.uniform(1, 3, size=min(p, 3))
    b = A @ w_true + rng.standard_normal(n)
    w_bar = rng.standard_normal(p) if with_centre else None
    return A, b, w_bar


def node_optimum(A, b, k, lam, w_bar, ones, zeros):
    """min F over the supports S with ones ⊆ S, S ∩ zeros = ∅, |S| ≤ k, by enumeration."""
    free = [j for j in range(A.shape[1]) if j not in ones and j not in zeros]
    size = min(k - len(ones), len(free))
    return min(l0reg.solve_on_support(A, b, np.array(sorted(ones) + list(extra), dtype=np.int64), lam, w_bar)[1]
               for extra in itertools.combinations(free, size))


problems = st.fixed_dictionaries({
    "seed": st.integers(0, 2**31), "n": st.integers(2, 14), "p": st.integers(2, 9),
    "design": st.sampled_from(["gaussian", "toeplitz", "duplicated"]), "with_centre": st.booleans(),
    "lam": st.floats(1e-4, 10.0), "k_fraction": st.floats(0.0, 1.0), "fixings": st.integers(0, 2**31)})


@settings(max_examples=300, deadline=None, derandomize=True)
@given(problems)
def test_bound_never_exceeds_the_enumerated_optimum(case):
    """At the root (solve's bound and the full relaxation) and at random nodes (fixed ones and zeros)."""
    A, b, w_bar = random_problem(case["seed"], case["n"], case["p"], case["design"], case["with_centre"])
    n, p = A.shape
    k = 1 + int(case["k_fraction"] * (p - 1))
    lam = case["lam"]
    _, optimum = l0reg.brute_force(A, b, k, lam, w_bar)
    slack = 1e-9 * abs(optimum) + 1e-12
    result = l0reg.solve(A, b, k, lam=lam, w_bar=w_bar, bound=True)
    assert result.lower_bound <= optimum + slack
    assert 0 <= result.gap <= 1 + 1e-12
    relaxation = Relaxation(A, b, lam, np.zeros(p) if w_bar is None else w_bar)
    none = np.zeros(p, dtype=bool)
    working = initial_working_set(relaxation, k, np.empty(0, dtype=np.int64))
    assert relaxation.node(k, none, none, working, np.zeros(working.size)).bound <= optimum + slack
    rng = np.random.default_rng(case["fixings"])
    order = rng.permutation(p)
    n_ones = int(rng.integers(0, k + 1))
    n_zeros = int(rng.integers(0, p - k + 1))
    ones, zeros = none.copy(), none.copy()
    ones[order[:n_ones]] = True
    zeros[order[n_ones:n_ones + n_zeros]] = True
    bound = relaxation.node(k, ones, zeros, working, np.zeros(working.size)).bound
    exact = node_optimum(A, b, k, lam, w_bar, set(order[:n_ones].tolist()),
                         set(order[n_ones:n_ones + n_zeros].tolist()))
    assert bound <= exact + 1e-9 * abs(exact) + 1e-12


@pytest.mark.parametrize("seed", range(24))
def test_branch_and_bound_finds_the_enumerated_optimum(seed):
    design = ["gaussian", "toeplitz", "duplicated"][seed % 3]
    rng = np.random.default_rng(seed)
    n, p = int(rng.integers(8, 30)), int(rng.integers(6, 14))
    k = int(rng.integers(1, p))
    lam = float(10 ** rng.uniform(-3, 0))
    A, b, w_bar = random_problem(seed, n, p, design, seed % 2 == 1)
    w, optimum = l0reg.brute_force(A, b, k, lam, w_bar)
    result = l0reg.certify(A, b, k, lam=lam, w_bar=w_bar, gap_tol=0.0)
    assert result.status == "optimal"
    assert result.objective == pytest.approx(optimum, rel=1e-9, abs=1e-12)
    assert result.lower_bound <= optimum + 1e-9 * abs(optimum)
    assert result.gap <= 1e-7  # the bound's allowance for float rounding
    assert result.support.size <= k
    assert result.objective == pytest.approx(l0reg.objective(A, b, result.coef, lam, w_bar), rel=1e-9)


def correlated_problem(n=120, p=80, seed=3):
    A, b, _ = random_problem(seed, n, p, "toeplitz", False)
    return A, b


def test_gap_is_monotone_and_reported_to_the_callback():
    A, b = correlated_problem()
    seen = []
    result = l0reg.certify(A, b, 6, lam=0.02, gap_tol=0.0, callback=seen.append, time_limit=30)
    assert seen == result.history and len(seen) > 3  # the search branched
    gaps = [step.gap for step in seen]
    assert all(later <= earlier for earlier, later in zip(gaps, gaps[1:]))
    assert all(later.lower_bound >= earlier.lower_bound for earlier, later in zip(seen, seen[1:]))
    assert all(later.objective <= earlier.objective for earlier, later in zip(seen, seen[1:]))
    assert [step.nodes for step in seen] == sorted(step.nodes for step in seen)
    assert result.gap == pytest.approx(gaps[-1])


def test_limits_are_honoured():
    A, b = correlated_problem()
    by_nodes = l0reg.certify(A, b, 6, lam=0.02, gap_tol=0.0, node_limit=3)
    assert by_nodes.status == "node_limit" and by_nodes.nodes <= 3
    by_time = l0reg.certify(A, b, 6, lam=0.02, gap_tol=0.0, time_limit=1e-6)
    assert by_time.status == "time_limit" and by_time.nodes == 1
    for result in (by_nodes, by_time):
        assert result.gap > 0
        assert result.lower_bound <= result.objective
        assert result.objective == pytest.approx(l0reg.objective(A, b, result.coef, 0.02), rel=1e-9)


def test_edge_budgets():
    A, b, _ = random_problem(5, 20, 6, "gaussian", False)
    zero = l0reg.certify(A, b, 0, lam=0.1)
    assert zero.status == "optimal" and not zero.coef.any() and zero.gap == 0
    full = l0reg.certify(A, b, 6, lam=0.1, gap_tol=0.0)
    assert full.status == "optimal" and full.objective == pytest.approx(l0reg.brute_force(A, b, 6, 0.1)[1])


def test_solve_reports_the_enumerated_optimum_as_its_bound():
    A, b, _ = random_problem(6, 20, 8, "gaussian", False)
    result = l0reg.solve(A, b, 3)
    assert result.certified_optimal and result.lower_bound == result.objective and result.gap == 0
    assert np.isnan(l0reg.solve(A, b, 3, lam=0.0, exhaustive=False, bound=True).lower_bound)


def test_solve_bound_is_for_the_budget_not_the_support_size():
    """A result holding fewer than k nonzeros is still bounded over every support of size k."""
    A, b, _ = random_problem(8, 15, 8, "gaussian", False)
    optimum = l0reg.brute_force(A, b, 5, 0.05)[1]
    poor = l0reg.solve(A, b, 2, lam=0.05, exhaustive=False)  # two nonzeros: a budget-2 bound is above the optimum
    bounded = with_lower_bound(poor, A, b, 5, 0.05, np.zeros(8), requested=True)
    assert bounded.lower_bound <= optimum + 1e-9 * optimum


@pytest.mark.parametrize("kwargs, name", [
    ({"lam": 0.0}, "lam"), ({"lam": -1.0}, "lam"), ({"lam": 0.1, "time_limit": 0}, "time_limit"),
    ({"lam": 0.1, "node_limit": 0}, "node_limit"), ({"lam": 0.1, "gap_tol": -1e-3}, "gap_tol"),
    ({"lam": 0.1, "callback": 3}, "callback"), ({"lam": 0.1, "k": 9}, "k"),
    ({"lam": 0.1, "w_bar": np.ones(3)}, "w_bar")])
def test_bad_input_names_the_argument(kwargs, name):
    A, b, _ = random_problem(7, 10, 5, "gaussian", False)
    kwargs = {"k": 2, **kwargs}
    with pytest.raises(ValueError, match=name):
        l0reg.certify(A, b, **kwargs)


def test_solve_refuses_a_bound_that_is_not_boolean():
    A, b, _ = random_problem(7, 10, 5, "gaussian", False)
    with pytest.raises(ValueError, match="bound"):
        l0reg.solve(A, b, 2, bound="yes")


def test_readme_example():
    """The README's example of ``certify``, run as written."""
    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    text = readme.split("### Certified best subset (`l0reg.certify`)\n", 1)[1].split("\n#", 1)[0]
    (code,) = re.findall(r"^```python\n(.*?)^```", text, flags=re.M | re.S)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    result, bound = namespace["result"], namespace["bound"]
    assert result.status == "optimal" and result.nodes <= 50
    assert bound <= result.lower_bound <= result.objective
