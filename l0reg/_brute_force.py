"""Exact L0-constrained ridge by enumerating supports (small problems only).

For a support S the best ``w`` with ``supp w ⊆ S`` solves the normal equations

    (A_Sᵀ A_S + nλ I) w_S = A_Sᵀ b + nλ w̄_S,      w_j = 0 for j ∉ S,

i.e. the least-squares problem ``min ‖[A_S; √(nλ) I] w_S − [b; √(nλ) w̄_S]‖²``,
which is solved here by a QR factorisation of the stacked matrix (batched over
many supports; a truncated SVD for ill-conditioned systems, singular values
below ``rcond·σ_max`` dropped: the minimum-norm solution, when λ = 0).
The coordinates outside S still contribute ``(nλ/2) w̄_j²`` to F.

Adding a coordinate to S never increases the minimum (its value may stay 0),
so the global optimum of ``‖w‖₀ ≤ k`` is attained on a support of size exactly k.
"""
import itertools
import math

import numpy as np

from ._validation import check_indices, check_positive_int, check_problem

# Elements of the stacked (supports × rows × k) matrices factorised at once.
_BATCH_ELEMENTS = 1 << 21


def _objective64(A, b, w, nlam, w_bar):
    r = b - A @ w
    d = w - w_bar
    return 0.5 * float(r @ r) + 0.5 * nlam * float(d @ d)


def _as_float64(A, b, lam, w_bar):
    return A.astype(np.float64), b.astype(np.float64), A.shape[0] * lam, w_bar.astype(np.float64)


def solve_on_support(A, b, support, lam=0.0, w_bar=None):
    """Exact ``argmin {F(w) : supp w ⊆ support}``; returns ``(w, F(w))`` in float64."""
    A, b, _, lam, w_bar, _ = check_problem(A, b, 0, lam, w_bar)
    support = check_indices(support, A.shape[1], "support")
    A, b, nlam, w_bar = _as_float64(A, b, lam, w_bar)
    w = np.zeros(A.shape[1])
    if support.size:
        A_s = A[:, support]
        if nlam > 0:
            stacked = np.vstack([A_s, math.sqrt(nlam) * np.eye(support.size)])
            rhs = np.concatenate([b, math.sqrt(nlam) * w_bar[support]])
        else:
            stacked, rhs = A_s, b
        w[support] = np.linalg.lstsq(stacked, rhs, rcond=None)[0]
    return w, _objective64(A, b, w, nlam, w_bar)


def _truncated_solve(M, rhs, rcond):
    """Minimum-norm least squares on each system of the batch ``M`` (m × rows × k),
    singular values below ``rcond·σ_max`` dropped."""
    u, sv, vt = np.linalg.svd(M, full_matrices=False)
    inv = np.where(sv > rcond * sv[:, :1], 1.0 / np.where(sv > 0, sv, 1.0), 0.0)
    return np.einsum("mjk,mj->mk", vt, inv * np.einsum("mij,mi->mj", u, rhs))


def _solve_batch(A, b, nlam, w_bar, supports, rcond=None):
    """Best values on each support of ``supports`` (m × k); returns (m × k) values and F.

    ``rcond`` (default ``max(rows, k)·ε``) is the relative singular-value cutoff.
    """
    m, k = supports.shape
    n = A.shape[0]
    A_s = np.moveaxis(A[:, supports], 0, 1)  # m × n × k
    rhs = np.broadcast_to(b, (m, n))
    if nlam > 0:
        root = math.sqrt(nlam)
        A_s = np.concatenate([A_s, np.broadcast_to(root * np.eye(k), (m, k, k))], axis=1)
        rhs = np.concatenate([rhs, root * w_bar[supports]], axis=1)
    if rcond is None:
        rcond = max(A_s.shape[1:]) * np.finfo(float).eps
    if A_s.shape[1] < k:  # fewer rows than unknowns (λ = 0): every system is singular
        values, deficient = np.empty((m, k)), np.ones(m, dtype=bool)
    else:
        q, r = np.linalg.qr(A_s)
        diag = np.abs(np.diagonal(r, axis1=1, axis2=2))
        # The diagonal of R can overstate σ_min by far: every ill-conditioned system goes to the SVD.
        deficient = diag.min(axis=1) <= math.sqrt(rcond) * diag.max(axis=1)
        r[deficient] = np.eye(k)  # placeholders: those supports are re-solved below
        values = np.linalg.solve(r, np.einsum("mik,mi->mk", q, rhs)[..., None])[..., 0]
    if deficient.any():
        values[deficient] = _truncated_solve(A_s[deficient], rhs[deficient], rcond)
    resid = b - np.einsum("mik,mk->mi", A_s[:, :n], values)
    dev = values - w_bar[supports]
    wb_s = w_bar[supports]
    penalty = (dev * dev).sum(axis=1) + float(w_bar @ w_bar) - (wb_s * wb_s).sum(axis=1)
    return values, 0.5 * (resid * resid).sum(axis=1) + 0.5 * nlam * penalty


def brute_force(A, b, k, lam=0.0, w_bar=None, *, max_supports=10_000_000):
    """Global minimiser of ``F(w) = ½‖b − A w‖² + (nλ/2)‖w − w̄‖²`` s.t. ``‖w‖₀ ≤ k``.

    Enumerates all ``C(p, k)`` supports of size k (ties go to the
    lexicographically first support). Returns ``(w, F(w))`` in float64.
    Raises ValueError when ``C(p, k) > max_supports``.
    """
    A, b, k, lam, w_bar, _ = check_problem(A, b, k, lam, w_bar)
    max_supports = check_positive_int(max_supports, "max_supports")
    n, p = A.shape
    count = math.comb(p, k)
    if count > max_supports:
        raise ValueError(f"k={k} gives C({p}, {k}) = {count} supports, more than max_supports={max_supports}")
    A, b, nlam, w_bar = _as_float64(A, b, lam, w_bar)
    w = np.zeros(p)
    if k > 0:
        support, values = best_of_all_supports(A, b, nlam, w_bar, k)
        w[support] = values
    return w, _objective64(A, b, w, nlam, w_bar)


def best_of_all_supports(A, b, nlam, w_bar, k, rcond=None):
    """``(support, values)`` minimising F over all supports of size ``k ≥ 1``
    (float64 data; ``rcond`` as in ``_solve_batch``)."""
    n, p = A.shape
    batch = max(1, _BATCH_ELEMENTS // ((n + k) * k))
    combos = itertools.combinations(range(p), k)
    best_value, best_support, best_values = np.inf, None, None
    while chunk := list(itertools.islice(combos, batch)):
        supports = np.array(chunk, dtype=np.int64)
        values, objectives = _solve_batch(A, b, nlam, w_bar, supports, rcond)
        i = int(np.argmin(objectives))
        if objectives[i] < best_value:
            best_value, best_support, best_values = objectives[i], supports[i], values[i]
    return best_support, best_values
