"""Global optimality of ``l0reg.solve`` against exhaustive enumeration, and its invariants.

F(w) = ½‖b − A w‖² + (nλ/2)‖w − w̄‖²  subject to  ‖w‖₀ ≤ k.
"""
import itertools
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import l0reg
from l0reg._brute_force import brute_force, solve_on_support
from l0reg.testing import FuzzProblem, design_matrix

DESIGNS = ("gaussian", "toeplitz", "equicorrelated")
# (n, p): p <= 16 keeps C(p, 5) <= 4368 supports per enumeration.
SIZES = ((20, 12), (50, 16))
GRID = list(itertools.product(SIZES, (2, 3, 5), DESIGNS, (0.0, 0.01, 0.1), ("zero", "random"), (1.0, 10.0)))
REQUIRED_RATE = 0.95
GLOBAL_RTOL = 1e-6
BASELINE_RTOL = 1e-9


def _objective64(A, b, w, lam, w_bar):
    """F in float64 from the (upcast) inputs: an implementation independent of l0reg."""
    A, b, w = (np.asarray(x, dtype=np.float64) for x in (A, b, w))
    w_bar = np.zeros(A.shape[1]) if w_bar is None else np.asarray(w_bar, dtype=np.float64)
    r = b - A @ w
    return 0.5 * float(r @ r) + 0.5 * A.shape[0] * lam * float((w - w_bar) @ (w - w_bar))


def _top_k(v, k):
    """Euclidean projection onto ‖w‖₀ ≤ k (ties to the lowest index)."""
    out = np.zeros_like(v)
    keep = np.argsort(-np.abs(v), kind="stable")[:k]
    out[keep] = v[keep]
    return out


def make_instance(n, p, k, design, lam, w_bar_kind, snr, seed):
    """``b = A w* + σ ε`` with k Gaussian nonzeros in w* and ``Var(A w*)/σ² = snr``."""
    rng = np.random.default_rng(seed)
    A = design_matrix(design, n, p, rng)
    w_true = np.zeros(p)
    w_true[rng.choice(p, size=k, replace=False)] = rng.standard_normal(k)
    signal = A @ w_true
    b = signal + math.sqrt(signal.var() / snr) * rng.standard_normal(n)
    w_bar = None if w_bar_kind == "zero" else rng.standard_normal(p)
    return A, b, w_bar


def _baseline(A, b, k, lam, w_bar):
    """Top-k magnitudes of the unconstrained minimiser, then the exact fit on that support."""
    n, p = A.shape
    wb = np.zeros(p) if w_bar is None else w_bar
    if lam > 0:
        w_full = np.linalg.solve(A.T @ A + n * lam * np.eye(p), A.T @ b + n * lam * wb)
    else:
        w_full = np.linalg.lstsq(A, b, rcond=None)[0]
    return solve_on_support(A, b, np.flatnonzero(_top_k(w_full, k)), lam, w_bar)[1]


@pytest.fixture(scope="module")
def grid_outcomes():
    """Solve every grid instance with default settings; keep solver, exact and baseline objectives."""
    outcomes = []
    for seed, ((n, p), k, design, lam, w_bar_kind, snr) in enumerate(GRID):
        params = dict(n=n, p=p, k=k, design=design, lam=lam, w_bar_kind=w_bar_kind, snr=snr, seed=seed)
        A, b, w_bar = make_instance(**params)
        result = l0reg.solve(A, b, k, lam=lam, w_bar=w_bar)
        outcomes.append(dict(params=params, solver=result.objective,
                             exact=brute_force(A, b, k, lam, w_bar)[1],
                             baseline=_baseline(A, b, k, lam, w_bar)))
    return outcomes


def _repro(params):
    return f"make_instance({', '.join(f'{k}={v!r}' for k, v in params.items())})"


def test_grid_is_large_enough():
    assert len(GRID) >= 200


def test_default_solve_reaches_global_optimum(grid_outcomes):
    misses = [o for o in grid_outcomes if o["solver"] > o["exact"] * (1 + GLOBAL_RTOL)]
    rate = 1 - len(misses) / len(grid_outcomes)
    detail = "; ".join(f"{_repro(o['params'])}: solve={o['solver']:.10g} exact={o['exact']:.10g}"
                       for o in misses[:10])
    assert rate >= REQUIRED_RATE, (
        f"global optimum on {rate:.1%} of {len(grid_outcomes)} instances (< {REQUIRED_RATE:.0%}); misses: {detail}")


