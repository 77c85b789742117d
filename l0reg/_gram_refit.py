"""Refit of many rows on their supports, in Gram form.

For a row with support S the best values solve the normal equations

    K w_S = c_S + λ w̄_S,    K = H_SS + λ I,    w_j = 0 off S.

Two solvers, chosen by cost (:func:`refit_rows`):

- exact: one Cholesky factorisation per row, ``|S|³/3`` flops, row-parallel in
  Numba (no BLAS call inside the threads). A row whose K is not numerically
  positive definite (λ = 0 and a rank-deficient ``H_SS``) gets the minimum-norm
  least-squares solution instead (SVD, rank-revealing);
- preconditioned conjugate gradients on all rows at once (Jacobi preconditioner
  ``diag K``), warm-started: each iteration is one BLAS product ``P @ H`` of the
  masked directions, so large supports cost a few matrix products instead of
  ``r·|S|³/3`` flops. Approximate: callers keep a row's refit only where it
  lowers that row's objective.
"""
import numpy as np
from numba import njit

from ._gram_supports import support_indices
from ._threads import over_rows

# Exact refits while the largest support satisfies |S|³ ≤ this · p² (the Cholesky
# factorisations then cost about as much as this many products ``W @ H`` / 10 —
# scalar Numba code runs ~10× below BLAS-3 speed).
_EXACT_CUBE_PER_P2 = 16.0
# ... or while all the factorisations together cost at most this many flops.
_EXACT_FLOPS = 3e8
# Pivots below this fraction of the diagonal entry mark K as not positive definite.
_PIVOT_RTOL = 1e-10
# Conjugate-gradient refits (large supports): at most this many iterations, and a
# row stops at this relative (preconditioned) residual.
CG_ITER = 10
CG_RTOL = 1e-4


@njit(cache=True, fastmath=True)
def _cholesky_solve(K, b):
    """Solve ``K x = b`` by Cholesky, overwriting K with L and b with x; False when
    K is not positive definite (then K and b are garbage)."""
    s = b.shape[0]
    for j in range(s):
        diag = K[j, j]
        d = diag
        for q in range(j):
            d -= K[j, q] * K[j, q]
        if not d > _PIVOT_RTOL * diag:
            return False
        d = np.sqrt(d)
        K[j, j] = d
        for i in range(j + 1, s):
            acc = K[i, j]
            for q in range(j):
                acc -= K[i, q] * K[j, q]
            K[i, j] = acc / d
    for i in range(s):  # L y = b
        acc = b[i]
        for q in range(i):
            acc -= K[i, q] * b[q]
        b[i] = acc / K[i, i]
    for i in range(s - 1, -1, -1):  # Lᵀ x = y, by columns of L
        b[i] /= K[i, i]
        for q in range(i):
            b[q] -= K[i, q] * b[i]
    return True


@njit(cache=True)
def _system(H, c, wbar, lam, S):
    """``(K, rhs)`` of one row on the support S."""
    s = S.shape[0]
    K = np.empty((s, s))
    rhs = np.empty(s)
    for a in range(s):
        rhs[a] = c[S[a]] + lam * wbar[S[a]]
        for b in range(s):
            K[a, b] = H[S[a], S[b]]
        K[a, a] += lam
    return K, rhs


@njit(cache=True, nogil=True)
def _cholesky_refit_chunk(lo, hi, H, C, Wbar, lam, masks, out, failed):
    """The Cholesky refit of the rows ``lo … hi−1`` on ``masks`` into ``out`` (zero rows); ``failed[t]`` where
    row t's K is not numerically positive definite (its ``out`` row is then left zero)."""
    for t in range(lo, hi):
        S = support_indices(masks[t])
        if S.shape[0] == 0:
            continue
        K, rhs = _system(H, C[t], Wbar[t], lam, S)
        if not _cholesky_solve(K, rhs):
            failed[t] = True
            continue
        for a in range(S.shape[0]):
            out[t, S[a]] = rhs[a]


def exact_refit_rows(H, C, Wbar, lam, masks):
    """Exact refit of every row on ``masks`` (float64 rows × p).

    The rare rows whose K is not positive definite get the minimum-norm least-squares solution from
    LAPACK (``np.linalg.lstsq``, SVD) out here: inside the Numba kernel that fallback cost 40% of the
    kernel's compile time.
    """
    out, failed = np.zeros(masks.shape), np.zeros(masks.shape[0], dtype=np.bool_)
    over_rows(_cholesky_refit_chunk, masks.shape[0], H, C, Wbar, float(lam), masks, out, failed)
    for t in np.flatnonzero(failed):
        S = np.flatnonzero(masks[t])
        K = H[np.ix_(S, S)] + lam * np.eye(S.size)
        out[t, S] = np.linalg.lstsq(K, C[t, S] + lam * Wbar[t, S], rcond=-1)[0]
    return out


