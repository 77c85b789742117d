"""l0reg.solve_blocks (batched block-diagonal solves) and the refitted-start test of l0reg.solve."""
import numpy as np
import pytest

import l0reg
from l0reg import solver


def _blocks_problem(seed, n=40, sizes=(8, 10, 7, 9), float32=False):
    rng = np.random.default_rng(seed)
    p = sum(sizes)
    A = rng.standard_normal((n, p)) * rng.lognormal(0.0, 1.0, p)  # columns of very different norms
    A += 0.8 * rng.standard_normal((n, 1))  # correlated columns: the start support is not optimal
    A = np.asfortranarray(A.astype(np.float32) if float32 else A)
    edges = np.concatenate([[0], np.cumsum(sizes)])
    blocks = list(zip(edges[:-1].tolist(), edges[1:].tolist()))
    return A, rng.standard_normal(p), blocks


def _block_b(A, w_bar, lo, hi, gradient):
    return A[:, lo:hi].astype(np.float64) @ w_bar[lo:hi] - gradient


@pytest.mark.parametrize("lam, gradient", [(0.0, 0.0), (1e-2, 0.0), (1e-3, 0.5)])
def test_blocks_match_enumeration_and_never_lose_to_the_refitted_start(lam, gradient):
    optimal = total = 0
    for seed in range(6):
        A, w_bar, blocks = _blocks_problem(seed)
        ks = [3, 4, 2, 3]
        res = l0reg.solve_blocks(A, blocks, ks, lam=lam, w_bar=w_bar, gradient=gradient)
        for i, ((lo, hi), k) in enumerate(zip(blocks, ks)):
            b = _block_b(A, w_bar, lo, hi, gradient)
            mask = res.mask[lo:hi]
            assert mask.sum() == k and np.all(res.coef[lo:hi][~mask] == 0)
            value = l0reg.objective(A[:, lo:hi], b, res.coef[lo:hi], lam=lam, w_bar=w_bar[lo:hi])
            assert value == pytest.approx(res.objective[i], rel=1e-9, abs=1e-12)
            assert res.objective[i] <= res.objective_start[i] * (1 + 1e-12)
            start = np.flatnonzero(res.coef_start[lo:hi])
            assert res.objective_start[i] == pytest.approx(
                l0reg.solve_on_support(A[:, lo:hi], b, start, lam=lam, w_bar=w_bar[lo:hi])[1], rel=1e-9)
            best = l0reg.brute_force(A[:, lo:hi], b, k, lam=lam, w_bar=w_bar[lo:hi])[1]
            assert res.objective[i] >= best * (1 - 1e-9)
            optimal += res.objective[i] <= best * (1 + 1e-9) + 1e-12
            total += 1
    assert optimal >= 0.7 * total, f"optimum on {optimal}/{total} blocks"  # a local search: no swaps


def test_blocks_are_independent_and_float32_works():
    A, w_bar, blocks = _blocks_problem(1, float32=True)
    ks = [2, 5, 3, 1]
    together = l0reg.solve_blocks(A, blocks, ks, lam=1e-3, w_bar=w_bar)
    for (lo, hi), k in zip(blocks, ks):
        alone = l0reg.solve_blocks(A, [(lo, hi)], [k], lam=1e-3, w_bar=w_bar)
        assert np.array_equal(alone.coef[lo:hi], together.coef[lo:hi])
        assert not alone.coef[:lo].any() and not alone.coef[hi:].any()