def test_default_solve_never_worse_than_top_k_baseline(grid_outcomes):
    worse = [f"{_repro(o['params'])}: solve={o['solver']:.12g} baseline={o['baseline']:.12g}"
             for o in grid_outcomes if o["solver"] > o["baseline"] * (1 + BASELINE_RTOL)]
    assert not worse, f"{len(worse)} instances worse than top-k + back-solve: " + "; ".join(worse[:10])


def test_brute_force_is_a_lower_bound(grid_outcomes):
    below = [_repro(o["params"]) for o in grid_outcomes if o["solver"] < o["exact"] * (1 - 1e-9)]
    assert not below, f"solve beat the exhaustive search (brute force is wrong) on: {below[:10]}"


# ---------------------------------------------------------------------------- brute force itself
@pytest.mark.parametrize("lam, with_w_bar", [(0.0, False), (0.1, False), (0.1, True), (0.0, True)])
def test_brute_force_matches_enumeration_of_all_smaller_supports(rng, lam, with_w_bar):
    n, p, k = 9, 7, 3
    A = rng.standard_normal((n, p))
    b = rng.standard_normal(n)
    w_bar = rng.standard_normal(p) if with_w_bar else None
    w, value = brute_force(A, b, k, lam, w_bar)
    best = min(solve_on_support(A, b, support, lam, w_bar)[1]
               for size in range(k + 1) for support in itertools.combinations(range(p), size))
    assert np.count_nonzero(w) <= k
    assert value == pytest.approx(best, rel=1e-12)
    assert value == pytest.approx(_objective64(A, b, w, lam, w_bar), rel=1e-12)


def test_brute_force_on_rank_deficient_design(rng):
    # More columns than rows and a duplicated column: singular systems on many supports.
    A = rng.standard_normal((4, 7))
    A[:, 5] = A[:, 1]
    b = rng.standard_normal(4)
    w, value = brute_force(A, b, 5, 0.0)
    assert value == pytest.approx(0.0, abs=1e-20)
    np.testing.assert_allclose(A @ w, b, atol=1e-10)
    w3, value3 = brute_force(A, b, 2, 0.0)
    best = min(solve_on_support(A, b, s, 0.0)[1] for s in itertools.combinations(range(7), 2))
    assert value3 == pytest.approx(best, rel=1e-12)


def test_brute_force_k_zero_and_limits(rng):
    A = rng.standard_normal((6, 4))
    b = rng.standard_normal(6)
    w_bar = rng.standard_normal(4)
    w, value = brute_force(A, b, 0, 0.5, w_bar)
    assert not w.any()
    assert value == pytest.approx(_objective64(A, b, w, 0.5, w_bar))
    with pytest.raises(ValueError, match="max_supports"):
        brute_force(A, b, 2, max_supports=5)


# ---------------------------------------------------------------------------- properties
@st.composite
def problems(draw, dtypes=(np.float64, np.float32)):
    n = draw(st.integers(1, 30))
    p = draw(st.integers(1, 12))
    k = draw(st.integers(0, p))
    lam = draw(st.sampled_from([0.0, 1e-3, 0.1, 1.0]))
    dtype = draw(st.sampled_from(dtypes))
    order = draw(st.sampled_from("CF"))
    columns = draw(st.sampled_from(["gaussian", "duplicated", "zero", "scaled"]))
    with_w_bar, with_w_init = draw(st.booleans()), draw(st.booleans())
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, p))
    if columns == "duplicated":
        A[:, -1] = A[:, 0]
    elif columns == "zero":
        A[:, rng.integers(p)] = 0.0
    elif columns == "scaled":
        A *= 10.0 ** rng.uniform(-2, 2, size=p)
    w_true = _top_k(rng.standard_normal(p), max(k, 1))
    b = A @ w_true + rng.standard_normal(n)
    return FuzzProblem(A=np.asarray(A, dtype=dtype, order=order), b=b.astype(dtype), k=k, lam=lam,
                       w_bar=rng.standard_normal(p) if with_w_bar else None,
                       w_init=rng.standard_normal(p) if with_w_init else None, design=columns, seed=seed)


def _readonly(x):
    if x is not None:
        x.flags.writeable = False
    return x


