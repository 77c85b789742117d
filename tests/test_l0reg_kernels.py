"""The solver's building blocks against direct numpy computations."""
import numpy as np
import pytest

from l0reg import TopK, objective
from l0reg._backsolve import ridge_on_support
from l0reg._design import Design
from l0reg._iht import jacobi_scale
from l0reg._linesearch import line_search
from l0reg._local_search import cd_polish, objective_from_residual


def _layouts(A):
    return [np.ascontiguousarray(A), np.asfortranarray(A)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_cols", [3, 400])
def test_restricted_products_match_numpy(dtype, n_cols):
    rng = np.random.default_rng(0)
    A = rng.standard_normal((700, 1000)).astype(dtype)
    idx = np.sort(rng.choice(1000, n_cols, replace=False))
    x, r = rng.standard_normal(n_cols), rng.standard_normal(700)
    for M in _layouts(A):
        design = Design(M)
        A64 = M.astype(np.float64)
        rtol = 1e-4 if dtype == np.float32 else 1e-10
        np.testing.assert_allclose(design.cols_matvec(idx, x), A64[:, idx] @ x, rtol=rtol, atol=rtol)
        np.testing.assert_allclose(design.cols_rmatvec(idx, r), A64[:, idx].T @ r, rtol=rtol, atol=rtol)
        np.testing.assert_allclose(design.col_sq(), (A64 ** 2).sum(axis=0), rtol=rtol)
        out = np.ones(700)
        design.add_cols(idx[:2], x[:2], out)
        np.testing.assert_allclose(out, 1 + A64[:, idx[:2]] @ x[:2], rtol=rtol, atol=rtol)


def _support_at(w, g, tau, k):
    return TopK(k).bind(w.size).support_on_line(w, g, tau)


@pytest.mark.parametrize("seed", range(5))
def test_path_events_are_the_support_changes(seed):
    """Between consecutive breakpoints the top-k set is constant and equals the
    start support with the reported swaps applied."""
    rng = np.random.default_rng(seed)
    p, k = 40, 8
    w = np.zeros(p)
    w[rng.choice(p, k, replace=False)] = rng.standard_normal(k)
    g = rng.standard_normal(p)
    proj = TopK(k).bind(p)
    start = proj.start_support(w, g)
    taus, leaving, entering = proj.path_events(w, g, start, 12)
    assert taus.size > 0 and np.all(np.diff(taus) > 0)
    current = set(start.tolist())
    edges = np.concatenate([[0.0], taus])
    for t in range(taus.size):
        mid = 0.5 * (edges[t] + edges[t + 1])
        assert set(_support_at(w, g, mid, k).tolist()) == current
        assert leaving[t] in current and entering[t] not in current
        current = (current - {leaving[t]}) | {entering[t]}
    if taus.size < 12:  # the path has no further breakpoint
        assert set(_support_at(w, g, 2 * taus[-1] + 1, k).tolist()) == current


def _problem(seed, n=60, p=30, k=6, lam=0.05):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, p)) * np.exp(rng.standard_normal(p))
    w_bar = rng.standard_normal(p)
    b = A @ w_bar + rng.standard_normal(n)
    return A, b, k, lam, w_bar


@pytest.mark.parametrize("seed", range(5))
def test_line_search_returns_a_feasible_better_point_with_its_true_objective(seed):
    A, b, k, lam, w_bar = _problem(seed)
    n, p = A.shape
    design = Design(A)
    proj = TopK(k).bind(p)
    rng = np.random.default_rng(seed)
    w = np.zeros(p)
    w[rng.choice(p, k, replace=False)] = rng.standard_normal(k)
    r = b - A @ w
    nlam = n * lam
    scale, inv_diag = jacobi_scale(design, nlam)
    g = (-(A.T @ r) + nlam * (w - w_bar)) * inv_diag
    value, tau, support, r_new, _ = line_search(design, proj, r, w, g, w_bar, nlam, scale)
    w_new = np.zeros(p)
    w_new[support] = w[support] - tau * g[support]
    assert support.size <= k
    assert value <= objective(A, b, w, lam, w_bar) + 1e-9
    np.testing.assert_allclose(value, objective(A, b, w_new, lam, w_bar), rtol=1e-9)
    np.testing.assert_allclose(r_new, b - A @ w_new, atol=1e-8)
    # Exact on the first piece: no step of the first support does better.
    first = proj.start_support(scale * w, scale * g)
    taus = np.linspace(0, 10 * max(tau, 1e-3), 2001)
    grid = []
    for t in taus:
        x = np.zeros(p)
        x[first] = w[first] - t * g[first]
        grid.append(objective(A, b, x, lam, w_bar))
    assert value <= min(grid) + 1e-9


