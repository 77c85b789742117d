"""Numba kernels of the batched block-diagonal solver (:mod:`l0reg.blocks`).

One call solves every block ``B = [lo, hi)`` of columns of ``A``::

    min_w ½‖b_B − A_B w‖² + (nλ/2)‖w − w̄_B‖²   s.t. ‖w‖₀ ≤ k_B,   b_B = A_B w̄_B − γ·1,

the blocks spread over threads (``prange``), each block on one thread with
its own scratch memory (O(n·k_B + n + p_B) per thread, A never copied).

Per block: the exact refit of the start support (the better of ``P(w_init)``
in the metric below and by plain magnitude), then Jacobi-preconditioned
IHT (``δ = g / D``, ``D_j = ‖a_j‖² + nλ``, supports ranked by ``√D_j |w_j − τδ_j|``)
whose step search visits the supports of ``P(w − τδ)`` for τ on a geometric
grid and minimises F exactly on each (the quadratic in τ of
``l0reg._linesearch``, updated in O(n) per changed coordinate), and an exact
refit of each new support. F never increases; a block whose first step from
the refitted start does not lower F stops there.
"""
import numpy as np
from numba import njit, prange

# Step search: τ = 2^(m/2) for m in [_TAU_LO, _TAU_HI] (τ = 1 is the diagonal Newton step).
_TAU_LO, _TAU_HI = -12, 8
# IHT between two refits stops when the support has not changed for this many steps.
_PATIENCE = 3
_MAX_ROUNDS = 4


@njit(cache=True, fastmath=True)
def _setup(A, lo, hi, w_bar, gamma, nlam, b, diag):
    """``b = A_B w̄_B − γ`` and ``D_j = ‖a_j‖² + nλ`` (one pass over A_B)."""
    n = A.shape[0]
    b[:] = -gamma
    for t in range(hi - lo):
        c = w_bar[t]
        acc = 0.0
        for i in range(n):
            v = np.float64(A[i, lo + t])
            acc += v * v
            b[i] += v * c
        diag[t] = acc + nlam


@njit(cache=True, fastmath=True)
def _axpy_col(A, j, c, out):
    """``out += c · a_j``."""
    for i in range(A.shape[0]):
        out[i] += c * np.float64(A[i, j])


@njit(cache=True, fastmath=True)
def _objective(r, w, w_bar, nlam):
    """``½‖r‖² + (nλ/2)‖w − w̄‖²`` (block coordinates)."""
    acc = 0.0
    for i in range(r.shape[0]):
        acc += r[i] * r[i]
    pen = 0.0
    for t in range(w.shape[0]):
        d = w[t] - w_bar[t]
        pen += d * d
    return 0.5 * acc + 0.5 * nlam * pen


@njit(cache=True, fastmath=True)
def _residual(A, lo, b, w, mask, r):
    """``r = b − A_B w`` over the support ``mask``."""
    r[:] = b
    for t in range(mask.shape[0]):
        if mask[t] and w[t] != 0.0:
            _axpy_col(A, lo + t, -w[t], r)


@njit(cache=True)
def _top_mask(score, k, mask):
    """``mask`` = the ``k`` largest entries of ``score`` (ties to the lower index)."""
    mask[:] = False
    order = np.argsort(-score, kind="mergesort")
    for t in range(min(k, score.shape[0])):
        mask[order[t]] = True


@njit(cache=True)
def _cholesky(K, cutoff):
    """Lower Cholesky factor of ``K`` in place; False if a pivot falls below ``cutoff``."""
    m = K.shape[0]
    for j in range(m):
        s = K[j, j]
        for t in range(j):
            s -= K[j, t] * K[j, t]
        if not s > cutoff:
            return False
        s = np.sqrt(s)
        K[j, j] = s
        for i in range(j + 1, m):
            v = K[i, j]
            for t in range(j):
                v -= K[i, t] * K[j, t]
            K[i, j] = v / s
    return True


