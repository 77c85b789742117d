"""Numba kernels of the Boolean (perspective) relaxation, in Gram form on a working set W.

With ``G = A_WᵀA_W``, ``q = A_Wᵀb + γw̄_W`` (γ = nλ), fixed-one coordinates ``O`` and free ones ``R``
(at most ``k'`` of them nonzero), the relaxation minimises

    P(w) = c₀ + ½wᵀGw − qᵀw + (γ/2)(‖w_O‖² + ‖w_R‖²_{k'}),      ‖v‖²_{k'} = min {Σ v_i²/z_i : z ∈ [0,1], Σz ≤ k'},

(``‖·‖_{k'}`` is the k'-support norm) by FISTA with adaptive restart. The prox of ``(β/2)‖·‖²_{k'}`` at ``v``:
for a fixed z the minimiser is ``w_i = v_i z_i/(z_i + β)`` with value ``(β/2)Σ v_i²/(z_i + β)``, whose minimum
over the capped simplex has ``z_i = clip(θ|v_i| − β, 0, 1)``, θ set by ``Σz = k'`` (a piecewise-linear equation
solved over the sorted breakpoints). That z is also optimal for the returned w, which gives P exactly.

No ``fastmath``: θ is infinite when every nonzero may be kept.
"""
import numpy as np
from numba import njit


@njit(cache=True)
def ksupport_prox(v, free, k_free, beta, w, z):
    """Prox of ``(β/2)‖·‖²_{k'}`` on the ``free`` coordinates of ``v`` (into ``w``, ``z``); others copied."""
    m = v.shape[0]
    idx = np.flatnonzero(free)
    theta = np.inf
    if k_free == 0:
        theta = 0.0
    else:
        events = np.empty(2 * idx.shape[0])
        for t in range(idx.shape[0]):
            a = abs(v[idx[t]])
            events[2 * t] = beta / a if a > 0 else np.inf
            events[2 * t + 1] = (1.0 + beta) / a if a > 0 else np.inf
        order = np.argsort(events)
        slope, rising, full = 0.0, 0, 0
        for e in order:
            if events[e] == np.inf:
                break
            if slope > 0 and events[e] * slope - beta * rising + full >= k_free:
                theta = (k_free + beta * rising - full) / slope
                break
            a = abs(v[idx[e // 2]])
            if e % 2 == 0:
                slope += a
                rising += 1
            else:
                slope -= a
                rising -= 1
                full += 1
    for i in range(m):
        if not free[i]:
            w[i], z[i] = v[i], 1.0
            continue
        a = abs(v[i])
        zi = 1.0 if theta == np.inf else min(1.0, max(0.0, theta * a - beta))
        if a == 0.0:
            zi = 0.0
        z[i] = zi
        w[i] = v[i] * zi / (zi + beta) if zi > 0 else 0.0


@njit(cache=True)
def top_sum_sq(s, free, k_free):
    """``Σ_{i ∉ free} s_i² + (sum of the k' largest s_i² over free i)``."""
    fixed, values = 0.0, np.empty(s.shape[0])
    count = 0
    for i in range(s.shape[0]):
        if free[i]:
            values[count] = s[i] * s[i]
            count += 1
        else:
            fixed += s[i] * s[i]
    values = np.sort(values[:count])
    top = 0.0
    for t in range(max(0, count - k_free), count):
        top += values[t]
    return fixed + top


@njit(cache=True)
def largest_eigenvalue(G, iters=30):
    """Power iteration for ``λ_max(G)`` (G symmetric positive semidefinite), from the all-ones vector."""
    x = np.ones(G.shape[0]) / np.sqrt(G.shape[0])
    estimate = 0.0
    for _ in range(iters):
        y = G @ x
        norm = np.sqrt(y @ y)
        if norm == 0.0:
            return 0.0
        estimate = x @ y
        x = y / norm
    return max(estimate, np.sqrt((G @ x) @ (G @ x)))


@njit(cache=True)
def primal_value(G, q, w, z, gamma, c0):
    """P(w), with z optimal for w (1 on the fixed ones)."""
    penalty = 0.0
    for i in range(w.shape[0]):
        if w[i] != 0.0:
            penalty += w[i] * w[i] / z[i]
    return c0 + 0.5 * (w @ (G @ w)) - q @ w + 0.5 * gamma * penalty


@njit(cache=True)
def dual_value(G, q, w, free, k_free, gamma, c0):
    """The dual value on W at ``α = b − A_W w``: ``c₀ − ½wᵀGw − Q(s)/(2γ)`` with ``s = q − Gw``."""
    Gw = G @ w
    return c0 - 0.5 * (w @ Gw) - top_sum_sq(q - Gw, free, k_free) / (2.0 * gamma)


@njit(cache=True)
def fista(G, q, free, k_free, gamma, w0, c0, max_iter, tol):
    """Minimise P on W from ``w0``; stops when ``P − D ≤ tol·|P|`` on W (checked every 10 steps).

    Returns ``(w, z, P, D_W, steps)`` with D_W the dual value on W (the top k' taken over W's free columns).
    """
    m = q.shape[0]
    ridge = np.where(free, 0.0, gamma)  # the fixed ones' ridge is in the smooth part
    lipschitz = 1.05 * (largest_eigenvalue(G) + gamma)
    beta = gamma / lipschitz
    w, z, v = w0.copy(), np.ones(m), np.empty(m)
    y, t = w0.copy(), 1.0
    w_new = np.empty(m)
    primal, dual, steps = np.inf, -np.inf, 0
    for steps in range(1, max_iter + 1):
        v[:] = y - (G @ y - q + ridge * y) / lipschitz
        ksupport_prox(v, free, k_free, beta, w_new, z)
        if (y - w_new) @ (w_new - w) > 0:  # the momentum points uphill: restart it
            t = 1.0
            y[:] = w_new
        else:
            t_next = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
            y[:] = w_new + ((t - 1.0) / t_next) * (w_new - w)
            t = t_next
        w[:] = w_new
        if steps % 10 == 0 or steps == max_iter:
            primal = primal_value(G, q, w, z, gamma, c0)
            dual = dual_value(G, q, w, free, k_free, gamma, c0)
            if primal - dual <= tol * abs(primal):
                break
    return w, z, primal, dual, steps


@njit(cache=True)
def combine_rows(rows, slots, x):
    """``Σ_t x_t rows[slots_t]``, reading the rows in place (no gathered copy)."""
    out = np.zeros(rows.shape[1])
    for t in range(slots.shape[0]):
        row, scale = rows[slots[t]], x[t]
        for j in range(out.shape[0]):
            out[j] += scale * row[j]
    return out