@pytest.mark.parametrize("n, size", [(50, 10), (20, 25)])  # Cholesky and Woodbury branches
@pytest.mark.parametrize("lam", [0.0, 0.1])
def test_backsolve_matches_normal_equations(n, size, lam):
    rng = np.random.default_rng(1)
    A = rng.standard_normal((n, 40))
    b = rng.standard_normal(n)
    w_bar = rng.standard_normal(40)
    support = np.sort(rng.choice(40, size, replace=False))
    w = ridge_on_support(Design(A), b, support, w_bar, n * lam)
    As = A[:, support]
    if lam > 0:
        expected = np.linalg.solve(As.T @ As + n * lam * np.eye(size), As.T @ b + n * lam * w_bar[support])
    else:  # minimum-norm least squares when underdetermined
        expected = w_bar[support] + np.linalg.lstsq(As, b - As @ w_bar[support], rcond=None)[0]
    np.testing.assert_allclose(w[support], expected, rtol=1e-7, atol=1e-8)
    assert np.count_nonzero(np.delete(w, support)) == 0


@pytest.mark.parametrize("order", ["C", "F"])
def test_row_gram_updates_equal_the_direct_product(order):
    rng = np.random.default_rng(2)
    A = np.asarray(rng.standard_normal((30, 500), dtype=np.float32), order=order)
    design = Design(A)
    A64 = A.astype(np.float64)
    support = np.sort(rng.choice(500, 200, replace=False))
    steps = [support, np.union1d(support[5:], [s for s in range(500) if s not in support][:7]),  # small change
             np.arange(0, 500, 3), np.arange(300)]  # large changes: recomputed
    for S in steps:
        K = design.row_gram(S)
        np.testing.assert_allclose(K, A64[:, S] @ A64[:, S].T, rtol=1e-10, atol=1e-9)
    # the refit built on it still matches the normal equations after an update (float64: exact products)
    b, w_bar = rng.standard_normal(30), rng.standard_normal(500)
    S = steps[1]
    design = Design(np.asarray(A64, order=order))
    ridge_on_support(design, b, steps[0], w_bar, 3.0)
    w = ridge_on_support(design, b, S, w_bar, 3.0)
    As = A64[:, S]
    expected = np.linalg.solve(As.T @ As + 3.0 * np.eye(S.size), As.T @ b + 3.0 * w_bar[S])
    np.testing.assert_allclose(w[S], expected, rtol=1e-7, atol=1e-8)


