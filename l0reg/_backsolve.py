"""Exact ridge solution on a fixed support.

On S, with ``d = w_S − w̄_S`` and ``r̄ = b − A_S w̄_S``, the problem is
``min_d ½‖r̄ − A_S d‖² + (nλ/2)‖d‖²``, solved by

- a truncated SVD of the stacked ``[A_S; √(nλ) I]`` (float64 copy of A_S)
  when ``n·|S|`` is small: exact even on near-duplicate columns;
- Cholesky of ``A_Sᵀ A_S + nλ I`` (|S| × |S|) when |S| ≤ n, or
- Woodbury / push-through when n < |S|: ``d = A_Sᵀ (A_S A_Sᵀ + nλ I)⁻¹ r̄``,
  an n × n system, so the cost is O(n²|S|) instead of O(|S|³).

Gram matrices are accumulated in float64 over column blocks of ``A_S``, so a
float32 ``A`` is never upcast as a whole; ``A_S A_Sᵀ`` comes from
:meth:`Design.row_gram`, which updates the previous refit's product when the
support changed little. This n × n work runs in scipy's BLAS on one thread
(see ``_threads``).

Every solve is rank-revealing: singular values below ``rcond·σ_max`` (Gram
eigenvalues below ``max(rcond², size·ε)·μ_max``) are dropped, so that on a
rank-deficient support the minimum-norm solution is returned, never one with
exploding coefficients. The default ``rcond = size·ε`` uses the ε of A's
dtype: directions a float32 A cannot resolve are not fitted, as float32
coefficients could not represent their huge values anyway.
"""
import hashlib

import numpy as np
import scipy.linalg
from scipy.linalg import blas

from . import _kernels as kern
from ._threads import single_blas_thread

# Refits whose least-squares matrix (A_S, stacked on √(nλ)·I when λ > 0: (n + |S|) × |S|) has at most this
# many entries factorise it directly (SVD) instead of a Gram matrix.  Counting the stacked rows matters when
# |S| ≫ n: an 8 × 4416 A_S would otherwise be an SVD of 4424 × 4416 (27 s) instead of an 8 × 8 Woodbury solve.
_DIRECT_MAX_ENTRIES = 1 << 16
# Refits a design keeps (see ridge_on_support).
_REMEMBERED_REFITS = 4


def default_rcond(dtype, rows, size):
    """Relative singular-value cutoff of a refit: ``max(rows, size)·ε(dtype)``."""
    return max(rows, size) * float(np.finfo(dtype).eps)


def _solve_psd(K, rhs, rcond):
    """``K⁻¹ rhs`` for a PSD Gram matrix K: Cholesky when K is well conditioned,
    else the pseudo-inverse from its eigenvalues above the cutoff.

    K (symmetric, Fortran-ordered) is factorised in place: the factor (or the
    eigensolver) overwrites its lower triangle and diagonal, never its strict upper
    triangle, from which K is rebuilt if the eigenvalues are needed.
    """
    diag = np.diag(K).copy()
    cutoff = max(rcond * rcond, K.shape[0] * np.finfo(float).eps) * max(float(np.max(diag)), 0.0)
    try:
        factor, lower = scipy.linalg.cho_factor(K, lower=True, overwrite_a=True, check_finite=False)
        if np.min(np.diag(factor)) ** 2 > cutoff:
            return scipy.linalg.cho_solve((factor, lower), rhs, check_finite=False)
    except np.linalg.LinAlgError:
        pass
    kern.mirror_upper(K, diag)
    mu, V = scipy.linalg.eigh(K, overwrite_a=True, check_finite=False)
    keep = mu > cutoff
    z = blas.dgemv(1.0, V, rhs, trans=1)
    z[keep] /= mu[keep]
    z[~keep] = 0.0
    return blas.dgemv(1.0, V, z)


def _solve_direct(A_s, rbar, nlam, rcond):
    """``argmin_d ‖r̄ − A_S d‖² + nλ‖d‖²`` by a truncated SVD (gelsd)."""
    size = A_s.shape[1]
    if nlam > 0:
        A_s = np.vstack([A_s, np.sqrt(nlam) * np.eye(size)])
        rbar = np.concatenate([rbar, np.zeros(size)])
    return scipy.linalg.lstsq(A_s, rbar, cond=rcond, check_finite=False, lapack_driver="gelsd")[0]


def backsolve_cost(n, size):
    """Flop count of :func:`ridge_on_support` for ``size`` columns."""
    small, large = sorted((n, size))
    return small * small * large + small ** 3 / 3


def ridge_on_support(design, b, support, w_bar, nlam, rcond=None):
    """``argmin_{w : supp w ⊆ S} F(w)``, returned as a dense float64 vector
    (``rcond``: see the module docstring).

    The design remembers its last few large refits: a solver refits some supports twice (its start is
    tested, then competes again with the result and with the magnitude support), and the same arrays
    ``b``, ``w̄`` give the same answer.
    """
    support = np.asarray(support, dtype=np.int64)
    if support.size == 0:
        return np.zeros(design.p)
    key = (hashlib.blake2b(support.tobytes(), digest_size=16).digest(), id(b), id(w_bar), float(nlam), rcond)
    found = design.refits.get(key)
    if found is not None and found[0] is b and found[1] is w_bar:
        return found[2].copy()
    w = _ridge_on_support(design, b, support, w_bar, nlam, rcond)
    if support.size > design.n:  # the costly ones (n x n Woodbury); small refits are cheaper than a lookup
        design.refits[key] = (b, w_bar, w.copy())
        while len(design.refits) > _REMEMBERED_REFITS:
            design.refits.pop(next(iter(design.refits)))
    return w


def _ridge_on_support(design, b, support, w_bar, nlam, rcond):
    w = np.zeros(design.p)
    rbar = design.residual(b, support, w_bar[support])
    n = design.n
    if rcond is None:
        rcond = default_rcond(design.A.dtype, n, support.size)
    if (n + (support.size if nlam > 0 else 0)) * support.size <= _DIRECT_MAX_ENTRIES:
        d = _solve_direct(design.cols64(support), rbar, nlam, rcond)
    else:
        with single_blas_thread():
            d = _solve_gram(design, support, rbar, nlam, rcond)
    w[support] = w_bar[support] + d
    return w


def _solve_gram(design, support, rbar, nlam, rcond):
    """``d`` of :func:`ridge_on_support` from the |S| × |S| Gram (|S| ≤ n) or the n × n one (Woodbury)."""
    n = design.n
    if support.size <= n:
        G = np.zeros((support.size, support.size), order="F")
        rhs = np.zeros(support.size)
        for lo, blk in design.row_blocks(support):
            blas.dsyrk(1.0, blk, beta=1.0, c=G, trans=1, lower=1, overwrite_c=1)
            rhs += blas.dgemv(1.0, blk, rbar[lo:lo + blk.shape[0]], trans=1)
        kern.mirror_lower(G)
        G[np.diag_indices_from(G)] += nlam
        d = _solve_psd(G, rhs, rcond)
    else:
        K = design.row_gram(support)  # factorised in place, restored from its upper triangle after
        diag = np.diag(K).copy()
        K[np.diag_indices_from(K)] += nlam
        try:
            y = _solve_psd(K, rbar, rcond)
        finally:
            kern.mirror_upper(K, diag)
        d = np.empty(support.size)
        for lo, idx, blk in design.column_blocks(support):
            d[lo:lo + idx.size] = blas.dgemv(1.0, blk, y, trans=1)
    return d