@njit(cache=True)
def _solve_psd(K, rhs, rcond):
    """``K⁻¹ rhs`` for PSD ``K``: Cholesky, or the pseudo-inverse from the eigenvalues above
    ``max(rcond², m·ε)·max diag K`` when a pivot falls below that cutoff (rank-revealing)."""
    m = K.shape[0]
    peak = 0.0
    for j in range(m):
        peak = max(peak, K[j, j])
    cutoff = max(rcond * rcond, m * 2.220446049250313e-16) * peak
    L = K.copy()
    if _cholesky(L, cutoff):
        y = rhs.copy()
        for i in range(m):
            for t in range(i):
                y[i] -= L[i, t] * y[t]
            y[i] /= L[i, i]
        for i in range(m - 1, -1, -1):
            for t in range(i + 1, m):
                y[i] -= L[t, i] * y[t]
            y[i] /= L[i, i]
        return y
    mu, V = np.linalg.eigh(K)
    coef = V.T @ rhs
    for j in range(m):
        coef[j] = coef[j] / mu[j] if mu[j] > cutoff else 0.0
    return V @ coef


@njit(cache=True, fastmath=True)
def _refit(A, lo, b, w_bar, nlam, mask, rcond, w, r):
    """Exact ridge on the support ``mask``: ``w_S = w̄_S + (A_SᵀA_S + nλI)⁻¹A_Sᵀ(b − A_S w̄_S)``
    (Gram in float64 by one BLAS product); ``w`` and ``r = b − A_B w`` are overwritten."""
    n = A.shape[0]
    idx = np.flatnonzero(mask)
    m = idx.shape[0]
    As = np.empty((m, n))  # rows = the support's columns, in float64
    rbar = b.copy()
    for t in range(m):
        j = lo + idx[t]
        for i in range(n):
            As[t, i] = A[i, j]
        _axpy_col(A, j, -w_bar[idx[t]], rbar)
    K = As @ As.T
    for t in range(m):
        K[t, t] += nlam
    d = _solve_psd(K, As @ rbar, rcond)
    w[:] = 0.0
    for t in range(m):
        w[idx[t]] = w_bar[idx[t]] + d[t]
    _residual(A, lo, b, w, mask, r)


@njit(cache=True, fastmath=True)
def _toggle(A, j, enter, wj, dj, r, q):
    """Support change of coordinate ``j``: ``r_S = b − A_S w_S`` and ``q = A_S δ_S``."""
    sign = 1.0 if enter else -1.0
    for i in range(A.shape[0]):
        a = np.float64(A[i, j])
        r[i] -= sign * wj * a
        q[i] += sign * dj * a


@njit(cache=True, fastmath=True)
def _step(A, lo, w, w_bar, r, delta, diag, nlam, k, mask, new_mask, rq, q, best_r, best_w):
    """One IHT step: the best ``P_S(w − τδ)`` over the supports of the τ grid, each minimised
    exactly in τ. Writes ``best_w``, ``best_r``, ``new_mask``; returns its F (inf if none)."""
    p = w.shape[0]
    n = r.shape[0]
    # Start from the current support: r_S = r, q = A_S δ_S, and the scalars of φ_S.
    cur = mask.copy()
    rq[:] = r
    q[:] = 0.0
    dd = 0.0
    dg = 0.0
    gg = 0.0
    wb_out = 0.0
    for t in range(p):
        dt = w[t] - w_bar[t]
        if cur[t]:
            _axpy_col(A, lo + t, delta[t], q)
            dd += dt * dt
            dg += dt * delta[t]
            gg += delta[t] * delta[t]
        else:
            wb_out += w_bar[t] * w_bar[t]
    score = np.empty(p)
    target = np.empty(p, dtype=np.bool_)
    best = np.inf
    best_tau = 0.0
    for m in range(_TAU_LO - 1, _TAU_HI + 1):
        if m >= _TAU_LO:  # m = _TAU_LO − 1: the current support itself
            tau = 2.0 ** (0.5 * m)
            for t in range(p):
                score[t] = np.sqrt(diag[t]) * abs(w[t] - tau * delta[t])
            _top_mask(score, k, target)
            for t in range(p):
                if target[t] != cur[t]:
                    _toggle(A, lo + t, target[t], w[t], delta[t], rq, q)
                    dt = w[t] - w_bar[t]
                    s = 1.0 if target[t] else -1.0
                    dd += s * dt * dt
                    dg += s * dt * delta[t]
                    gg += s * delta[t] * delta[t]
                    wb_out -= s * w_bar[t] * w_bar[t]
                    cur[t] = target[t]
        rr = 0.0
        rqd = 0.0
        qq = 0.0
        for i in range(n):
            rr += rq[i] * rq[i]
            rqd += rq[i] * q[i]
            qq += q[i] * q[i]
        curv = qq + nlam * gg
        slope = rqd - nlam * dg
        tau_s = max(0.0, -slope / curv) if curv > 0.0 else 0.0
        value = 0.5 * rr + tau_s * slope + 0.5 * tau_s * tau_s * curv + 0.5 * nlam * (dd + wb_out)
        if value < best:
            best, best_tau = value, tau_s
            new_mask[:] = cur
            for i in range(n):
                best_r[i] = rq[i] + tau_s * q[i]
    for t in range(p):
        best_w[t] = w[t] - best_tau * delta[t] if new_mask[t] else 0.0
    return best


