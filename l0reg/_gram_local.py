"""Coordinate descent and 1-swaps on each row's support, exact from columns of H.

With the gradient ``g = ∇F(w)`` and ``h_j = H_jj + λ`` (F is quadratic):

- coordinate j to its optimum: ``w_j ← w_j − g_j/h_j``, F drops by ``g_j²/(2h_j)``;
- removing i ∈ S changes F by ``ρ_i = −w_i g_i + ½ h_i w_i²``; afterwards the
  gradient at j is ``g_j − w_i H_ij`` and inserting j at its optimum lowers F by
  ``(g_j − w_i H_ij)²/(2h_j)``. The swap (i, j) of largest exact decrease is
  taken, followed by one coordinate-descent sweep over S; every update of w
  updates g by one row of H (O(p)).

Under N:M the entering j must lie in the group of i. When the support has
room (fewer than k, or n in the group), plain insertions compete too.
"""
import numpy as np
from numba import njit, prange

from ._gram_supports import support_indices


@njit(cache=True, fastmath=True)
def _move(H, j, t, w, g, lam):
    """``w_j += t`` and the gradient update ``g += t (H_j + λ e_j)``."""
    w[j] += t
    row = H[j]
    for q in range(g.shape[0]):
        g[q] += t * row[q]
    g[j] += lam * t


@njit(cache=True, fastmath=True)
def _cd_sweep(H, hdiag, w, g, mask, lam):
    """One sweep of exact coordinate descent over S; returns the decrease of F."""
    drop = 0.0
    for j in range(w.shape[0]):
        if mask[j] and hdiag[j] > 0.0 and g[j] != 0.0:
            drop += 0.5 * g[j] * g[j] / hdiag[j]
            _move(H, j, -g[j] / hdiag[j], w, g, lam)
    return drop


@njit(cache=True)
def _has_room(mask, j, k, size, n, m):
    """Whether j can enter S without anything leaving."""
    if m == 0:
        return size < k
    lo = j - j % m
    return np.sum(mask[lo:min(lo + m, mask.shape[0])]) < n


@njit(cache=True, fastmath=True)
def _best_swap(H, hdiag, w, g, mask, k, n, m, n_remove):
    """``(change, i, j)`` of the best swap (i = −1: plain insertion of j)."""
    p = w.shape[0]
    size = 0
    for j in range(p):
        size += mask[j]
    rho = np.full(p, np.inf)
    for i in range(p):
        if mask[i]:
            rho[i] = -w[i] * g[i] + 0.5 * hdiag[i] * w[i] * w[i]
    order = np.argsort(rho)[:min(n_remove, size)]
    best, best_i, best_j = 0.0, -1, -1
    for j in range(p):
        if not mask[j] and hdiag[j] > 0.0 and -0.5 * g[j] * g[j] / hdiag[j] < best and _has_room(mask, j, k, size, n, m):
            best, best_j = -0.5 * g[j] * g[j] / hdiag[j], j
    for i in order:
        lo, hi = (0, p) if m == 0 else (i - i % m, min(i - i % m + m, p))
        row = H[i]
        for j in range(lo, hi):
            if not mask[j] and hdiag[j] > 0.0:
                gj = g[j] - w[i] * row[j]
                change = rho[i] - 0.5 * gj * gj / hdiag[j]
                if change < best:
                    best, best_i, best_j = change, i, j
    return best, best_i, best_j


@njit(cache=True, fastmath=True)
def _row_local(H, hdiag, w, g, mask, k, n, m, lam, value, max_swaps, n_remove, tol):
    """Swaps then CD sweeps on one row (in place); returns ``(F, n_swaps)``."""
    n_swaps = 0
    value -= _cd_sweep(H, hdiag, w, g, mask, lam)
    while n_swaps < max_swaps:
        change, i, j = _best_swap(H, hdiag, w, g, mask, k, n, m, n_remove)
        if not change < -tol * max(abs(value), 1e-300):
            break
        if i >= 0:
            _move(H, i, -w[i], w, g, lam)
            w[i] = 0.0
            mask[i] = False
        _move(H, j, -g[j] / hdiag[j], w, g, lam)
        mask[j] = True
        value += change
        n_swaps += 1
        value -= _cd_sweep(H, hdiag, w, g, mask, lam)
    return value, n_swaps


