"""The 1-swap local search: exact Gram-form swap scores, local optimality, fallback on singular supports."""
import itertools

import numpy as np
import pytest

from l0reg._backsolve import ridge_on_support
from l0reg._design import Design
from l0reg._local_search import _SingularSupport, objective_from_residual, swap_gains, swap_search


def _problem(seed, n=30, p=12, nlam=0.7):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, p)) + 0.5 * rng.standard_normal((n, 1))  # correlated columns
    b = rng.standard_normal(n)
    w_bar = rng.standard_normal(p) if nlam else np.zeros(p)
    return Design(A), b, w_bar, nlam


def _refit_value(design, b, w_bar, nlam, support):
    w = ridge_on_support(design, b, np.asarray(sorted(support)), w_bar, nlam)
    return objective_from_residual(b - design.A @ w, w, w_bar, nlam)


@pytest.mark.parametrize("seed, nlam", [(0, 0.7), (1, 0.0), (2, 3.0)])
def test_swap_gains_equal_the_refit_differences(seed, nlam):
    design, b, w_bar, nlam = _problem(seed, nlam=nlam)
    support = np.array([1, 4, 5, 9])
    C = design.gram_cols(list(support)).T
    best_j, gain, removal = swap_gains(C, support, design.rmatvec(b), design.col_sq(), w_bar, nlam)
    base = _refit_value(design, b, w_bar, nlam, support)
    for t, i in enumerate(support):
        rest = set(support) - {i}
        assert removal[t] == pytest.approx(_refit_value(design, b, w_bar, nlam, rest) - base, rel=1e-9, abs=1e-12)
        expected = {j: base - _refit_value(design, b, w_bar, nlam, rest | {j})
                    for j in range(design.p) if j not in support}
        assert best_j[t] not in support
        assert gain[t] == pytest.approx(expected[best_j[t]], rel=1e-8, abs=1e-10)
        assert gain[t] == pytest.approx(max(expected.values()), rel=1e-8, abs=1e-10)


def test_swap_gains_without_an_outside_column():
    design, b, w_bar, nlam = _problem(0, p=3)
    support = np.arange(3)
    best_j, gain, _ = swap_gains(design.gram_cols(list(support)).T, support, design.rmatvec(b), design.col_sq(),
                                 w_bar, nlam)
    assert best_j.tolist() == [-1, -1, -1] and np.all(gain == -np.inf)


@pytest.mark.parametrize("seed", range(4))
def test_swap_search_ends_at_a_one_swap_local_optimum(seed):
    design, b, w_bar, nlam = _problem(seed)
    w = np.zeros(design.p)
    w[:3] = 1.0
    r = b - design.A @ w
    start = objective_from_residual(r, w, w_bar, nlam)
    w, r, _ = swap_search(design, b, w, r, w_bar, nlam, max_swaps=100, tol=1e-12)
    value = objective_from_residual(r, w, w_bar, nlam)
    assert np.count_nonzero(w) <= 3 and value <= start
    np.testing.assert_allclose(r, b - design.A @ w, atol=1e-10)
    support = set(np.flatnonzero(w))
    for i, j in itertools.product(support, set(range(design.p)) - support):
        assert _refit_value(design, b, w_bar, nlam, support - {i} | {j}) >= value - 1e-9 * value


def test_singular_support_falls_back_to_the_scan():
    design, b, w_bar, _ = _problem(0, nlam=0.0)
    A = design.A.copy()
    A[:, 1] = A[:, 0]  # two equal columns: A_SᵀA_S is singular for S ∋ 0, 1
    design = Design(A)
    support = np.array([0, 1, 2])
    C = design.gram_cols(list(support)).T
    with pytest.raises(_SingularSupport):
        swap_gains(C, support, design.rmatvec(b), design.col_sq(), w_bar, 0.0)
    w = np.zeros(design.p)
    w[support] = 1.0
    r = b - A @ w
    start = objective_from_residual(r, w, w_bar, 0.0)
    w, r, _ = swap_search(design, b, w, r, w_bar, 0.0, max_swaps=100, tol=1e-12)
    assert np.count_nonzero(w) <= 3 and objective_from_residual(r, w, w_bar, 0.0) < start