def _tolerance(problem, start_value):
    """Round-off allowance: 100 ulps of the dtype of A, relative to the scale of F."""
    b64 = problem.b.astype(np.float64)
    scale = 0.5 * float(b64 @ b64) + start_value
    return 100 * np.finfo(problem.A.dtype).eps * scale + np.finfo(float).tiny


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_solve_invariants(problem):
    A, b, w_bar, w_init = (_readonly(x) for x in (problem.A, problem.b, problem.w_bar, problem.w_init))
    saved = [None if x is None else x.copy() for x in (A, b, w_bar, w_init)]
    dtype, p = A.dtype, A.shape[1]

    result = l0reg.solve(A, b, problem.k, lam=problem.lam, w_bar=w_bar, w_init=w_init)

    for before, after in zip(saved, (A, b, w_bar, w_init)):
        if before is not None:
            np.testing.assert_array_equal(before, after)
    coef = result.coef
    assert coef.shape == (p,) and coef.dtype == dtype
    assert np.count_nonzero(coef) <= problem.k
    assert result.support.dtype == np.int64
    np.testing.assert_array_equal(result.support, np.flatnonzero(coef))

    start_from = np.zeros(p) if w_bar is None else w_bar
    start_from = start_from if w_init is None else w_init
    start = _top_k(np.asarray(start_from, dtype=dtype).astype(np.float64), problem.k)
    start_value = _objective64(A, b, start, problem.lam, w_bar)
    tol = _tolerance(problem, start_value)
    value = _objective64(A, b, coef, problem.lam, w_bar)
    assert value <= start_value + tol, f"F(result)={value!r} > F(start)={start_value!r}"
    history = np.asarray(result.history, dtype=np.float64)
    assert history.size >= 1
    increases = np.diff(history)
    assert (increases <= tol).all(), f"history increases by up to {increases.max()!r}: {history}"

    assert result.objective == pytest.approx(l0reg.objective(A, b, coef, problem.lam, w_bar), rel=1e-9, abs=tol)
    assert result.objective == pytest.approx(value, abs=tol)
    if math.comb(p, problem.k) <= 500:
        exact = brute_force(A, b, problem.k, problem.lam, w_bar)[1]
        assert value >= exact - tol


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 10), st.integers(3, 10), st.sampled_from([0.0, 0.1]), st.booleans(),
       st.integers(0, 2**32 - 1))
def test_interpolating_w_bar_is_recovered(p, extra_rows, lam, with_w_init, seed):
    # k = p and b = A w̄: F(w̄) = 0 is the unique minimum (A has full column rank or λ > 0).
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((p + extra_rows, p))
    w_bar = rng.standard_normal(p)
    w_init = rng.standard_normal(p) if with_w_init else None
    result = l0reg.solve(A, A @ w_bar, p, lam=lam, w_bar=w_bar, w_init=w_init)
    np.testing.assert_allclose(result.coef, w_bar, rtol=1e-6, atol=1e-8)


@settings(max_examples=40, deadline=None)
@given(problems(dtypes=(np.float64,)))
def test_memory_order_does_not_change_the_result(problem):
    c_result = l0reg.solve(np.ascontiguousarray(problem.A), problem.b, problem.k, lam=problem.lam,
                           w_bar=problem.w_bar, w_init=problem.w_init)
    f_result = l0reg.solve(np.asfortranarray(problem.A), problem.b, problem.k, lam=problem.lam,
                           w_bar=problem.w_bar, w_init=problem.w_init)
    start_value = _objective64(problem.A, problem.b, np.zeros(problem.A.shape[1]), problem.lam, problem.w_bar)
    assert c_result.objective == pytest.approx(f_result.objective, rel=1e-9, abs=_tolerance(problem, start_value))
    if problem.design in ("gaussian", "scaled") and problem.A.shape[0] > problem.A.shape[1]:
        # Full column rank: no two supports tie exactly, so the solution itself must agree
        # (with rank deficiency, e.g. n < k, many supports reach F = 0 and either is right).
        np.testing.assert_array_equal(c_result.support, f_result.support)
        scale = max(1.0, float(np.abs(c_result.coef).max(initial=0.0)))
        np.testing.assert_allclose(c_result.coef, f_result.coef, rtol=1e-7, atol=1e-9 * scale)