def test_coordinate_descent_converges_to_the_backsolve():
    A, b, k, lam, w_bar = _problem(3)
    n = A.shape[0]
    design = Design(np.asfortranarray(A))
    support = np.arange(k)
    w = np.zeros(A.shape[1])
    r = b.copy()
    before = objective_from_residual(r, w, w_bar, n * lam)
    cd_polish(design, w, r, w_bar, n * lam, support, max_sweeps=5000, tol=0.0)
    exact = ridge_on_support(design, b, support, w_bar, n * lam)
    assert objective_from_residual(r, w, w_bar, n * lam) < before
    np.testing.assert_allclose(w, exact, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(r, b - A @ w, atol=1e-8)


def test_small_designs_run_on_one_blas_thread():
    from threadpoolctl import threadpool_info

    from l0reg._threads import SINGLE_THREAD_MAX_ENTRIES, blas_threads_for

    def blas_threads():
        return {info["filepath"]: info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"}

    before = blas_threads()
    with blas_threads_for(1000 * 500):
        assert set(blas_threads().values()) == {1}
    assert blas_threads() == before
    with blas_threads_for(SINGLE_THREAD_MAX_ENTRIES):
        assert blas_threads() == before


def test_large_refit_grams_get_the_callers_blas_threads():
    from threadpoolctl import threadpool_info, threadpool_limits

    from l0reg._threads import THREADED_GRAM_MIN_FLOPS, gram_blas_threads, single_blas_thread

    def blas_threads():
        return {info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"}

    with threadpool_limits(2, user_api="blas"):
        with single_blas_thread():
            with gram_blas_threads(THREADED_GRAM_MIN_FLOPS):
                assert blas_threads() == {2}
            with gram_blas_threads(THREADED_GRAM_MIN_FLOPS / 2):
                assert blas_threads() == {1}
            with single_blas_thread(), gram_blas_threads(THREADED_GRAM_MIN_FLOPS):
                assert blas_threads() == {1}  # a caller that asked for one thread keeps it
        with gram_blas_threads(THREADED_GRAM_MIN_FLOPS):  # outside a refit: no change
            assert blas_threads() == {2}


@pytest.mark.parametrize("build", ["serial", "parallel"])
@pytest.mark.parametrize("runs", [1, 2, 3])
def test_column_run_kernels_match_numpy(build, runs):
    """Every run split, over more rows than one accumulator slice (``_ACC_ROWS``) and columns out of order."""
    from l0reg import _kernels as kern
    rng = np.random.default_rng(runs)
    n = 2 * kern._ACC_ROWS + 5
    A = np.asfortranarray(rng.standard_normal((n, 40)).astype(np.float32))
    idx = rng.choice(40, 11, replace=False).astype(np.int64)
    x, y = rng.standard_normal(11), rng.standard_normal(11)
    A64 = A.astype(np.float64)
    pick = (lambda k: k.parallel) if build == "parallel" else (lambda k: k)
    out = np.zeros((1, n))
    pick(kern.cols_matmul_f)(A, idx, x.reshape(-1, 1), out, runs)
    np.testing.assert_allclose(out[0], A64[:, idx] @ x, rtol=1e-12, atol=1e-12)
    out = np.stack([np.ones(n), np.full(n, 2.0)])
    pick(kern.cols_matmul_f)(A, idx, np.column_stack([x, y]), out, runs)
    np.testing.assert_allclose(out[0], 1 + A64[:, idx] @ x, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out[1], 2 + A64[:, idx] @ y, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("order", ["C", "F"])
def test_gather_cols_scales_a_row_range(order):
    from l0reg import _kernels as kern
    rng = np.random.default_rng(0)
    A = np.asarray(rng.standard_normal((30, 20)).astype(np.float32), order=order)
    idx = np.array([7, 2, 19], dtype=np.int64)
    out = np.empty((12, 3), order="F")
    kern.gather_cols(A, idx, 5, 17, 0.5, out)
    np.testing.assert_array_equal(out, 0.5 * A[5:17][:, idx].astype(np.float64))


@pytest.mark.parametrize("size", [0, 1, 3, 5, 1 << 18, (1 << 18) + 1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_abs_is_exact_on_every_chunk_remainder(size, dtype):
    from l0reg import _kernels as kern
    x = np.random.default_rng(size).standard_normal(size).astype(dtype)
    if size:
        x[size // 2] = -7.5  # the extreme in the middle, negative
    for kernel in (kern.max_abs, kern.max_abs.parallel):
        assert kernel(x) == (7.5 if size else 0.0)


def test_large_refits_are_remembered_per_problem_arrays(monkeypatch):
    from l0reg import _backsolve
    rng = np.random.default_rng(0)
    A = np.asfortranarray(rng.standard_normal((20, 300)))
    b, w_bar = rng.standard_normal(20), rng.standard_normal(300)
    design, support = Design(A), np.arange(0, 300, 3)
    calls = []
    monkeypatch.setattr(_backsolve, "_ridge_on_support", lambda *args: calls.append(1) or np.ones(300))
    first = ridge_on_support(design, b, support, w_bar, 0.5)
    first[:] = 0.0  # the caller's copy: the remembered one is unchanged
    np.testing.assert_array_equal(ridge_on_support(design, b, support, w_bar, 0.5), np.ones(300))
    assert len(calls) == 1
    ridge_on_support(design, b.copy(), support, w_bar, 0.5)  # other arrays, other values: solved again
    ridge_on_support(design, b, support, w_bar, 0.25)
    ridge_on_support(Design(A), b, support, w_bar, 0.5)
    assert len(calls) == 4
