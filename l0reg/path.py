"""Solutions over a range of sparsity levels, and k chosen by cross-validation."""
import logging

import numpy as np
from sklearn.metrics import check_scoring, get_scorer
from sklearn.model_selection import check_cv
from sklearn.utils.parallel import Parallel, delayed

from ._validation import check_ks, check_matrix, check_nonnegative, check_vector
from .estimator import L0LinearModel, L0RidgeRegressor, centred_problem
from .solver import solve

logger = logging.getLogger(__name__)

_DEFAULT_MAX_K = 20


def l0_path(A, b, ks, *, lam=0.0, w_bar=None, **solve_kwargs):
    """Solve ``min F(w) s.t. ‖w‖₀ ≤ k`` for each k of the increasing sequence ``ks``.

    The solve for ``k_i`` starts from the solution for ``k_{i−1}`` (feasible,
    since it has at most ``k_{i−1} < k_i`` nonzeros), so the objectives do not
    increase along the path. A ``w_init`` in ``solve_kwargs`` starts the first
    solve. Returns one :class:`l0reg.SolveResult` per k.
    """
    A = check_matrix(A, "A")
    ks = check_ks(ks, A.shape[1])
    w_init = solve_kwargs.pop("w_init", None)
    results = []
    for k in ks:
        result = solve(A, b, k, lam=lam, w_bar=w_bar, w_init=w_init, **solve_kwargs)
        logger.debug("l0_path: k=%d -> %r", k, result)
        results.append(result)
        w_init = result.coef
    return results


def _fitted_model(coef, intercept):
    """A fitted :class:`L0RidgeRegressor` with the given coefficients (for scorers)."""
    model = L0RidgeRegressor(k=int(np.count_nonzero(coef)))
    model.coef_, model.intercept_, model.n_features_in_ = coef, intercept, coef.shape[0]
    return model


def _fold_scores(X, y, train, test, ks, lam, w_bar, fit_intercept, scorer, solve_kwargs):
    """Test scores along the path fitted on the training rows of one fold."""
    A, b, x_offset, y_offset, _ = centred_problem(X[train], y[train], None, fit_intercept)
    results = l0_path(A, b, ks, lam=lam, w_bar=w_bar, **solve_kwargs)
    x_offset = x_offset.astype(np.float64)
    return [scorer(_fitted_model(r.coef, y_offset - float(x_offset @ r.coef)), X[test], y[test])
            for r in results]


class L0RidgeCV(L0LinearModel):
    """:class:`L0RidgeRegressor` with ``k`` selected by K-fold cross-validation.

    On each fold the path over ``ks`` is fitted (warm-started from the previous
    k) on the training rows and scored on the held-out rows; ``k_`` maximises
    the mean score (ties go to the smaller k) and the model is then refitted
    on all rows along the path up to ``k_``.

    Parameters
    ----------
    ks : sequence of int, default=None
        Increasing candidate sparsity levels ``>= 0``; levels above
        ``n_features`` are clipped to it. ``range(1, min(n_features, 20) + 1)``
        when None.
    lam, fit_intercept, w_bar, max_iter, tol, active_set, swaps :
        As in :class:`L0RidgeRegressor` (λ is per sample, so it means the same
        on a fold as on all rows).
    cv : int, cross-validation generator or iterable, default=5
        Passed to :func:`sklearn.model_selection.check_cv`.
    scoring : str or callable, default=None
        Scorer (greater is better); None means negative mean squared error.
    n_jobs : int, default=None
        Number of folds fitted in parallel (joblib).

    Attributes
    ----------
    k_ : int
    cv_results_ : dict
        ``"ks"``, ``"mean_test_score"``, ``"std_test_score"`` and
        ``"split{i}_test_score"``, one entry per k.
    best_score_ : float
        Mean test score of ``k_``.
    coef_, intercept_, support_, objective_, n_iter_, result_, n_features_in_ :
        Of the refitted model, as in :class:`L0RidgeRegressor`.
    """

    def __init__(self, ks=None, lam=0.0, cv=5, fit_intercept=True, scoring=None, n_jobs=None,
                 w_bar=None, max_iter=200, tol=1e-7, active_set="auto", swaps="auto"):
        self.ks = ks
        self.lam = lam
        self.cv = cv
        self.fit_intercept = fit_intercept
        self.scoring = scoring
        self.n_jobs = n_jobs
        self.w_bar = w_bar
        self.max_iter = max_iter
        self.tol = tol
        self.active_set = active_set
        self.swaps = swaps

    def fit(self, X, y):
        """Select ``k_`` by cross-validation and refit on all rows; returns ``self``."""
        X, y = self._validate_xy(X, y)
        p = X.shape[1]
        ks = range(1, min(p, _DEFAULT_MAX_K) + 1) if self.ks is None else self.ks
        # Sparsity levels above n_features are clipped to it (the constraint is then inactive).
        ks = sorted({min(k, p) for k in check_ks(ks, np.inf)})
        lam = check_nonnegative(self.lam, "lam")
        w_bar = None if self.w_bar is None else check_vector(self.w_bar, p, X.dtype, "w_bar")
        solve_kwargs = L0RidgeRegressor(max_iter=self.max_iter, tol=self.tol, active_set=self.active_set,
                                        swaps=self.swaps)._solve_kwargs()
        fit_intercept = bool(self.fit_intercept)
        scorer = get_scorer("neg_mean_squared_error") if self.scoring is None else check_scoring(
            L0RidgeRegressor(), scoring=self.scoring)
        splits = list(check_cv(self.cv, y, classifier=False).split(X, y))

        fold_scores = Parallel(n_jobs=self.n_jobs)(
            delayed(_fold_scores)(X, y, train, test, ks, lam, w_bar, fit_intercept, scorer, solve_kwargs)
            for train, test in splits)
        scores = np.asarray(fold_scores, dtype=np.float64)  # folds × ks
        mean = scores.mean(axis=0)
        best = int(np.argmax(mean))
        self.k_ = ks[best]
        self.best_score_ = float(mean[best])
        self.cv_results_ = {"ks": np.asarray(ks), "mean_test_score": mean, "std_test_score": scores.std(axis=0)}
        for i, fold in enumerate(scores):
            self.cv_results_[f"split{i}_test_score"] = fold
        logger.debug("L0RidgeCV.fit: mean scores %s -> k_=%d", mean, self.k_)

        A, b, x_offset, y_offset, _ = centred_problem(X, y, None, fit_intercept)
        result = l0_path(A, b, ks[:best + 1], lam=lam, w_bar=w_bar, **solve_kwargs)[-1]
        self._set_solution(result, x_offset, y_offset, fit_intercept)
        return self
