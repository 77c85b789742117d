"""Layer budgets: moving nonzeros between rows, one at a time per row and round.

Each row reports its cheapest removal (the rise of F when its best coordinate
to drop leaves the support) and its best insertion (the drop of F when the best
outside coordinate enters), both with the refit of the rest:

- exactly, ``w_i²/(2K⁻¹_ii)`` and ``g_j²/(2(h_j − q_j))`` with ``K = H_SS + λI``
  and ``q_j = H_{j,S} K⁻¹ H_{S,j}``, when ``p·|S|²`` is small;
- otherwise by the bounds without refit, ``−w_i g_i + ½h_i w_i²`` (an upper
  bound on the rise) and ``g_j²/(2h_j)`` (a lower bound on the drop).

Rows are paired, the largest insertion with the cheapest removal, while the
drop exceeds the rise; each pair moves one unit of budget and lowers the
layer's total F by at least the difference once both rows are refitted.
"""
import numpy as np
from numba import njit, prange

from ._gram_local import _refit_row


@njit(cache=True, fastmath=True)
def _row_marginals(H, hdiag, c, wbar, lam, w, g, mask, exact):
    """``(rise, i, drop, j)`` of one row (i = −1 / j = −1 when there is none)."""
    p = w.shape[0]
    q = np.zeros(p)
    kinv = np.empty(p)
    if exact:
        w = w.copy()
        S, Kinv = _refit_row(H, c, wbar, lam, mask, w)
        HS = np.ascontiguousarray(H[:, S])
        g = HS @ w[S] - c + lam * (w - wbar)
        q = np.sum((HS @ Kinv) * HS, axis=1)
        for a in range(S.size):
            kinv[S[a]] = Kinv[a, a]
    rise, best_i, drop, best_j = np.inf, -1, 0.0, -1
    for j in range(p):
        if mask[j]:
            if exact:
                cost = 0.5 * w[j] * w[j] / kinv[j] if kinv[j] > 0.0 else 0.0
            else:
                cost = -w[j] * g[j] + 0.5 * hdiag[j] * w[j] * w[j]
            if cost < rise:
                rise, best_i = cost, j
        elif hdiag[j] - q[j] > 0.0:
            gain = 0.5 * g[j] * g[j] / (hdiag[j] - q[j])
            if gain > drop:
                drop, best_j = gain, j
    return rise, best_i, drop, best_j


@njit(cache=True, parallel=True)
def marginals_rows(H, hdiag, C, Wbar, W, G, masks, lam, exact):
    """:func:`_row_marginals` for every row: arrays ``(rise, i, drop, j)``."""
    r = W.shape[0]
    rise, drop = np.empty(r), np.empty(r)
    leave, enter = np.empty(r, dtype=np.int64), np.empty(r, dtype=np.int64)
    for t in prange(r):
        rise[t], leave[t], drop[t], enter[t] = _row_marginals(H, hdiag, C[t], Wbar[t], lam, W[t], G[t],
                                                              masks[t], exact)
    return rise, leave, drop, enter


def pair_rows(rise, leave, drop, enter, tol):
    """Donor and recipient rows ``(donors, recipients)``: the k-th largest drop is
    paired with the k-th cheapest rise while the drop is larger; a row is used once."""
    donors = [i for i in np.argsort(rise, kind="stable") if leave[i] >= 0]
    recipients = [j for j in np.argsort(-drop, kind="stable") if enter[j] >= 0]
    used, pairs = set(), []
    for b in recipients:
        if b in used:
            continue
        a = next((a for a in donors if a not in used and a != b), None)
        if a is None or not drop[b] > rise[a] + tol:
            break
        pairs.append((a, b))
        used.update((a, b))
    return np.array([a for a, _ in pairs], dtype=np.int64), np.array([b for _, b in pairs], dtype=np.int64)
