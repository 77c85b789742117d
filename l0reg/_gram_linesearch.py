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
the projection), then supports sampled at geometric τ while their distance to
the current one stays within ``max_changes`` coordinates. F never increases:
the first piece contains τ = 0, i.e. ``w`` itself.
"""
import numpy as np
from numba import njit, prange

from ._gram_supports import group_topn_into, start_into, support_into, topk_into
from ._kernels import topk_path_events


@njit(cache=True, parallel=True, fastmath=True)
def directions(rows, W, Wbar, E, HD, inv_diag, scale, lam, ks, n, m):
    """Jacobi directions ``δ = ∇F·inv_diag`` and the first supports S₀ of the
    paths, for the rows ``rows``; returns ``(Delta, masks0, V = δ on S₀)``."""
    p = W.shape[1]
    a = rows.shape[0]
    Delta = np.empty((a, p))
    masks = np.zeros((a, p), dtype=np.bool_)
    V = np.zeros((a, p))
    for t in prange(a):
        i = rows[t]
        sw = np.empty(p)
        sd = np.empty(p)
        for j in range(p):
            d = W[i, j] - Wbar[i, j]
            Delta[t, j] = (HD[i, j] - E[i, j] + lam * d) * inv_diag[j]
            sw[j] = scale[j] * W[i, j]
            sd[j] = scale[j] * Delta[t, j]
        start_into(sw, sd, ks[i], n, m, masks[t])
        for j in range(p):
            if masks[t, j]:
                V[t, j] = Delta[t, j]
    return Delta, masks, V


@njit(cache=True, fastmath=True)
def _toggle(H, j, wj, dj, enter, mask, hd, hv):
    """Move coordinate j into (``enter``) or out of S, updating ``H(u − w̄)`` and ``H v``."""
    sign = 1.0 if enter else -1.0
    a = sign * wj
    b = sign * dj
    mask[j] = enter
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


@njit(cache=True, fastmath=True)
def _keep_best(mask, w, wbar, e, delta, hd, hv, lam, best_tau, best_val, best_mask, best_hd, best_hv):
    """Minimise along the current support S; if that beats ``best_val``, copy S and its
    products into ``best_*``. Returns ``(best_tau, best_val, improved)``."""
    tau, val = _minimize(mask, w, wbar, e, delta, hd, hv, lam)
    if val < best_val:
        best_mask[:] = mask
        best_hd[:] = hd
        best_hv[:] = hv
        return tau, val, True
    return best_tau, best_val, False


@njit(cache=True)
def _topk_events(x, y, mask0, max_events):
    """Breakpoints of the top-k path from S₀ (``_kernels.topk_path_events``)."""
    support = np.flatnonzero(mask0)
    outside = np.where(mask0, -1.0, np.abs(y))
    n_rays = min(max_events + 1, x.shape[0] - support.shape[0])
    top = np.zeros(outside.shape[0], dtype=np.bool_)
    topk_into(outside, n_rays, top)
    rays = np.flatnonzero(top)
    rays = rays[np.argsort(-outside[rays], kind="mergesort")]
    return topk_path_events(x, y, support, rays, max_events)


@njit(cache=True)
def _nm_events(x, y, mask0, n, m, max_events):
    """Breakpoints of the N:M path ``τ ↦ supp P(x − τ y)``: within a group the
    ranking changes only where two magnitudes cross, ``x_a − τ y_a = ±(x_b − τ y_b)``;
    at each crossing (in increasing τ) the group is re-ranked just after it."""
    p = x.shape[0]
    roots = np.empty(p * max(m - 1, 1) * 2)
    groups = np.empty(roots.shape[0], dtype=np.int64)
    count = 0
    for lo in range(0, p, m):
        hi = min(lo + m, p)
        for a in range(lo, hi):
            for b in range(a + 1, hi):
                for sgn in (1.0, -1.0):
                    den = y[a] - sgn * y[b]
                    if den != 0.0:
                        t = (x[a] - sgn * x[b]) / den
                        if t > 0.0:
                            roots[count] = t
                            groups[count] = lo
                            count += 1
    order = np.argsort(roots[:count])
    taus = np.empty(max_events)
    leaving = np.empty(max_events, dtype=np.int64)
    entering = np.empty(max_events, dtype=np.int64)
    cur = mask0.copy()
    new = mask0.copy()
    n_ev = 0
    for t in range(count):
        if n_ev == max_events:
            break
        tau = roots[order[t]]
        after = 2.0 * tau
        for u in range(t + 1, count):
            if roots[order[u]] > tau:
                after = roots[order[u]]
                break
        mid = 0.5 * (tau + after)
        lo = groups[order[t]]
        hi = min(lo + m, p)
        group_topn_into(np.abs(x - mid * y), lo, hi, n, new)
        outs = [j for j in range(lo, hi) if cur[j] and not new[j]]
        ins = [j for j in range(lo, hi) if new[j] and not cur[j]]
        for q in range(min(len(outs), max_events - n_ev)):
            taus[n_ev] = tau
            leaving[n_ev] = outs[q]
            entering[n_ev] = ins[q]
            n_ev += 1
        for j in range(lo, hi):
            cur[j] = new[j]
    return taus[:n_ev], leaving[:n_ev], entering[:n_ev]


@njit(cache=True, fastmath=True)
def _row_search(H, w, wbar, e, delta, scale, hd0, hv0, mask0, k, n, m, lam,
                n_events, n_samples, max_changes, out_w, out_hd):
    """Line search of one row; writes the new row and ``H(w_new − w̄)``, returns F(w_new)."""
    p = w.shape[0]
    mask = mask0.copy()
    hd = hd0.copy()
    hv = hv0.copy()
    best_tau, best_val = _minimize(mask, w, wbar, e, delta, hd, hv, lam)
    best_mask = mask.copy()
    best_hd = hd.copy()
    best_hv = hv.copy()
    x = scale * w
    y = scale * delta
    if m == 0:
        taus, leaving, entering = _topk_events(x, y, mask0, n_events)
    else:
        taus, leaving, entering = _nm_events(x, y, mask0, n, m, n_events)
    for t in range(taus.shape[0]):
        i, j = leaving[t], entering[t]
        _toggle(H, i, w[i], delta[i], False, mask, hd, hv)
        _toggle(H, j, w[j], delta[j], True, mask, hd, hv)
        best_tau, best_val, _ = _keep_best(mask, w, wbar, e, delta, hd, hv, lam, best_tau, best_val,
                                           best_mask, best_hd, best_hv)
    last = taus[-1] if taus.shape[0] else 0.0
    anchor = max(best_tau, last, 1e-300)
    target = np.empty(p, dtype=np.bool_)
    worse = 0
    for s in range(n_samples):
        support_into(np.abs(x - anchor * 2.0 ** (s + 1) * y), k, n, m, target)
        if np.sum(target != mask) > 2 * max_changes:
            break
        for j in range(p):
            if mask[j] and not target[j]:
                _toggle(H, j, w[j], delta[j], False, mask, hd, hv)
        for j in range(p):
            if target[j] and not mask[j]:
                _toggle(H, j, w[j], delta[j], True, mask, hd, hv)
        best_tau, best_val, improved = _keep_best(mask, w, wbar, e, delta, hd, hv, lam, best_tau, best_val,
                                                  best_mask, best_hd, best_hv)
        if improved:
            worse = 0
        else:
            worse += 1
            if worse == 2:
                break
    for j in range(p):
        out_w[j] = w[j] - best_tau * delta[j] if best_mask[j] else 0.0
        out_hd[j] = best_hd[j] - best_tau * best_hv[j]
    return best_val


@njit(cache=True, parallel=True)
def line_search_rows(H, rows, W, Wbar, E, HD, Delta, HV, masks0, scale, lam, ks, n, m,
                     n_events, n_samples, max_changes):
    """:func:`_row_search` for every row of ``rows`` (row t of Delta/HV/masks0 is
    row ``rows[t]`` of the others); returns the new rows, their ``H d`` and F."""
    a = rows.shape[0]
    p = W.shape[1]
    W_new = np.empty((a, p))
    HD_new = np.empty((a, p))
    values = np.empty(a)
    for t in prange(a):
        i = rows[t]
        values[t] = _row_search(H, W[i], Wbar[i], E[i], Delta[t], scale, HD[i], HV[t], masks0[t],
                                ks[i], n, m, lam, n_events, n_samples, max_changes,
                                W_new[t], HD_new[t])
    return W_new, HD_new, values
