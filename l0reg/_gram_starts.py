"""Backward elimination in Gram form: an extra starting support for small rows.

From the full support, remove one coordinate at a time, the one whose removal
(with the refit of the rest) raises F least, ``w_i²/(2 K⁻¹_ii)`` with
``K = H_SS + λI`` (the optimal-brain-surgeon saliency), until the row is
feasible (≤ k entries, or ≤ n in every group of m). Each step refits exactly,
O(|S|³): for small p only. Forward selection needs no kernel of its own: the
exact swap search of ``_gram_local`` started from an empty support adds the
best coordinate while there is room.
"""
import numpy as np
from numba import njit, prange

from ._gram_local import _refit_row


@njit(cache=True)
def _removable(mask, i, k, size, n, m):
    """Whether removing i brings the row closer to feasibility."""
    if m == 0:
        return size > k
    lo = i - i % m
    return np.sum(mask[lo:min(lo + m, mask.shape[0])]) > n


@njit(cache=True, fastmath=True)
def _row_backward(H, c, wbar, lam, w, mask, k, n, m):
    mask[:] = True
    while True:
        S, Kinv = _refit_row(H, c, wbar, lam, mask, w)
        best, best_i = np.inf, -1
        for a in range(S.size):
            i = S[a]
            if _removable(mask, i, k, S.size, n, m):
                rise = w[i] * w[i] / Kinv[a, a] if Kinv[a, a] > 0.0 else 0.0
                if rise < best:
                    best, best_i = rise, i
        if best_i < 0:
            return
        mask[best_i] = False


@njit(cache=True, parallel=True)
def backward_rows(H, C, Wbar, lam, ks, n, m):
    """Backward-elimination supports and their refitted rows: ``(W, masks)``."""
    r, p = Wbar.shape
    W = np.zeros((r, p))
    masks = np.ones((r, p), dtype=np.bool_)
    for i in prange(r):
        _row_backward(H, C[i], Wbar[i], lam, W[i], masks[i], ks[i], n, m)
    return W, masks
