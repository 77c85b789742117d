"""Numba kernels for the path breakpoints of the structured projections.

Along the line ``τ ↦ v(τ) = w − τ g`` the kept set of a projection changes only
where an outside item's score overtakes a kept item's score:

- N:M (``nm_path_events``): items are coordinates, scores ``|w_j − τ g_j|``,
  and items compete only inside their group of m consecutive coordinates;
- groups (``group_path_events``): items are groups G, scores
  ``‖v_G(τ)‖² = α_G − 2 β_G τ + γ_G τ²`` with ``α = ‖w_G‖²``, ``β = w_G·g_G``,
  ``γ = ‖g_G‖²``.

Both return ``(taus, leaving, entering)`` in increasing τ, one exchange of one
item for another per event, for at most ``max_events`` events.
"""
import math

import numpy as np
from numba import njit

from ._kernels import _overtake_time


@njit(cache=True)
def _group_next_event(w, g, kept, lo, hi, t0):
    """First ``τ > t0`` at which an unkept coordinate of ``[lo, hi)`` overtakes a
    kept one: ``(τ, leaving, entering)`` (τ = inf when none does)."""
    best, leave, enter = np.inf, -1, -1
    for i in range(lo, hi):
        if not kept[i]:
            continue
        for j in range(lo, hi):
            if kept[j]:
                continue
            t = _overtake_time(w[i], g[i], w[j], g[j], t0)
            if t < best:
                best, leave, enter = t, i, j
    return best, leave, enter


@njit(cache=True)
def nm_path_events(w, g, kept, m, max_events):
    """Breakpoints of ``τ ↦ supp P_{N:M}(w − τ g)`` for τ > 0.

    ``kept`` is the boolean keep mask just after τ = 0. Groups are independent,
    so each group holds its next event and the earliest one is applied, then
    that group's next event recomputed (O(p·m) to start, O(p/m + m²) per event).
    """
    kept = kept.copy()
    n_groups = w.shape[0] // m
    nxt = np.empty(n_groups)
    out = np.empty(n_groups, dtype=np.int64)
    into = np.empty(n_groups, dtype=np.int64)
    for q in range(n_groups):
        nxt[q], out[q], into[q] = _group_next_event(w, g, kept, q * m, (q + 1) * m, 0.0)
    taus = np.empty(max_events)
    leaving = np.empty(max_events, dtype=np.int64)
    entering = np.empty(max_events, dtype=np.int64)
    n_ev = 0
    while n_ev < max_events and n_groups > 0:
        q = np.argmin(nxt)
        if not np.isfinite(nxt[q]):
            break
        taus[n_ev], leaving[n_ev], entering[n_ev] = nxt[q], out[q], into[q]
        kept[out[q]] = False
        kept[into[q]] = True
        n_ev += 1
        nxt[q], out[q], into[q] = _group_next_event(w, g, kept, q * m, (q + 1) * m, taus[n_ev - 1])
    return taus[:n_ev], leaving[:n_ev], entering[:n_ev]


@njit(cache=True)
def _quadratic_overtake(da, db, dc, t0):
    """First ``τ > t0`` at which ``d(τ) = da − 2 db τ + dc τ²`` crosses zero upwards.

    The upward root is ``(db + √Δ)/dc`` with ``Δ = db² − da·dc`` (where
    ``d′ = 2√Δ > 0``), written as ``da/(db − √Δ)`` when ``db < 0`` to avoid
    cancellation (and to cover the linear case dc = 0).
    """
    disc = db * db - da * dc
    if disc <= 0.0:
        return np.inf
    root = math.sqrt(disc)
    if db < 0.0:
        t = da / (db - root)
    elif dc != 0.0:
        t = (db + root) / dc
    else:
        return np.inf
    return t if t > t0 else np.inf


@njit(cache=True)
def group_path_events(alpha, beta, gamma, kept, rays, max_events):
    """Breakpoints of ``τ ↦`` the top-K groups by ``α − 2βτ + γτ²``, for τ > 0.

    ``kept`` (K group ids) is the kept set just after τ = 0 and holds every
    group with ``α > 0``; ``rays`` are the other groups by decreasing γ (their
    scores ``γτ²`` keep that order for every τ, so only the first one not yet
    entered can overtake). Groups that left are tracked and may come back.
    """
    n_kept = kept.shape[0]
    cur = kept.copy()
    departed = np.empty(max_events, dtype=np.int64)
    n_dep = 0
    taus = np.empty(max_events)
    leaving = np.empty(max_events, dtype=np.int64)
    entering = np.empty(max_events, dtype=np.int64)
    ray_ptr = 0
    tau = 0.0
    n_ev = 0
    while n_ev < max_events and n_kept > 0:
        best_t, best_pos, best_out, best_dep = np.inf, -1, -1, -1
        for d in range(-1, n_dep):
            if d < 0:
                if ray_ptr >= rays.shape[0]:
                    continue
                j = rays[ray_ptr]
            else:
                j = departed[d]
            for pos in range(n_kept):
                i = cur[pos]
                t = _quadratic_overtake(alpha[j] - alpha[i], beta[j] - beta[i], gamma[j] - gamma[i], tau)
                if t < best_t:
                    best_t, best_pos, best_out, best_dep = t, pos, j, d
        if best_pos < 0:
            break
        taus[n_ev], leaving[n_ev], entering[n_ev] = best_t, cur[best_pos], best_out
        n_ev += 1
        if best_dep < 0:
            ray_ptr += 1
        else:
            departed[best_dep] = departed[n_dep - 1]
            n_dep -= 1
        departed[n_dep] = cur[best_pos]
        n_dep += 1
        cur[best_pos] = best_out
        tau = best_t
    return taus[:n_ev], leaving[:n_ev], entering[:n_ev]
