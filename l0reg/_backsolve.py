"""Exact ridge solution on a fixed support.

On S, with ``d = w_S − w̄_S`` and ``r̄ = b − A_S w̄_S``, the problem is
``min_d ½‖r̄ − A_S d‖² + (nλ/2)‖d‖²``, solved by

- Cholesky of ``A_Sᵀ A_S + nλ I`` (|S| × |S|) when |S| ≤ n, or
- Woodbury / push-through when n < |S|: ``d = A_Sᵀ (A_S A_Sᵀ + nλ I)⁻¹ r̄``,
  an n × n system, so the cost is O(n²|S|) instead of O(|S|³).

Gram matrices are accumulated in float64 over column blocks of ``A_S``, so a
float32 ``A`` is never upcast as a whole; ``A_S A_Sᵀ`` comes from
:meth:`Design.row_gram`, which updates the previous refit's product when the
support changed little. With λ = 0 and a singular system the
minimum-norm least-squares solution is returned.
"""
import numpy as np
import scipy.linalg

def _solve_psd(K, rhs):
    try:
        factor = scipy.linalg.cho_factor(K, lower=True, check_finite=False)
        return scipy.linalg.cho_solve(factor, rhs, check_finite=False)
    except np.linalg.LinAlgError:
        return scipy.linalg.lstsq(K, rhs, check_finite=False, lapack_driver="gelsd")[0]


def backsolve_cost(n, size):
    """Flop count of :func:`ridge_on_support` for ``size`` columns."""
    small, large = sorted((n, size))
    return small * small * large + small ** 3 / 3


def ridge_on_support(design, b, support, w_bar, nlam):
    """``argmin_{w : supp w ⊆ S} F(w)``, returned as a dense float64 vector."""
    support = np.asarray(support, dtype=np.int64)
    w = np.zeros(design.p)
    if support.size == 0:
        return w
    rbar = b - design.cols_matvec(support, w_bar[support])
    n = design.n
    if support.size <= n:
        G = np.zeros((support.size, support.size))
        rhs = np.zeros(support.size)
        for lo, blk in design.row_blocks(support):
            G += blk.T @ blk
            rhs += blk.T @ rbar[lo:lo + blk.shape[0]]
        G[np.diag_indices_from(G)] += nlam
        d = _solve_psd(G, rhs)
    else:
        K = design.row_gram(support).copy()
        K[np.diag_indices_from(K)] += nlam
        y = _solve_psd(K, rbar)
        d = np.empty(support.size)
        for lo, idx, blk in design.column_blocks(support):
            d[lo:lo + idx.size] = blk.T @ y
    w[support] = w_bar[support] + d
    return w
