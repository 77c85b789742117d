"""Exact IHT line search for many rows at once, in Gram form.

Row objective, relative to the dense row ``w̄`` (``d = w − w̄``, ``e = c − H w̄``):

    F(w) = ½ dᵀH d − eᵀd + (λ/2)‖d‖².

A step from the feasible ``w`` follows the path ``τ ↦ P(w − τ δ)`` with the
Jacobi direction ``δ = ∇F / (diag H + λ)`` and the projection ranking by
``s_j |w_j − τ δ_j|``, ``s = √(diag H + λ)``. On a piece of the path with
support S the point is ``u − τ v`` (u = w on S, v = δ on S) and

    φ_S(τ) = F(u) − τ ∇F(u)·v + ½ τ² vᵀ(H + λ)v,

minimised exactly over τ ≥ 0 (``P_S(w − τ δ)`` is feasible for every τ). The
search keeps ``H(u − w̄)`` and ``H v`` for the current S: moving one coordinate
in or out of S costs one row of H (O(p)). ``H v`` for the first support comes
from one batched product ``V @ H`` (the only O(p²) work of a step), and the
new ``H d`` is ``H(u − w̄) − τ H v``, so the next gradient needs no product.

Visited supports: the pieces up to the ``n_events``-th breakpoint (exact, from
the projection). F never increases: the first piece contains τ = 0, i.e. ``w``
itself. (Sampling supports beyond the breakpoints at geometric τ, as a longer
reach, gained nothing over more breakpoints on SmolLM2's layers and was dropped.)
"""
import numpy as np
from numba import njit

from ._gram_supports import group_topn_into, start_into, support_indices
from ._kernels import _overtake_time, topk_path_events
from ._threads import over_rows


@njit(cache=True, nogil=True, fastmath=True)
def _directions_chunk(lo, hi, rows, W, Wbar, E, HD, inv_diag, scale, lam, ks, n, m, Delta, masks, V):
    """:func:`directions` of the rows ``rows[lo:hi]`` (a chunk of :func:`~._threads.over_rows`)."""
    p = W.shape[1]
    sw = np.empty(p)
    sd = np.empty(p)
    for t in range(lo, hi):
        i = rows[t]
        for j in range(p):
            d = W[i, j] - Wbar[i, j]
            Delta[t, j] = (HD[i, j] - E[i, j] + lam * d) * inv_diag[j]
            sw[j] = scale[j] * W[i, j]
            sd[j] = scale[j] * Delta[t, j]
        start_into(sw, sd, ks[i], n, m, masks[t])
        for j in range(p):
            if masks[t, j]:
                V[t, j] = Delta[t, j]


def directions(rows, W, Wbar, E, HD, inv_diag, scale, lam, ks, n, m):
    """Jacobi directions ``δ = ∇F·inv_diag`` and the first supports S₀ of the
    paths, for the rows ``rows``; returns ``(Delta, masks0, V = δ on S₀)``."""
    a, p = rows.shape[0], W.shape[1]
    Delta, masks, V = np.empty((a, p)), np.zeros((a, p), dtype=np.bool_), np.zeros((a, p))
    over_rows(_directions_chunk, a, rows, W, Wbar, E, HD, inv_diag, scale, float(lam), ks, int(n), int(m),
              Delta, masks, V)
    return Delta, masks, V


@njit(cache=True, fastmath=True)
def _toggle(H, j, a, b, hd, hv):
    """``H(u − w̄) += a H_j`` and ``H v += b H_j``: coordinate j enters S (``a = w_j``, ``b = δ_j``) or leaves it
    (``−w_j``, ``−δ_j``).  The caller sets the mask: a bool argument would compile twice (literal
    True and False)."""
    if a == 0.0 and b == 0.0:
        return
    row = H[j]
    for t in range(row.shape[0]):
        hd[t] += a * row[t]
        hv[t] += b * row[t]


