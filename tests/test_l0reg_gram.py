"""``l0reg.solve_gram`` (Gram form, many rows) against the (A, b) solver and enumeration.

Row r of the Gram problem with ``H = XᵀX``, ``C = W̄ H`` (or ``C_r = Xᵀb_r``) and
ridge λ is the (A, b) problem ``A = X``, ``b = X w̄_r`` (or ``b_r``) with
``λ_(A,b) = λ / n`` (``l0reg.solve`` weighs its ridge by ``nλ/2``); its objective
``f_r(w) − f_r(w̄_r)`` is ``F_(A,b)(w) − F_(A,b)(w̄_r)``.
"""
import itertools

import numba
import numpy as np
import pytest

import l0reg
from l0reg.testing import design_matrix

RTOL = 1e-7
REQUIRED_RATE = 0.95


def _layer(kind, n, p, r, seed):
    """Inputs X and dense rows W̄ (some channels of X scaled up, as in language models)."""
    rng = np.random.default_rng(seed)
    X = design_matrix(kind, n, p, rng) * rng.lognormal(0.0, 1.0, size=p)
    return X, rng.standard_normal((r, p))


def _reconstruction(X, Wbar, W, lam):
    """``½‖X(w̄ − w)‖² + (λ/2)‖w − w̄‖²`` per row, independently of l0reg."""
    D = np.asarray(W, dtype=np.float64) - Wbar
    return 0.5 * ((D @ X.T) ** 2).sum(axis=1) + 0.5 * lam * (D * D).sum(axis=1)


def _enumerate(X, b, w_bar, lam, supports):
    """Best objective over ``supports`` for the (A, b) problem, relative to w̄."""
    n = X.shape[0]
    f_bar = 0.5 * float((b - X @ w_bar) @ (b - X @ w_bar))
    return min(l0reg.solve_on_support(X, b, list(S), lam / n, w_bar)[1] for S in supports) - f_bar


def _nm_supports(p, n, m):
    groups = [list(itertools.combinations(range(lo, min(lo + m, p)), min(n, min(lo + m, p) - lo)))
              for lo in range(0, p, m)]
    return [sum(choice, ()) for choice in itertools.product(*groups)]


# --------------------------------------------------------------------------- optimality
GRID = list(itertools.product(("gaussian", "toeplitz", "equicorrelated"), ((30, 8), (60, 12)), (2, 3, 5),
                              (0.0, 0.1, 3.0)))


def test_global_optimum_rate_vs_enumeration():
    """Each row against ``l0reg.brute_force`` (≥ 95% at the global optimum, never below it)
    and against ``l0reg.solve`` on the same (A, b) problem (never worse on the whole grid)."""
    hits = total = 0
    ab_worse = 0
    for seed, (kind, (n, p), k, lam) in enumerate(GRID):
        X, Wbar = _layer(kind, n, p, 4, seed)
        res = l0reg.solve_gram(X.T @ X, Wbar, k, lam=lam)
        for i in range(Wbar.shape[0]):
            b = X @ Wbar[i]
            best = l0reg.brute_force(X, b, k, lam / n, Wbar[i])[1]
            ab = l0reg.solve(X, b, k, lam=lam / n, w_bar=Wbar[i]).objective
            assert res.objective[i] >= best * (1 - RTOL) - 1e-9
            hits += res.objective[i] <= best * (1 + RTOL) + 1e-9
            ab_worse += res.objective[i] > ab * (1 + RTOL) + 1e-9
            total += 1
    rate = hits / total
    print(f"solve_gram at the global optimum on {hits}/{total} rows ({rate:.1%}); worse than solve on {ab_worse}")
    assert rate >= REQUIRED_RATE
    assert ab_worse <= total * (1 - REQUIRED_RATE)


def test_general_linear_term_matches_ab_problem():
    """``C_r = Xᵀb_r`` for targets b_r ≠ X w̄_r: the optimum of ``F_(A,b)(w) − F_(A,b)(w̄)``."""
    rng = np.random.default_rng(3)
    n, p, k, lam = 40, 10, 4, 0.5
    X, Wbar = _layer("toeplitz", n, p, 3, 3)
    B = Wbar @ X.T + rng.standard_normal((3, n))
    res = l0reg.solve_gram(X.T @ X, Wbar, k, C=B @ X, lam=lam)
    for i in range(3):
        w_opt, f_opt = l0reg.brute_force(X, B[i], k, lam / n, Wbar[i])
        f_bar = 0.5 * float((B[i] - X @ Wbar[i]) @ (B[i] - X @ Wbar[i]))
        assert res.objective[i] == pytest.approx(f_opt - f_bar, rel=1e-7, abs=1e-8)
        w = res.coef[i]
        direct = 0.5 * float((B[i] - X @ w) @ (B[i] - X @ w)) + 0.5 * lam * float((w - Wbar[i]) @ (w - Wbar[i]))
        assert res.objective[i] == pytest.approx(direct - f_bar, rel=1e-9, abs=1e-9)