@njit(cache=True, fastmath=True)
def solve_block(A, lo, hi, k, w_bar, w_init, nlam, gamma, max_iter, tol, rcond, w, mask, w_start):
    """Solve block ``[lo, hi)`` (``w_bar``, ``w_init``: the block's entries); writes ``w``, ``mask`` and
    ``w_start`` (the refitted start).

    Returns ``(F of the refitted start, F of the result, IHT steps)`` in the block's objective.
    """
    n = A.shape[0]
    p = hi - lo
    b = np.empty(n)
    diag = np.empty(p)
    _setup(A, lo, hi, w_bar, gamma, nlam, b, diag)
    # Start: the better refit of P(w_init) in the metric of D and of plain P(w_init).
    score = np.empty(p)
    for t in range(p):
        score[t] = np.sqrt(diag[t]) * abs(w_init[t])
    _top_mask(score, k, mask)
    r = np.empty(n)
    _refit(A, lo, b, w_bar, nlam, mask, rcond, w, r)
    value = _objective(r, w, w_bar, nlam)
    rq, q, new_r = np.empty(n), np.empty(n), np.empty(n)
    new_w = np.empty(p)
    new_mask = np.empty(p, dtype=np.bool_)
    _top_mask(np.abs(w_init), k, new_mask)
    if not np.array_equal(new_mask, mask):
        _refit(A, lo, b, w_bar, nlam, new_mask, rcond, new_w, new_r)
        plain_value = _objective(new_r, new_w, w_bar, nlam)
        if plain_value < value:
            w[:], r[:], mask[:], value = new_w, new_r, new_mask, plain_value
    start_value = value
    w_start[:] = w
    delta = np.empty(p)
    g = np.empty(p)
    steps = 0
    for _ in range(_MAX_ROUNDS):
        stable = 0
        changed = False
        while steps < max_iter:
            for t in range(p):  # g = −A_Bᵀ r + nλ(w − w̄), δ = g / D
                acc = 0.0
                for i in range(n):
                    acc += np.float64(A[i, lo + t]) * r[i]
                g[t] = -acc + nlam * (w[t] - w_bar[t])
                delta[t] = g[t] / diag[t] if diag[t] > 0.0 else 0.0
            steps += 1
            new_value = _step(A, lo, w, w_bar, r, delta, diag, nlam, k, mask, new_mask, rq, q, new_r, new_w)
            if not new_value < value - tol * abs(value):
                break
            same = True
            for t in range(p):
                if new_mask[t] != mask[t]:
                    same = False
            stable = stable + 1 if same else 0
            changed = changed or not same
            w[:] = new_w
            r[:] = new_r
            mask[:] = new_mask
            value = new_value
            if stable >= _PATIENCE:
                break
        if not changed:
            break
        _refit(A, lo, b, w_bar, nlam, mask, rcond, new_w, new_r)
        refit_value = _objective(new_r, new_w, w_bar, nlam)
        if refit_value < value:
            w[:] = new_w
            r[:] = new_r
            value = refit_value
        if steps >= max_iter:
            break
    return start_value, value, steps


@njit(cache=True, parallel=True)
def solve_blocks(A, los, his, ks, w_bar, w_init, nlam, gammas, max_iter, tol, rcond, w, mask, w_start, info):
    """:func:`solve_block` for every block (``gammas[i]``: its gradient weight), the blocks spread over
    threads; ``info[i]`` gets its
    ``(F start refit, F, IHT steps)``; ``w``, ``mask`` and ``w_start`` (length p) get the blocks' entries."""
    for i in prange(los.shape[0]):
        lo, hi = los[i], his[i]
        if ks[i] == 0:
            continue
        start, value, steps = solve_block(A, lo, hi, ks[i], w_bar[lo:hi], w_init[lo:hi], nlam, gammas[i],
                                          max_iter, tol, rcond, w[lo:hi], mask[lo:hi], w_start[lo:hi])
        info[i, 0] = start
        info[i, 1] = value
        info[i, 2] = steps
