"""l0_path (warm-started solutions over k) and L0RidgeCV (k chosen by cross-validation)."""
import joblib
import numpy as np
import pytest
from sklearn.metrics import make_scorer, mean_absolute_error
from sklearn.model_selection import KFold
from sklearn.utils.estimator_checks import parametrize_with_checks

import l0reg
import l0reg.path
from l0reg._brute_force import brute_force
from l0reg.path import L0RidgeCV, l0_path


@parametrize_with_checks([L0RidgeCV()])
def test_sklearn_compatible(estimator, check):
    check(estimator)


@pytest.mark.parametrize("lam, with_w_bar", [(0.0, False), (0.1, False), (0.1, True)])
def test_path_is_feasible_and_monotone(rng, lam, with_w_bar):
    n, p = 40, 15
    A = rng.standard_normal((n, p))
    b = A[:, :6] @ rng.standard_normal(6) + rng.standard_normal(n)
    w_bar = rng.standard_normal(p) if with_w_bar else None
    ks = [0, 1, 2, 3, 5, 8, 15]
    results = l0_path(A, b, ks, lam=lam, w_bar=w_bar)
    assert len(results) == len(ks)
    for k, result in zip(ks, results):
        assert isinstance(result, l0reg.SolveResult)
        assert np.count_nonzero(result.coef) <= k and result.support.size <= k
        assert result.objective == pytest.approx(l0reg.objective(A, b, result.coef, lam, w_bar), rel=1e-9)
    assert not results[0].coef.any()
    objectives = np.array([r.objective for r in results])
    assert (np.diff(objectives) <= 1e-12 * objectives[0]).all(), objectives
    # k = p is the unconstrained problem: its minimum is the exact ridge / least-squares fit.
    assert results[-1].objective == pytest.approx(brute_force(A, b, p, lam, w_bar)[1], rel=1e-9)


def test_path_warm_starts_from_the_previous_k(rng, monkeypatch):
    A = rng.standard_normal((30, 12))
    b = rng.standard_normal(30)
    w_init = rng.standard_normal(12)
    starts = []

    def recording_solve(*args, **kwargs):
        starts.append(kwargs["w_init"])
        return l0reg.solve(*args, **kwargs)

    monkeypatch.setattr(l0reg.path, "solve", recording_solve)
    results = l0_path(A, b, np.array([2, 4, 7]), lam=0.05, w_init=w_init, max_iter=50)
    assert starts[0] is w_init
    for previous, start in zip(results, starts[1:]):
        np.testing.assert_array_equal(start, previous.coef)
    for previous, current in zip(results, results[1:]):
        assert current.objective <= previous.objective


def test_path_accepts_range_and_float32(rng):
    A = rng.standard_normal((25, 6)).astype(np.float32)
    b = rng.standard_normal(25).astype(np.float32)
    results = l0_path(A, b, range(1, 4))
    assert [r.coef.dtype for r in results] == [np.float32] * 3
    assert [r.support.size <= k for k, r in zip(range(1, 4), results)] == [True] * 3


def _sparse_problem(sparse_regression):
    # Well conditioned (i.i.d. Gaussian design), SNR = Var(X w*)/σ² ≈ 90.
    X, y, w_true = sparse_regression(200, 30, 5, noise=0.5, seed=0)
    return X, y + 2.0, w_true


def test_cv_recovers_the_true_support(sparse_regression):
    X, y, w_true = _sparse_problem(sparse_regression)
    model = L0RidgeCV().fit(X, y)
    assert model.k_ == 5
    np.testing.assert_array_equal(model.support_, np.flatnonzero(w_true))
    np.testing.assert_allclose(model.coef_, w_true, atol=0.15)
    assert model.intercept_ == pytest.approx(2.0, abs=0.15)
    results = model.cv_results_
    np.testing.assert_array_equal(results["ks"], np.arange(1, 21))
    for key in ["mean_test_score", "std_test_score"] + [f"split{i}_test_score" for i in range(5)]:
        assert results[key].shape == (20,)
    assert results["mean_test_score"].argmax() == 4
    assert model.best_score_ == results["mean_test_score"][4]
    # Scores are negative MSEs, close to −σ² = −0.25 at the true k.
    assert -0.4 < model.best_score_ < 0
    assert model.score(X, y) > 0.99


def _manual_fold_scores(X, y, ks, n_folds, metric, lam=0.0, w_bar=None):
    """metric(y_test, prediction) per fold and k, from paths fitted on centred training rows."""
    scores = []
    for train, test in KFold(n_folds).split(X):
        Xt, yt = X[train], y[train]
        A, b = Xt - Xt.mean(axis=0), yt - yt.mean()
        scores.append([metric(y[test], X[test] @ r.coef + yt.mean() - Xt.mean(axis=0) @ r.coef)
                       for r in l0_path(A, b, ks, lam=lam, w_bar=w_bar)])
    return np.array(scores)


@pytest.mark.parametrize("lam, with_w_bar", [(0.0, False), (0.5, True)])
def test_cv_scores_are_fold_mses_along_the_path(sparse_regression, lam, with_w_bar):
    X, y, w_true = _sparse_problem(sparse_regression)
    ks = [1, 3, 5, 7]
    w_bar = w_true + 0.3 if with_w_bar else None
    model = L0RidgeCV(ks=ks, cv=KFold(3), lam=lam, w_bar=w_bar).fit(X, y)
    expected = -_manual_fold_scores(X, y, ks, 3, lambda t, q: np.mean((t - q) ** 2), lam, w_bar)
    for i, fold in enumerate(expected):
        np.testing.assert_allclose(model.cv_results_[f"split{i}_test_score"], fold, rtol=1e-10)
    np.testing.assert_allclose(model.cv_results_["mean_test_score"], expected.mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(model.cv_results_["std_test_score"], expected.std(axis=0), rtol=1e-8)
    assert model.k_ == ks[int(expected.mean(axis=0).argmax())]


def test_cv_custom_scoring_and_parallel_folds(sparse_regression):
    X, y, _ = _sparse_problem(sparse_regression)
    ks = [3, 5, 7]
    scorer = make_scorer(mean_absolute_error, greater_is_better=False)
    mae = L0RidgeCV(ks=ks, cv=3, scoring=scorer).fit(X, y)
    expected = -_manual_fold_scores(X, y, ks, 3, mean_absolute_error)
    np.testing.assert_allclose(mae.cv_results_["mean_test_score"], expected.mean(axis=0), rtol=1e-10)
    default = L0RidgeCV(ks=ks, cv=3).fit(X, y)
    named = L0RidgeCV(ks=ks, cv=3, scoring="neg_mean_squared_error").fit(X, y)
    np.testing.assert_array_equal(named.cv_results_["mean_test_score"], default.cv_results_["mean_test_score"])
    with joblib.parallel_backend("threading", n_jobs=2):
        parallel = L0RidgeCV(ks=ks, cv=3, n_jobs=2).fit(X, y)
    np.testing.assert_allclose(parallel.cv_results_["mean_test_score"], default.cv_results_["mean_test_score"])
    np.testing.assert_array_equal(parallel.coef_, default.coef_)


def test_cv_default_ks_are_capped(rng):
    X = rng.standard_normal((30, 3))
    y = X[:, 0] + 0.1 * rng.standard_normal(30)
    model = L0RidgeCV(cv=3).fit(X, y)
    np.testing.assert_array_equal(model.cv_results_["ks"], [1, 2, 3])
    assert model.k_ in (1, 2, 3)