def test_per_row_budgets():
    n, p = 40, 10
    X, Wbar = _layer("gaussian", n, p, 5, 7)
    ks = np.array([0, 1, 3, 6, 10])
    res = l0reg.solve_gram(X.T @ X, Wbar, ks, lam=0.2)
    assert (res.mask.sum(axis=1) <= ks).all()
    assert res.objective[-1] == pytest.approx(0.0, abs=1e-9)  # k = p keeps the dense row
    for i, k in enumerate(ks):
        best = l0reg.brute_force(X, X @ Wbar[i], int(k), 0.2 / n, Wbar[i])[1]
        assert res.objective[i] == pytest.approx(best, rel=1e-7, abs=1e-9)


@pytest.mark.parametrize("pattern", [(2, 4), "1:4", "3:4"])
def test_nm_pattern_vs_enumeration(pattern):
    n, p, r = 40, 12, 4
    X, Wbar = _layer("toeplitz", n, p, r, 11)
    res = l0reg.solve_gram(X.T @ X, Wbar, projection=pattern, lam=0.1)
    nn, m = (pattern if isinstance(pattern, tuple) else tuple(int(x) for x in pattern.split(":")))
    assert (res.mask.reshape(r, p // m, m).sum(axis=2) <= nn).all()
    supports = _nm_supports(p, nn, m)
    for i in range(r):
        best = _enumerate(X, X @ Wbar[i], Wbar[i], 0.1, supports)
        assert res.objective[i] == pytest.approx(best, rel=1e-7, abs=1e-9)


def test_nm_projection_object():
    X, Wbar = _layer("gaussian", 30, 8, 2, 5)
    by_tuple = l0reg.solve_gram(X.T @ X, Wbar, projection=(2, 4))
    by_object = l0reg.solve_gram(X.T @ X, Wbar, projection=l0reg.NM(2, 4))
    np.testing.assert_array_equal(by_tuple.coef, by_object.coef)


def _layer_optimum(X, Wbar, total, lam):
    """Best total objective over all allocations of ``total`` nonzeros to the rows
    (enumeration per row and budget, then dynamic programming over the rows)."""
    n, p = X.shape
    table = np.array([[l0reg.brute_force(X, X @ w, k, lam / n, w)[1] for k in range(p + 1)] for w in Wbar])
    best = np.full(total + 1, np.inf)
    best[0] = 0.0
    for row in table:
        best = np.array([min(best[t - k] + row[k] for k in range(min(t, p) + 1)) for t in range(total + 1)])
    return best[total]


def test_layer_budget_vs_best_allocation():
    """Total nnz ≤ K, total F never above the start nor below the optimum over all
    allocations; at that optimum on at least 2/3 of 12 small layers (the budget
    exchange moves one unit per row at a time: a local search over allocations)."""
    n, p, r, total = 30, 8, 4, 13
    hits = 0
    for seed in range(12):
        X, Wbar = _layer(("gaussian", "toeplitz", "equicorrelated")[seed % 3], n, p, r, 100 + seed)
        res = l0reg.solve_gram(X.T @ X, Wbar, total, budget="layer", lam=0.1)
        assert res.mask.sum() <= total
        assert res.objective.sum() <= res.objective_start.sum() * (1 + 1e-12)
        optimum = _layer_optimum(X, Wbar, total, 0.1)
        assert res.objective.sum() >= optimum * (1 - 1e-9)
        hits += res.objective.sum() <= optimum * (1 + 1e-6)
    print(f"layer budget: allocation optimum on {hits}/12 layers")
    assert hits >= 8


# --------------------------------------------------------------------------- invariants
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_invariants_on_a_pruning_shaped_layer(dtype):
    n, p, r = 400, 64, 16
    X, Wbar = _layer("toeplitz", n, p, r, 1)
    H, Wbar = (X.T @ X).astype(dtype), Wbar.astype(dtype)
    ks = np.random.default_rng(0).integers(1, p, size=r)
    res = l0reg.solve_gram(H, Wbar, ks, lam=0.5, max_iter=30)
    assert res.coef.dtype == dtype and res.coef.shape == (r, p)
    np.testing.assert_array_equal(res.mask, res.coef != 0)
    assert (res.mask.sum(axis=1) <= ks).all()
    assert (res.objective <= res.objective_start).all()
    H64, W64 = H.astype(np.float64), Wbar.astype(np.float64)
    D = res.coef.astype(np.float64) - W64
    recomputed = 0.5 * np.einsum("ij,jk,ik->i", D, H64, D) + 0.25 * (D * D).sum(axis=1)
    np.testing.assert_allclose(res.objective, recomputed, rtol=1e-9, atol=1e-9)
    if dtype == np.float64:
        np.testing.assert_allclose(res.objective, _reconstruction(X, W64, res.coef, 0.5), rtol=1e-9)
    # the start: the better of the magnitude and Wanda supports, each refitted
    for i in range(r):
        starts = []
        for score in (np.abs(W64[i]), np.abs(W64[i]) * np.sqrt(np.diag(H64))):
            S = np.sort(np.argsort(-score, kind="stable")[: ks[i]])
            w = np.zeros(p)
            w[S] = np.linalg.solve(H64[np.ix_(S, S)] + 0.5 * np.eye(S.size), (W64[i] @ H64)[S] + 0.5 * W64[i, S])
            d = w - W64[i]
            starts.append(0.5 * d @ H64 @ d + 0.25 * d @ d)
        assert res.objective_start[i] == pytest.approx(min(starts), rel=1e-6)


def test_one_row_and_rank_deficient_gram():
    """A (p,) row; H of rank 5 < k with λ = 0 (singular H_SS): still never above the start."""
    rng = np.random.default_rng(2)
    X = rng.standard_normal((5, 12))
    w = rng.standard_normal(12)
    res = l0reg.solve_gram(X.T @ X, w, 7)
    assert res.coef.shape == (1, 12) and res.mask.sum() <= 7
    assert res.objective[0] <= res.objective_start[0]
    assert res.objective[0] == pytest.approx(_reconstruction(X, w[None], res.coef, 0.0)[0], abs=1e-8)


@pytest.mark.parametrize("kwargs, message", [
    (dict(H=np.ones((3, 4))), "H must be square"),
    (dict(H=np.array([[1.0, 0.5], [0.0, 1.0]])), "H must be symmetric"),
    (dict(H=np.array([[np.nan, 0.0], [0.0, 1.0]])), "H contains NaN"),
    (dict(H=-np.eye(2)), "positive semidefinite"),
    (dict(W_bar=np.ones((2, 3))), "W_bar must have shape"),
    (dict(W_bar=np.ones((2, 2), dtype=int)), "W_bar must have dtype"),
    (dict(k=3), r"k must be in \[0, n_features=2\]"),
    (dict(k=[1, 2, 3]), "one budget per row"),
    (dict(k=5, budget="layer"), "k \\(layer budget\\)"),
    (dict(budget="block"), "budget must be"),
    (dict(k=1, projection=(2, 4)), "not both"),
    (dict(k=None, projection="2-4"), "n:m"),
    (dict(k=None, projection=(5, 4)), "projection n"),
    (dict(C=np.ones((3, 2))), "C must have shape"),
    (dict(lam=-1.0), "lam"),
])
def test_validation(kwargs, message):
    args = dict(H=np.eye(2), W_bar=np.ones((2, 2)), k=1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        l0reg.solve_gram(args.pop("H"), args.pop("W_bar"), args.pop("k"), **args)


# --------------------------------------------------------------------------- warm start and knobs
def _refit_objective(H, wbar, S, lam):
    """F of the row w̄ refitted exactly on the support S."""
    w = np.zeros(H.shape[0])
    S = np.flatnonzero(S)
    w[S] = np.linalg.solve(H[np.ix_(S, S)] + lam * np.eye(S.size), (wbar @ H)[S] + lam * wbar[S])
    d = w - wbar
    return 0.5 * d @ H @ d + 0.5 * lam * d @ d


@pytest.mark.parametrize("constraint", [dict(k=5), dict(projection=(2, 4))])
def test_start_mask_is_refitted_and_never_beaten(constraint):
    """A given mask (the worst-magnitude entries: far from the default starts) is the start:
    ``objective_start`` is its exact refit, and no row ends above it."""
    X, Wbar = _layer("toeplitz", 60, 12, 6, 21)
    H, lam = X.T @ X, 0.3
    scores = -np.abs(Wbar)
    ks = np.full(6, constraint.get("k", 6))
    n, m = constraint.get("projection", (0, 0))
    mask = l0reg._gram_supports.row_masks(scores, ks, n, m)
    res = l0reg.solve_gram(H, Wbar, lam=lam, start=mask, **constraint)
    expected = [_refit_objective(H, Wbar[i], mask[i], lam) for i in range(6)]
    np.testing.assert_allclose(res.objective_start, expected, rtol=1e-8)
    assert (res.objective <= res.objective_start).all()
    assert (res.objective < 0.5 * res.objective_start).any()


def test_start_dense_rows_at_the_optimum_stay_there():
    """Dense start rows: their values count (never above them), and the enumerated optimum is kept."""
    X, Wbar = _layer("equicorrelated", 40, 10, 3, 5)
    H, k, lam = X.T @ X, 3, 0.1
    optimum = np.array([l0reg.brute_force(X, X @ w, k, lam / 40, w)[0] for w in Wbar])
    res = l0reg.solve_gram(H, Wbar, k, lam=lam, start=optimum, swaps=False, max_iter=1)
    np.testing.assert_allclose(res.coef, optimum, rtol=1e-7, atol=1e-10)
    perturbed = np.where(optimum != 0, optimum * 1.1, 0.0)
    res = l0reg.solve_gram(H, Wbar, k, lam=lam, start=perturbed)
    d = perturbed - Wbar
    start_values = 0.5 * np.einsum("ij,jk,ik->i", d, H, d) + 0.5 * lam * (d * d).sum(axis=1)
    assert (res.objective_start < start_values).all()  # refitted: the better of both
    assert (res.objective <= res.objective_start).all()


@pytest.mark.parametrize("kwargs, message", [
    (dict(k=2, start=np.ones((2, 4), dtype=bool)), "does not satisfy"),
    (dict(projection=(2, 4), start=np.array([[1.0, 1.0, 1.0, 0.0]] * 2)), "does not satisfy"),
    (dict(k=6, budget="layer", start=np.ones((2, 4), dtype=bool)), "does not satisfy"),
    (dict(k=2, start=np.ones((3, 4), dtype=bool)), "start must have shape"),
    (dict(k=2, start=np.full((2, 4), np.nan)), "start contains NaN"),
    (dict(k=2, rounds=0), "rounds"),
])
def test_start_and_rounds_validation(kwargs, message):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((10, 4))
    with pytest.raises(ValueError, match=message):
        l0reg.solve_gram(X.T @ X, rng.standard_normal((2, 4)), **kwargs)


def test_more_rounds_never_worse():
    X, Wbar = _layer("toeplitz", 200, 48, 8, 9)
    H = X.T @ X
    one = l0reg.solve_gram(H, Wbar, 12, lam=0.1, rounds=1, max_iter=2)
    three = l0reg.solve_gram(H, Wbar, 12, lam=0.1, rounds=3, max_iter=2)
    assert three.objective.sum() <= one.objective.sum() * (1 + 1e-12)


def test_cg_refit_matches_exact_refit():
    """The CG refit (used on large supports) converges to the exact refit from any start."""
    from l0reg._gram_refit import cg_refit_rows, exact_refit_rows
    X, Wbar = _layer("toeplitz", 400, 40, 5, 4)
    H, lam = X.T @ X, 0.5
    masks = np.abs(Wbar) > 0.5
    exact = exact_refit_rows(H, Wbar @ H, Wbar, lam, masks)
    cg = cg_refit_rows(H, Wbar @ H, Wbar, lam, masks, np.zeros_like(Wbar), 200, rtol=1e-9)
    np.testing.assert_allclose(cg, exact, rtol=1e-4, atol=1e-5 * np.abs(exact).max())
    assert (cg[~masks] == 0).all()


@pytest.mark.parametrize("constraint", [{"k": 12}, {"projection": (2, 4)}])
def test_rows_split_over_threads_give_the_one_thread_result(monkeypatch, constraint):
    """The row kernels run in chunks on several threads (``_threads.over_rows``): the same rows as one thread,
    also for the CG refit."""
    from l0reg._gram_refit import cg_refit_rows
    X, Wbar = _layer("toeplitz", 300, 40, 23, 5)
    H, masks = X.T @ X, np.abs(Wbar) > 0.5
    results = []
    for threads in (1, 3):
        monkeypatch.setattr(numba, "get_num_threads", lambda threads=threads: threads)
        res = l0reg.solve_gram(H, Wbar, lam=0.1, **constraint)
        results.append((res.coef, res.objective, cg_refit_rows(H, Wbar @ H, Wbar, 0.1, masks, Wbar, 5)))
    for one, three in zip(*results):
        np.testing.assert_array_equal(three, one)


def test_start_list_keeps_each_rows_best_candidate():
    """With several starts, each row's objective_start is the best of the candidates' refits."""
    X, Wbar = _layer("gaussian", 50, 10, 5, 13)
    H, lam, k = X.T @ X, 0.2, 3
    rng = np.random.default_rng(1)
    masks = [np.argsort(rng.random((5, 10)), axis=1) < k for _ in range(2)]
    res = l0reg.solve_gram(H, Wbar, k, lam=lam, start=masks)
    expected = [min(_refit_objective(H, Wbar[i], mk[i], lam) for mk in masks) for i in range(5)]
    np.testing.assert_allclose(res.objective_start, expected, rtol=1e-8)
    with pytest.raises(ValueError, match="at least one"):
        l0reg.solve_gram(H, Wbar, k, start=[])