@njit(cache=True, nogil=True, fastmath=True)
def _cg_chunk(lo, hi, Q, P, P32, W, R, rz, masks, inv_diag, lam, stop, running):
    """One CG step of the rows ``lo … hi−1`` from their product ``Q = P @ H`` (float32), all vectors updated
    in one pass per row; ``running[t]``: whether row t keeps running."""
    p = P.shape[1]
    q = np.empty(p)
    for t in range(lo, hi):
        curv = 0.0
        for j in range(p):
            q[j] = Q[t, j] + lam * P[t, j] if masks[t, j] else 0.0
            curv += P[t, j] * q[j]
        if not curv > 0.0:
            continue
        alpha = rz[t] / curv
        rz_new = 0.0
        for j in range(p):
            W[t, j] += alpha * P[t, j]
            R[t, j] -= alpha * q[j]
            rz_new += R[t, j] * R[t, j] * inv_diag[j]
        beta = rz_new / rz[t] if rz[t] > 0.0 else 0.0
        for j in range(p):
            P[t, j] = R[t, j] * inv_diag[j] + beta * P[t, j]
            P32[t, j] = P[t, j]
        rz[t] = rz_new
        running[t] = rz_new > stop[t]


def _cg_step(Q, P, P32, W, R, rz, masks, inv_diag, lam, stop):
    """One CG step of every row (:func:`_cg_chunk`); returns which rows keep running."""
    running = np.zeros(P.shape[0], dtype=np.bool_)
    over_rows(_cg_chunk, P.shape[0], Q, P, P32, W, R, rz, masks, inv_diag, float(lam), stop, running)
    return running


def cg_refit_rows(H, C, Wbar, lam, masks, start, n_iter, rtol=CG_RTOL):
    """At most ``n_iter`` steps of Jacobi-preconditioned CG on every row's normal equations,
    from ``start`` (restricted to the masks); one product ``P @ H`` of the rows still
    running per step, in float32 (the residual is formed in float64 at the start). A row
    stops when ``rᵀM⁻¹r ≤ rtol²·bᵀM⁻¹b`` (b: its right-hand side)."""
    H32 = H.astype(np.float32)
    inv_diag = 1.0 / np.maximum(np.diag(H) + lam, np.finfo(np.float64).tiny)
    target = np.where(masks, C + lam * Wbar, 0.0)
    out = np.where(masks, start, 0.0)
    R = np.where(masks, target - out @ H - lam * out, 0.0)
    rz = np.einsum("ij,ij->i", R * inv_diag, R)
    stop = rtol * rtol * np.einsum("ij,ij->i", target * inv_diag, target)
    rows = np.flatnonzero(rz > stop)
    # The running rows, compacted (written back to ``out`` when some stop).
    W, R, P, M = out[rows], R[rows], R[rows] * inv_diag, masks[rows]
    rz, stop = rz[rows], stop[rows]
    P32 = P.astype(np.float32)
    for _ in range(n_iter):
        if rows.size == 0:
            break
        running = _cg_step(P32 @ H32, P, P32, W, R, rz, M, inv_diag, lam, stop)
        if not running.all():
            out[rows] = W
            rows = rows[running]
            W, R, P, P32, M, rz, stop = (x[running] for x in (W, R, P, P32, M, rz, stop))
    out[rows] = W
    return out


def exact_is_cheap(p, masks):
    """Whether the exact refit of ``masks`` costs little: about a few products ``W @ H``, or few flops."""
    largest = int(masks.sum(axis=1).max(initial=0))
    return largest ** 3 <= _EXACT_CUBE_PER_P2 * p * p or masks.shape[0] * largest ** 3 / 3 <= _EXACT_FLOPS


def refit_rows(H, C, Wbar, lam, masks, start=None, cg_iter=CG_ITER):
    """Each row's objective minimised on its support ``masks[t]`` (float64, len(masks) × p):
    exactly when that is cheap (or ``start`` is None), otherwise by CG from ``start``.

    ``C``, ``Wbar`` and ``start`` hold the rows matching ``masks`` (same first dimension).
    """
    if start is None or exact_is_cheap(H.shape[0], masks):
        return exact_refit_rows(H, C, Wbar, lam, masks)
    return cg_refit_rows(H, C, Wbar, lam, masks, start, cg_iter)