def test_each_block_gets_its_own_gradient_weight():
    A, w_bar, blocks = _blocks_problem(3)
    ks, gammas = [2, 5, 3, 1], [0.0, 0.5, 2.0, 0.1]
    together = l0reg.solve_blocks(A, blocks, ks, lam=1e-3, w_bar=w_bar, gradient=gammas)
    for (lo, hi), k, gamma in zip(blocks, ks, gammas):
        alone = l0reg.solve_blocks(A, [(lo, hi)], [k], lam=1e-3, w_bar=w_bar, gradient=gamma)
        assert np.array_equal(alone.coef[lo:hi], together.coef[lo:hi])
    same = l0reg.solve_blocks(A, blocks, ks, lam=1e-3, w_bar=w_bar, gradient=[0.5] * 4)
    assert np.array_equal(same.coef, l0reg.solve_blocks(A, blocks, ks, lam=1e-3, w_bar=w_bar, gradient=0.5).coef)
    with pytest.raises(ValueError, match="one value per block"):
        l0reg.solve_blocks(A, blocks, ks, w_bar=w_bar, gradient=[1.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        l0reg.solve_blocks(A, blocks, ks, w_bar=w_bar, gradient=[1.0, np.nan, 0.0, 0.0])


def test_blocks_with_budget_zero_or_full():
    A, w_bar, blocks = _blocks_problem(2)
    res = l0reg.solve_blocks(A, blocks[:2], [0, 10], lam=1e-2, w_bar=w_bar)
    assert not res.mask[:8].any() and res.mask[8:18].all()
    full = l0reg.solve_on_support(A[:, 8:18], _block_b(A, w_bar, 8, 18, 0.0), np.arange(10), lam=1e-2,
                                  w_bar=w_bar[8:18])[0]
    assert res.coef[8:18] == pytest.approx(full, rel=1e-8, abs=1e-10)


@pytest.mark.parametrize("blocks, ks, match", [
    ([(0, 5), (3, 8)], [1, 1], "overlap"), ([(0, 5)], [6], "k_B"), ([(0, 5)], [1, 2], "one entry"),
    ([(0, 40)], [1], "column ranges")])
def test_blocks_reject_bad_arguments(blocks, ks, match):
    A, w_bar, _ = _blocks_problem(0)
    with pytest.raises(ValueError, match=match):
        l0reg.solve_blocks(A, blocks, ks, w_bar=w_bar)


# ---------------------------------------------------------------- refitted start (l0reg.solve)

def _orthogonal_problem(n=60, p=50, seed=0):
    """AᵀA = I and b = A w̄: F = ((1 + nλ)/2)‖w − w̄‖² on supports, so magnitude top-k + refit is optimal."""
    rng = np.random.default_rng(seed)
    A = np.asfortranarray(np.linalg.qr(rng.standard_normal((n, p)))[0])
    w_bar = rng.standard_normal(p)
    return A, A @ w_bar, w_bar


def _without_start_test(monkeypatch):
    """IHT from the unrefitted start (the full run the refitted start short-cuts)."""
    monkeypatch.setattr(solver._Problem, "start_refitted", lambda self, points: self.start(points[0]))


def test_optimal_start_stops_before_iht_with_the_same_answer(monkeypatch):
    A, b, w_bar = _orthogonal_problem()
    kwargs = dict(lam=1e-2, w_bar=w_bar, swaps=False, exhaustive=False)
    fast = l0reg.solve(A, b, 10, **kwargs)
    assert fast.n_iter == 1 and "iht" in fast.timings
    assert fast.objective == pytest.approx(fast.start_objective, rel=1e-12)
    magnitude = np.sort(np.argsort(-np.abs(w_bar))[:10])
    assert np.array_equal(fast.support, magnitude)
    _without_start_test(monkeypatch)
    slow = l0reg.solve(A, b, 10, **kwargs)
    assert np.isnan(slow.start_objective)
    assert np.array_equal(slow.support, fast.support)
    assert slow.coef == pytest.approx(fast.coef, rel=1e-10, abs=1e-12)


def _refit_value(A, b, support, lam, w_bar):
    return l0reg.solve_on_support(A, b, support, lam=lam, w_bar=w_bar)[1]


def test_start_test_lets_iht_run_when_a_step_helps():
    A, w_bar, _ = _blocks_problem(3, n=60, sizes=(80,))
    b = A @ w_bar
    res = l0reg.solve(A, b, 8, lam=1e-3, w_bar=w_bar, swaps=False, exhaustive=False)
    assert res.n_iter > 1 and res.objective < res.start_objective * (1 - 1e-6)
    jacobi = np.sort(np.argsort(-np.sqrt((A ** 2).sum(0) + 60e-3) * np.abs(w_bar))[:8])
    plain = np.sort(np.argsort(-np.abs(w_bar))[:8])
    assert not np.array_equal(jacobi, plain)
    assert res.start_objective == pytest.approx(
        min(_refit_value(A, b, s, 1e-3, w_bar) for s in (jacobi, plain)), rel=1e-9)


@pytest.mark.parametrize("seed", range(8))
def test_refitted_start_is_the_better_refit_and_never_loses_to_the_full_run(monkeypatch, seed):
    """Start at the better of the magnitude supports (IHT's metric, plain) refitted: never above either
    refit, nor above IHT from the unrefitted start."""
    A, w_bar, _ = _blocks_problem(seed, n=30, sizes=(60,))
    b = A @ w_bar + 0.1 * np.random.default_rng(seed).standard_normal(30)
    kwargs = dict(lam=1e-3, w_bar=w_bar, swaps=False, exhaustive=False)
    res = l0reg.solve(A, b, 6, **kwargs)
    jacobi = np.sort(np.argsort(-np.sqrt((A ** 2).sum(0) + 30e-3) * np.abs(w_bar))[:6])
    plain = np.sort(np.argsort(-np.abs(w_bar))[:6])
    refits = [_refit_value(A, b, s, 1e-3, w_bar) for s in (jacobi, plain)]
    assert res.start_objective == pytest.approx(min(refits), rel=1e-9)
    assert res.objective <= res.start_objective * (1 + 1e-12)
    _without_start_test(monkeypatch)
    assert res.objective <= l0reg.solve(A, b, 6, **kwargs).objective * (1 + 1e-9)


def test_start_test_is_skipped_on_small_searched_problems():
    A, b, w_bar = _orthogonal_problem(n=20, p=12)
    assert np.isnan(l0reg.solve(A, b, 3, lam=1e-2, w_bar=w_bar).start_objective)
