"""scikit-learn estimator for L0-constrained ridge regression (best subset selection)."""
import logging

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from ._validation import (check_nonnegative, check_nonnegative_int, check_positive_int,
                          check_sample_weight, check_vector)
from .solver import solve

logger = logging.getLogger(__name__)

_FLOAT_DTYPES = [np.float64, np.float32]


def check_numeric(x, name):
    """Refuse string data and object data that are not numbers, naming ``x``
    (numeric object arrays pass: scikit-learn converts them)."""
    dtype = getattr(x, "dtype", None)
    if not isinstance(dtype, np.dtype):  # lists, data frames, extension dtypes
        dtype = np.asarray(x).dtype
    if dtype.kind not in "OUS":
        return
    if dtype.kind in "US":
        raise ValueError(f"{name} has string dtype {dtype}; convert it to numbers explicitly")
    try:
        np.asarray(x).astype(np.float64)
    except (TypeError, ValueError) as err:
        raise type(err)(f"{name} must contain numbers only: {err}") from err


def centred_problem(X, y, sample_weight, fit_intercept):
    """Reduce a (weighted, intercept-fitting) fit to ``min ½‖b − A w‖²``.

    With weights s, ``½Σ sᵢ(yᵢ − c − xᵢᵀw)²`` is minimised over the intercept by
    ``c = ȳ − x̄ᵀw`` (s-weighted means), leaving ``A = √s ⊙ (X − x̄)`` and
    ``b = √s ⊙ (y − ȳ)``; rows of zero weight are dropped. ``X`` is never
    written to. Returns ``(A, b, x_offset, y_offset, n_eff)`` with
    ``n_eff = Σ s`` (the number of rows without weights).
    """
    p = X.shape[1]
    if sample_weight is None:
        n_eff = float(X.shape[0])
        if fit_intercept:
            x_offset = X.mean(axis=0, dtype=np.float64).astype(X.dtype)
            y_offset = float(y.mean(dtype=np.float64))
            return X - x_offset, y - y.dtype.type(y_offset), x_offset, y_offset, n_eff
        A = X if (X.flags.c_contiguous or X.flags.f_contiguous) else np.ascontiguousarray(X)
        return A, y, np.zeros(p, dtype=X.dtype), 0.0, n_eff
    keep = sample_weight > 0
    X, y, sw = X[keep], y[keep], sample_weight[keep]
    n_eff = float(sw.sum(dtype=np.float64))
    if fit_intercept:
        x_offset = (sw.astype(np.float64) @ X / n_eff).astype(X.dtype)
        y_offset = float(sw.astype(np.float64) @ y / n_eff)
    else:
        x_offset, y_offset = np.zeros(p, dtype=X.dtype), 0.0
    root = np.sqrt(sw)
    return root[:, None] * (X - x_offset), root * (y - y.dtype.type(y_offset)), x_offset, y_offset, n_eff


class L0LinearModel(RegressorMixin, BaseEstimator):
    """What the L0 estimators share once a solution is found: fitted
    attributes, ``predict`` and the scikit-learn tags."""

    def _set_solution(self, result, x_offset, y_offset, fit_intercept):
        self.result_ = result
        self.coef_ = result.coef
        self.support_ = result.support
        self.objective_ = result.objective
        self.n_iter_ = result.n_iter
        self.intercept_ = y_offset - float(x_offset.astype(np.float64) @ result.coef) if fit_intercept else 0.0

    def _validate_xy(self, X, y):
        """``(X, y)`` as float arrays (y in the dtype of X), numeric data only."""
        check_numeric(X, "X")
        check_numeric(y, "y")
        X, y = validate_data(self, X, y, dtype=_FLOAT_DTYPES, y_numeric=True)
        return X, np.asarray(y, dtype=X.dtype)

    def predict(self, X):
        """``X @ coef_ + intercept_``."""
        check_is_fitted(self)
        check_numeric(X, "X")
        X = validate_data(self, X, reset=False, dtype=_FLOAT_DTYPES)
        return X @ self.coef_ + self.intercept_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # Dense, finite input and a single target only.
        tags.input_tags.sparse = False
        tags.input_tags.allow_nan = False
        tags.target_tags.multi_output = False
        return tags