@njit(cache=True, fastmath=True)
def _minimize(mask, w, wbar, e, delta, hd, hv, lam):
    """``(τ*, φ_S(τ*))`` for the current support S."""
    val = 0.0
    slope = 0.0
    curv = 0.0
    for j in range(w.shape[0]):
        uj = w[j] if mask[j] else 0.0
        d = uj - wbar[j]
        val += 0.5 * d * hd[j] - e[j] * d + 0.5 * lam * d * d
        if mask[j]:
            slope += (hd[j] - e[j] + lam * d) * delta[j]
            curv += delta[j] * (hv[j] + lam * delta[j])
    tau = slope / curv if curv > 0.0 and slope > 0.0 else 0.0
    return tau, val - tau * slope + 0.5 * tau * tau * curv


@njit(cache=True)
def _largest_outside(y, mask0, count):
    """The ``count`` indices outside S₀ of largest ``|y|``, largest first (ties: lowest index);
    one pass with a short sorted list (``count`` is a few events). The in-kernel counterpart of
    ``projection.largest`` (numpy, a partition: the better choice for large counts)."""
    idx = np.empty(count, dtype=np.int64)
    val = np.empty(count)
    filled = 0
    if count <= 0:
        return idx
    for j in range(y.shape[0]):
        if mask0[j]:
            continue
        v = abs(y[j])
        if filled == count and v <= val[count - 1]:
            continue
        pos = filled if filled < count else count - 1
        while pos > 0 and val[pos - 1] < v:
            if pos < count:
                idx[pos], val[pos] = idx[pos - 1], val[pos - 1]
            pos -= 1
        idx[pos], val[pos] = j, v
        filled = min(filled + 1, count)
    return idx[:filled]


@njit(cache=True)
def _group_next(x, y, cur, lo, hi, tau):
    """First ``t > tau`` at which an entry outside the group's support overtakes one inside."""
    best = np.inf
    for a in range(lo, hi):
        if cur[a]:
            for b in range(lo, hi):
                if not cur[b]:
                    best = min(best, _overtake_time(x[a], y[a], x[b], y[b], tau))
    return best


@njit(cache=True)
def _group_after(x, y, lo, hi, tau):
    """First ``t > tau`` at which two magnitudes of the group cross (``2τ`` when none)."""
    best = np.inf
    for a in range(lo, hi):
        for b in range(a + 1, hi):
            for sgn in (1.0, -1.0):
                den = y[a] - sgn * y[b]
                if den != 0.0:
                    t = (x[a] - sgn * x[b]) / den
                    if tau < t < best:
                        best = t
    return best if np.isfinite(best) else 2.0 * tau