@njit(cache=True, parallel=True)
def local_search_rows(H, hdiag, W, G, masks, ks, n, m, lam, values, max_swaps, n_remove, tol):
    """:func:`_row_local` on every row (W, G, masks, values updated in place);
    returns the number of swaps per row."""
    r = W.shape[0]
    swaps = np.zeros(r, dtype=np.int64)
    for i in prange(r):
        values[i], swaps[i] = _row_local(H, hdiag, W[i], G[i], masks[i], ks[i], n, m, lam, values[i],
                                         max_swaps, n_remove, tol)
    return swaps


@njit(cache=True, fastmath=True)
def _refit_row(H, c, wbar, lam, mask, w):
    """Exact refit of one row on ``mask`` (w overwritten); returns ``(S, K⁻¹)``."""
    S = support_indices(mask)
    K = np.empty((S.size, S.size))
    rhs = np.empty(S.size)
    for a in range(S.size):
        rhs[a] = c[S[a]] + lam * wbar[S[a]]
        for b in range(S.size):
            K[a, b] = H[S[a], S[b]]
        K[a, a] += lam
    Kinv = np.linalg.pinv(K)
    w[:] = 0.0
    w[S] = Kinv @ rhs
    return S, Kinv


@njit(cache=True, fastmath=True)
def _row_exact_swaps(H, hdiag, c, wbar, lam, w, mask, k, n, m, value, max_swaps, tol):
    """1-swaps scored with the refit of the new support (one row, in place).

    With w refitted on S, ``K = H_SS + λI``, ``B = H_{:,S} K⁻¹`` and
    ``q_j = B_{j,:}·H_{S,j}``: removing i (and refitting) raises F by
    ``w_i²/(2 K⁻¹_ii)`` and moves the gradient at j to ``g_j − w_i B_ji / K⁻¹_ii``;
    inserting j then (refit included) lowers F by that squared over
    ``2(h_j − q_j + B_ji²/K⁻¹_ii)``. Returns ``(F, n_swaps)``.
    """
    p = w.shape[0]
    n_swaps = 0
    while True:
        S, Kinv = _refit_row(H, c, wbar, lam, mask, w)
        if n_swaps == max_swaps:
            break
        HS = np.ascontiguousarray(H[:, S])
        B = HS @ Kinv
        g = HS @ w[S] - c + lam * (w - wbar)
        q = np.sum(B * HS, axis=1)
        size = S.size
        best, best_i, best_j = 0.0, -1, -1
        for j in range(p):
            sigma = hdiag[j] - q[j]
            if not mask[j] and sigma > 0.0 and _has_room(mask, j, k, size, n, m):
                change = -0.5 * g[j] * g[j] / sigma
                if change < best:
                    best, best_i, best_j = change, -1, j
        for a in range(size):
            i = S[a]
            if Kinv[a, a] <= 0.0:
                continue
            lo, hi = (0, p) if m == 0 else (i - i % m, min(i - i % m + m, p))
            rise = 0.5 * w[i] * w[i] / Kinv[a, a]
            for j in range(lo, hi):
                if mask[j]:
                    continue
                sigma = hdiag[j] - q[j] + B[j, a] * B[j, a] / Kinv[a, a]
                if sigma <= 0.0:
                    continue
                gj = g[j] - w[i] * B[j, a] / Kinv[a, a]
                change = rise - 0.5 * gj * gj / sigma
                if change < best:
                    best, best_i, best_j = change, i, j
        if not best < -tol * max(abs(value), 1e-300):
            break
        if best_i >= 0:
            mask[best_i] = False
        mask[best_j] = True
        value += best
        n_swaps += 1
    return value, n_swaps


@njit(cache=True, parallel=True)
def exact_swaps_rows(H, hdiag, C, Wbar, W, masks, ks, n, m, lam, values, max_swaps, tol):
    """:func:`_row_exact_swaps` on every row (W, masks, values updated in place);
    returns the number of swaps per row."""
    r = W.shape[0]
    swaps = np.zeros(r, dtype=np.int64)
    for i in prange(r):
        values[i], swaps[i] = _row_exact_swaps(H, hdiag, C[i], Wbar[i], lam, W[i], masks[i], ks[i], n, m,
                                               values[i], max_swaps, tol)
    return swaps