class L0RidgeRegressor(L0LinearModel):
    """Linear regression with at most ``k`` nonzero coefficients and a ridge toward ``w_bar``.

    Minimises ``½Σ sᵢ(yᵢ − c − xᵢᵀw)² + (λ Σsᵢ / 2)‖w − w̄‖²`` subject to
    ``‖w‖₀ ≤ k`` (``sᵢ = 1`` without ``sample_weight``, so the penalty is
    ``(nλ/2)‖w − w̄‖²``). The intercept ``c`` is neither penalised nor counted
    in ``k``; ``w̄`` applies to the coefficients of the centred problem.

    Parameters
    ----------
    k : int, default=10
        Maximum number of nonzero coefficients. Values above ``n_features`` are
        clipped to ``n_features`` (the constraint is then inactive).
    lam : float, default=0.0
        Ridge strength λ >= 0 (per sample: the penalty scales with Σ sᵢ).
    fit_intercept : bool, default=True
        Fit an unpenalised intercept by centring ``X`` and ``y``.
    w_bar : array-like of shape (n_features,), default=None
        Centre of the ridge penalty (zeros when None).
    warm_start : bool, default=False
        Start from the previous ``coef_`` (when the number of features is unchanged).
    max_iter, tol, active_set, swaps :
        Passed to :func:`l0reg.solve`.

    Attributes
    ----------
    coef_ : ndarray of shape (n_features,)
        Coefficients, in the floating dtype of ``X`` (float32 is kept).
    intercept_ : float
    support_ : ndarray of int64
        Sorted indices of the nonzero coefficients.
    objective_ : float
        Objective of the centred, weighted problem at ``coef_``.
    n_iter_ : int
    result_ : SolveResult
    n_features_in_ : int
    """

    def __init__(self, k=10, lam=0.0, fit_intercept=True, w_bar=None, warm_start=False,
                 max_iter=200, tol=1e-7, active_set="auto", swaps="auto"):
        self.k = k
        self.lam = lam
        self.fit_intercept = fit_intercept
        self.w_bar = w_bar
        self.warm_start = warm_start
        self.max_iter = max_iter
        self.tol = tol
        self.active_set = active_set
        self.swaps = swaps

    def _solve_kwargs(self):
        """Validated solver options shared with :class:`l0reg.path.L0RidgeCV`."""
        return dict(max_iter=check_positive_int(self.max_iter, "max_iter"),
                    tol=check_nonnegative(self.tol, "tol"),
                    active_set=self.active_set, swaps=self.swaps)

    def fit(self, X, y, sample_weight=None):
        """Fit the model; returns ``self``."""
        X, y = self._validate_xy(X, y)
        n_samples, p = X.shape
        k = min(check_nonnegative_int(self.k, "k"), p)
        lam = check_nonnegative(self.lam, "lam")
        solve_kwargs = self._solve_kwargs()
        w_bar = None if self.w_bar is None else check_vector(self.w_bar, p, X.dtype, "w_bar")
        if sample_weight is not None:
            sample_weight = check_sample_weight(sample_weight, n_samples, X.dtype)
        A, b, x_offset, y_offset, n_eff = centred_problem(X, y, sample_weight, bool(self.fit_intercept))
        w_init = None
        if self.warm_start and getattr(self, "coef_", None) is not None and self.coef_.shape == (p,):
            w_init = self.coef_
        # solve() penalises with A.shape[0]·lam; rescale so that the penalty is n_eff·lam.
        result = solve(A, b, k, lam=lam * n_eff / A.shape[0], w_bar=w_bar, w_init=w_init, **solve_kwargs)
        logger.debug("L0RidgeRegressor.fit: n=%d p=%d k=%d -> %r", n_samples, p, k, result)
        self._set_solution(result, x_offset, y_offset, self.fit_intercept)
        return self