@njit(cache=True)
def _nm_events(x, y, mask0, n, m, max_events):
    """Breakpoints of the N:M path ``τ ↦ supp P(x − τ y)``. Groups change independently: each
    keeps the time its support next changes (an outside magnitude overtaking an inside one);
    the earliest group is re-ranked just after that time and its next time recomputed."""
    p = x.shape[0]
    n_groups = -(-p // m)
    next_t = np.empty(n_groups)
    cur = mask0.copy()
    for g in range(n_groups):
        next_t[g] = _group_next(x, y, cur, g * m, min(g * m + m, p), 0.0)
    taus = np.empty(max_events)
    leaving = np.empty(max_events, dtype=np.int64)
    entering = np.empty(max_events, dtype=np.int64)
    new = mask0.copy()
    score = np.empty(p)
    n_ev = 0
    # A group is picked at most once per crossing of two of its magnitudes (2 per pair).
    for _ in range(n_groups * m * m + 1):
        if n_ev == max_events:
            break
        g = np.argmin(next_t)
        tau = next_t[g]
        if not np.isfinite(tau):
            break
        lo, hi = g * m, min(g * m + m, p)
        mid = 0.5 * (tau + _group_after(x, y, lo, hi, tau))
        for j in range(lo, hi):
            score[j] = abs(x[j] - mid * y[j])
        group_topn_into(score, lo, hi, n, new)
        outs = [j for j in range(lo, hi) if cur[j] and not new[j]]
        ins = [j for j in range(lo, hi) if new[j] and not cur[j]]
        for q in range(min(len(outs), max_events - n_ev)):
            taus[n_ev] = tau
            leaving[n_ev] = outs[q]
            entering[n_ev] = ins[q]
            n_ev += 1
        for j in range(lo, hi):
            cur[j] = new[j]
        next_t[g] = _group_next(x, y, cur, lo, hi, tau)
    return taus[:n_ev], leaving[:n_ev], entering[:n_ev]


@njit(cache=True, fastmath=True)
def _row_search(H, w, wbar, e, delta, hd0, hv0, mask0, lam, events, out_w, out_hd):
    """Line search of one row along the breakpoints ``events = (taus, leaving, entering)`` of its path;
    writes the new row and ``H(w_new − w̄)``, returns F(w_new)."""
    p = w.shape[0]
    mask = mask0.copy()
    hd = hd0.copy()
    hv = hv0.copy()
    best_tau, best_val = _minimize(mask, w, wbar, e, delta, hd, hv, lam)
    best_mask = mask.copy()
    best_hd = hd.copy()
    best_hv = hv.copy()
    taus, leaving, entering = events
    for t in range(taus.shape[0]):
        i, j = leaving[t], entering[t]
        mask[i] = False
        _toggle(H, i, -w[i], -delta[i], hd, hv)
        mask[j] = True
        _toggle(H, j, w[j], delta[j], hd, hv)
        tau, val = _minimize(mask, w, wbar, e, delta, hd, hv, lam)
        if val < best_val:
            # Element loops, not ``best_mask[:] = mask``: Numba's array-to-array assignment compiles a
            # shape-mismatch message (string formatting), 5 of the solver's 40 s first-call compile.
            for q in range(p):
                best_mask[q] = mask[q]
                best_hd[q] = hd[q]
                best_hv[q] = hv[q]
            best_tau, best_val = tau, val
    for j in range(p):
        out_w[j] = w[j] - best_tau * delta[j] if best_mask[j] else 0.0
        out_hd[j] = best_hd[j] - best_tau * best_hv[j]
    return best_val


# Two chunk kernels, one per constraint, rather than one branching on m: a layer compiles only the
# breakpoints it uses (the N:M ones cost 2 s of compile, the top-k ones 3 s).
@njit(cache=True, nogil=True)
def _topk_search_chunk(lo, hi, H, rows, W, Wbar, E, HD, Delta, HV, masks0, scale, lam, n, m, n_events,
                       W_new, HD_new, values):
    """:func:`_row_search` of the rows ``rows[lo:hi]`` under top-k budgets."""
    for t in range(lo, hi):
        i = rows[t]
        x, y = scale * W[i], scale * Delta[t]
        support = support_indices(masks0[t])
        rays = _largest_outside(y, masks0[t], min(n_events + 1, x.shape[0] - support.shape[0]))
        events = topk_path_events(x, y, support, rays, n_events)
        values[t] = _row_search(H, W[i], Wbar[i], E[i], Delta[t], HD[i], HV[t], masks0[t], lam, events,
                                W_new[t], HD_new[t])


@njit(cache=True, nogil=True)
def _nm_search_chunk(lo, hi, H, rows, W, Wbar, E, HD, Delta, HV, masks0, scale, lam, n, m, n_events,
                     W_new, HD_new, values):
    """:func:`_row_search` of the rows ``rows[lo:hi]`` under an N:M pattern."""
    for t in range(lo, hi):
        i = rows[t]
        events = _nm_events(scale * W[i], scale * Delta[t], masks0[t], n, m, n_events)
        values[t] = _row_search(H, W[i], Wbar[i], E[i], Delta[t], HD[i], HV[t], masks0[t], lam, events,
                                W_new[t], HD_new[t])


def line_search_rows(H, rows, W, Wbar, E, HD, Delta, HV, masks0, scale, lam, n, m, n_events):
    """:func:`_row_search` for every row of ``rows`` (row t of Delta/HV/masks0 is
    row ``rows[t]`` of the others); returns the new rows, their ``H d`` and F."""
    a, p = rows.shape[0], W.shape[1]
    W_new, HD_new, values = np.empty((a, p)), np.empty((a, p)), np.empty(a)
    over_rows(_topk_search_chunk if m == 0 else _nm_search_chunk, a, H, rows, W, Wbar, E, HD, Delta, HV, masks0,
              scale, float(lam), int(n), int(m), int(n_events), W_new, HD_new, values)
    return W_new, HD_new, values
