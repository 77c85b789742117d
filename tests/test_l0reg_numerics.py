"""l0reg keeps its promises in float32, on degenerate designs and at any scale.

F(w) = ½‖b − A w‖² + (nλ/2)‖w − w̄‖² s.t. ‖w‖₀ ≤ k; references are computed in float64
from the upcast inputs (``l0reg.testing.objective64``) or by enumeration (``brute_force``).
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import l0reg
from l0reg._exhaustive import affordable
from l0reg.testing import objective64


def _rank_two_float32(seed, n=6, p=10):
    rng = np.random.default_rng(seed)
    A = (rng.standard_normal((n, 2)) @ rng.standard_normal((2, p))).astype(np.float32)
    return A, rng.standard_normal(n).astype(np.float32)


def _assert_sound(A, b, k, result, lam=0.0, w_bar=None):
    """Reported F is the true F of coef; it beats w = 0; at most k nonzeros."""
    true = objective64(A, b, result.coef, lam, w_bar)
    assert np.count_nonzero(result.coef) <= k
    assert result.objective == pytest.approx(true, rel=1e-9, abs=1e-300)
    assert result.objective == pytest.approx(l0reg.objective(A, b, result.coef, lam, w_bar), rel=1e-9, abs=1e-300)
    assert true <= objective64(A, b, np.zeros(A.shape[1]), lam, w_bar)


def test_rank_two_float32_reproducer():
    # Reported 3.169 (true 1.776) above F(0) = 1.296 with coefficients of 3.9e7 before the fix.
    A, b = _rank_two_float32(2)
    result = l0reg.solve(A, b, 4)
    _assert_sound(A, b, 4, result)
    assert np.abs(result.coef).max() < 1e3
    assert result.objective < 0.8


@pytest.mark.parametrize("exhaustive", ["auto", False])
def test_rank_two_float32_family(exhaustive):
    # 69 of these 300 problems broke a promise before the fix (search alone or with enumeration).
    for seed in range(300):
        A, b = _rank_two_float32(seed)
        _assert_sound(A, b, 4, l0reg.solve(A, b, 4, exhaustive=exhaustive))


@pytest.mark.parametrize("exhaustive", ["auto", False])
def test_near_duplicate_columns_are_refitted_exactly(exhaustive):
    # λ = 0, a_4 = a_1 + 1e-12·e and b = a_1 + e/2: only the pair {1, 4} fits b, with
    # coefficients of order 1e12 (a Gram-matrix refit cannot see e: F ≈ 0.1 instead of ≈ 0).
    rng = np.random.default_rng(5)
    A = rng.standard_normal((12, 6))
    e = rng.standard_normal(12)
    e /= np.linalg.norm(e)
    A[:, 4] = A[:, 1] + 1e-12 * e
    b = A[:, 1] + 0.5 * e
    result = l0reg.solve(A, b, 2, exhaustive=exhaustive)
    np.testing.assert_array_equal(result.support, [1, 4])
    assert result.objective < 1e-6 < l0reg.solve_on_support(A, b, [1])[1]
    assert result.objective == pytest.approx(l0reg.brute_force(A, b, 2)[1], abs=1e-6)


@pytest.mark.parametrize("seed", range(20))
def test_integer_designs_reach_the_certified_optimum(seed):
    # n = 6, p = 14, k = 2, λ = 0: the search alone stalled at F = 2.568 where the optimum is 0.0066.
    rng = np.random.default_rng(seed)
    A = rng.integers(-3, 4, size=(6, 14)).astype(float)
    b = rng.standard_normal(6)
    result = l0reg.solve(A, b, 2)
    assert result.certified_optimal
    assert result.objective <= l0reg.brute_force(A, b, 2)[1] * (1 + 1e-6) + 1e-12


def test_certified_only_when_every_support_was_enumerated(rng):
    A, b = rng.standard_normal((20, 12)), rng.standard_normal(20)
    assert l0reg.solve(A, b, 3).certified_optimal
    assert not l0reg.solve(A, b, 3, exhaustive=False).certified_optimal
    A, b = rng.standard_normal((40, 60)), rng.standard_normal(40)
    assert not affordable(40, 60, 10) and not l0reg.solve(A, b, 10).certified_optimal


def test_enumeration_is_gated_by_work():
    assert affordable(6, 14, 2) and affordable(30, 30, 2) and affordable(30, 12, 12)
    assert not affordable(30, 30, 5)  # 142,506 supports
    assert not affordable(1000, 2000, 1)  # the design copy would be too large


# ---------------------------------------------------------------------------- scale invariance
def _scaled_problem(dtype, seed=0, n=15, p=8):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, p)) * np.linspace(0.5, 2.0, p)
    w_true = np.where(rng.random(p) < 0.5, rng.standard_normal(p), 0.0)
    return A, A @ w_true + 0.1 * rng.standard_normal(n), rng.standard_normal(p)


SCALES = {np.float64: (-100, 0, 100), np.float32: (-30, 0, 30)}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("lam", [0.0, 0.1])
def test_scaling_a_b_and_w_bar_scales_the_solution(dtype, lam):
    """A → αA, b → βb, w̄ → (β/α)w̄, λ → α²λ: F → β²F, w → (β/α)w, same support."""
    A, b, w_bar = _scaled_problem(dtype)
    k = 3
    reference = l0reg.solve(A.astype(dtype), b.astype(dtype), k, lam=lam, w_bar=w_bar.astype(dtype))
    limit = math.log10(np.finfo(dtype).max) / 1.3
    for ea in SCALES[dtype]:
        for eb in SCALES[dtype]:
            if abs(eb - ea) > limit:  # the coefficients would not fit in the dtype
                continue
            alpha, beta = 10.0 ** ea, 10.0 ** eb
            result = l0reg.solve((alpha * A).astype(dtype), (beta * b).astype(dtype), k, lam=alpha * alpha * lam,
                                 w_bar=(beta / alpha * w_bar).astype(dtype))
            np.testing.assert_array_equal(result.support, reference.support, err_msg=f"alpha={alpha} beta={beta}")
            rtol = 1e-4 if dtype == np.float32 else 1e-9
            np.testing.assert_allclose(result.coef.astype(float) * (alpha / beta), reference.coef, rtol=rtol)
            assert result.objective == pytest.approx(reference.objective * beta * beta, rel=rtol * 10)


@pytest.mark.parametrize("dtype, magnitude", [(np.float64, 1e200), (np.float64, 1e-200), (np.float32, 1e30),
                                              (np.float32, 1e-30)])
@pytest.mark.parametrize("exhaustive", ["auto", False])
def test_extreme_features_do_not_overflow(dtype, magnitude, exhaustive):
    A, b, _ = _scaled_problem(dtype, seed=3, n=40, p=30)
    lam = 1e-3 if dtype == np.float32 else 0.0  # λ scales with magnitude² (1e±400 is no float)
    with np.errstate(over="raise", invalid="raise"):  # no overflow, no NaN anywhere on the way
        result = l0reg.solve((magnitude * A).astype(dtype), b.astype(dtype), 4, lam=lam * magnitude * magnitude,
                             exhaustive=exhaustive)
    reference = l0reg.solve(A.astype(dtype), b.astype(dtype), 4, lam=lam, exhaustive=exhaustive)
    np.testing.assert_array_equal(result.support, reference.support)
    assert result.objective == pytest.approx(reference.objective, rel=1e-4)
    assert np.isfinite(result.coef).all() and result.support.size == 4


@pytest.mark.parametrize("magnitude", [1e-30, 1e30])
def test_estimator_is_not_all_zero_at_extreme_scales(magnitude):
    rng = np.random.default_rng(4)
    X = rng.standard_normal((50, 10))
    y = X[:, :3] @ np.array([1.0, -2.0, 3.0]) + 0.01 * rng.standard_normal(50)
    model = l0reg.L0RidgeRegressor(k=3).fit((magnitude * X).astype(np.float32), y.astype(np.float32))
    np.testing.assert_array_equal(model.support_, [0, 1, 2])
    np.testing.assert_allclose(model.coef_[:3] * magnitude, [1.0, -2.0, 3.0], rtol=1e-2)


@settings(max_examples=30, deadline=None)
@given(st.sampled_from([np.float32, np.float64]), st.integers(-25, 25), st.integers(-25, 25),
       st.integers(0, 2**32 - 1))
def test_powers_of_two_leave_the_answer_exactly_scaled(dtype, ea, eb, seed):
    # Internal scaling is by powers of two: scaling by them is exact, so the answer is too.
    A, b, w_bar = _scaled_problem(dtype, seed=seed % 1000)
    A, b, w_bar = A.astype(dtype), b.astype(dtype), w_bar.astype(dtype)
    reference = l0reg.solve(A, b, 3, lam=0.05, w_bar=w_bar)
    alpha, beta = 2.0 ** ea, 2.0 ** eb
    result = l0reg.solve((alpha * A).astype(dtype), (beta * b).astype(dtype), 3, lam=0.05 * alpha * alpha,
                         w_bar=(beta / alpha * w_bar).astype(dtype))
    np.testing.assert_array_equal(result.coef, (beta / alpha * reference.coef).astype(dtype))
    assert result.objective == pytest.approx(reference.objective * beta * beta, rel=1e-12)
