"""Exact refit of many rows on their supports, in Gram form.

For a row with support S the best values solve the normal equations

    (H_SS + λ I) w_S = c_S + λ w̄_S,        w_j = 0 off S.

Rows are grouped by support size and factorised in chunks by LAPACK (batched
Cholesky, ``numpy.linalg.cholesky`` on a stack); the two triangular solves run
row-parallel in Numba. A chunk that is not positive definite (λ = 0 and a
rank-deficient ``H_SS``) is redone row by row, falling back to the
minimum-norm least-squares solution (SVD, rank-revealing) for the failing rows.
"""
import logging

import numpy as np
import scipy.linalg
from numba import njit, prange

logger = logging.getLogger(__name__)

# Entries of the stacked (rows × s × s) systems factorised at once (64 MB in float64).
_CHUNK_ENTRIES = 1 << 23


@njit(cache=True, parallel=True, fastmath=True)
def _cho_solve_batch(L, rhs):
    """Solve ``L Lᵀ x = rhs`` for each (L, rhs) of the stack."""
    b, s = rhs.shape
    out = np.empty((b, s))
    for t in prange(b):
        y = np.empty(s)
        for i in range(s):
            acc = rhs[t, i]
            for j in range(i):
                acc -= L[t, i, j] * y[j]
            y[i] = acc / L[t, i, i]
        Lt = L[t].T.copy()
        for i in range(s - 1, -1, -1):
            acc = y[i]
            for j in range(i + 1, s):
                acc -= Lt[i, j] * out[t, j]
            out[t, i] = acc / Lt[i, i]
    return out


def _solve_one(K, rhs):
    try:
        return scipy.linalg.cho_solve(scipy.linalg.cho_factor(K, lower=True, check_finite=False), rhs,
                                      check_finite=False)
    except np.linalg.LinAlgError:
        return scipy.linalg.lstsq(K, rhs, check_finite=False, lapack_driver="gelsd")[0]


def _solve_chunk(H, rhs, idx, lam):
    """Values on the supports ``idx`` (b × s) for right-hand sides ``rhs`` (b × s)."""
    K = H[idx[:, :, None], idx[:, None, :]]
    if lam:
        K[:, np.arange(idx.shape[1]), np.arange(idx.shape[1])] += lam
    try:
        return _cho_solve_batch(np.linalg.cholesky(K), rhs)
    except np.linalg.LinAlgError:
        logger.debug("refit: %d systems of size %d not positive definite; solving one by one", *idx.shape)
        return np.stack([_solve_one(K[t], rhs[t]) for t in range(idx.shape[0])])


def refit_rows(H, C, Wbar, lam, masks):
    """``argmin`` of each row's objective on the support ``masks[t]`` (float64, len(masks) × p).

    ``C`` and ``Wbar`` hold the rows matching ``masks`` (same first dimension).
    """
    rows, p = masks.shape
    out = np.zeros((rows, p))
    sizes = masks.sum(axis=1)
    for s in np.unique(sizes):
        if s == 0:
            continue
        group = np.flatnonzero(sizes == s)
        idx_all = np.nonzero(masks[group])[1].reshape(group.size, s)
        chunk = max(1, _CHUNK_ENTRIES // (int(s) * int(s)))
        for lo in range(0, group.size, chunk):
            rows_c, idx = group[lo:lo + chunk], idx_all[lo:lo + chunk]
            rhs = np.take_along_axis(C[rows_c], idx, axis=1)
            if lam:
                rhs = rhs + lam * np.take_along_axis(Wbar[rows_c], idx, axis=1)
            values = _solve_chunk(H, rhs, idx, lam)
            out[rows_c[:, None], idx] = values
    return out
