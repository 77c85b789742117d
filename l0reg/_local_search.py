"""Polishing steps on a fixed-size support: coordinate descent and 1-swaps.

Coordinate descent minimises F exactly along one coordinate of S at a time on
a maintained residual. The swap search exchanges ``i ∈ S`` for ``j ∉ S`` while
that lowers F: removing i changes F by

    Δ_i = w_i a_iᵀr + ½ w_i²‖a_i‖² + (nλ/2)(w̄_i² − (w_i − w̄_i)²),

and inserting j at its best value lowers F by ``(a_jᵀ r_i + nλ w̄_j)²/(2(‖a_j‖²+nλ))``
with ``a_jᵀ r_i = (Aᵀr)_j + w_i (Aᵀa_i)_j``: one Gram column ``Aᵀa_i`` per tried i.

When the Gram columns of the whole support fit the cache, every swap is scored exactly instead
(:func:`_gram_swap_search`): refitted on S, F(S) = ½‖b‖² + (nλ/2)‖w̄‖² − ½ zᵀG⁻¹z with
``G = A_SᵀA_S + nλI`` and ``z = A_Sᵀb + nλw̄_S``; with ``u = G⁻¹z``, ``M = G⁻¹``, ``U = M A_SᵀA``
(column j: ``M A_Sᵀa_j``), ``h_j = a_jᵀ(b − A_S u) + nλ w̄_j`` and
``d_j = ‖a_j‖² + nλ − (A_Sᵀa_j)ᵀU_j``, the swap ``i → j`` lowers F by

    ½ [ (h_j + U_ij u_i/M_ii)² / (d_j + U_ij²/M_ii) − u_i²/M_ii ]

(removing i from a least-squares fit costs ``u_i²/M_ii``; the Schur complement updates the rest):
O(k²p) for all k(p − k) swaps (one fused pass, ``_kernels.best_swaps``), one new Gram column per
swap taken.
"""
import numpy as np
import scipy.linalg

from . import _kernels as kern
from ._backsolve import backsolve_cost, ridge_on_support
from .projection import largest


def objective_from_residual(r, w, w_bar, nlam):
    """``F = ½‖r‖² + (nλ/2)‖w − w̄‖²`` for the residual ``r = b − A w``."""
    d = w - w_bar
    return 0.5 * kern.dot(r, r) + 0.5 * nlam * kern.dot(d, d)


def cd_polish(design, w, r, w_bar, nlam, support, *, max_sweeps, tol):
    """Coordinate-descent sweeps over ``support`` until the decrease is below ``tol·F``.

    ``w`` and ``r`` are updated in place; returns the number of sweeps.
    """
    support = np.ascontiguousarray(support, dtype=np.int64)
    col_sq = design.col_sq()[support]
    sweeps = 0
    for sweeps in range(1, max_sweeps + 1):
        decrease = kern.cd_sweep(design.A, design.inv, support, w, w_bar, r, col_sq, nlam)
        if decrease <= tol * max(objective_from_residual(r, w, w_bar, nlam), np.finfo(float).tiny):
            break
    return sweeps


def refit_support(design, b, w, r, w_bar, nlam, support, *, tol, budget, cd_sweeps=20):
    """Re-optimise the values on ``support``: the exact back-solve when it costs
    at most ``budget`` flops, otherwise coordinate descent. Returns ``(w, r)``
    (never worse than the input)."""
    if backsolve_cost(design.n, support.size) <= budget:
        w_new = ridge_on_support(design, b, support, w_bar, nlam)
        r_new = b - design.cols_matvec(support, w_new[support])
        if objective_from_residual(r_new, w_new, w_bar, nlam) <= objective_from_residual(r, w, w_bar, nlam):
            return w_new, r_new
        return w, r
    cd_polish(design, w, r, w_bar, nlam, support, max_sweeps=cd_sweeps, tol=tol)
    return w, r


def _removal_change(w, h, col_sq, w_bar, nlam, idx):
    """Δ_i: change of F when coordinate i is set to zero (others fixed)."""
    wi, wbi = w[idx], w_bar[idx]
    return wi * h[idx] + 0.5 * wi * wi * col_sq[idx] + 0.5 * nlam * (wbi * wbi - (wi - wbi) ** 2)


class GramColumns:
    """Columns ``Aᵀa_i`` of the Gram matrix, computed in batches (one BLAS
    matrix product) and cached while they take at most a quarter of the bytes
    of ``A`` (so the search never holds more than a fraction of A's size).

    One cache per design (``GramColumns.of``): the swap searches from every start and
    the greedy start share the columns (their supports overlap)."""

    def __init__(self, design):
        self.design = design
        self.capacity = max(1, design.nbytes // (4 * 8 * design.p))
        self.cache = {}
        self._b, self._atb = None, None

    @classmethod
    def of(cls, design):
        if design.gram_columns is None:
            design.gram_columns = cls(design)
        return design.gram_columns

    def atb(self, b):
        """``Âᵀb`` (read-only), kept for the last ``b``: the greedy start and the swap searches share it."""
        if self._b is not b:
            self._b, self._atb = b, self.design.rmatvec(b)
            self._atb.setflags(write=False)
        return self._atb

    def prefetch(self, idx):
        missing = [i for i in idx if i not in self.cache][: max(0, self.capacity - len(self.cache))]
        if missing:
            block = self.design.gram_cols(missing)
            self.cache.update((i, np.ascontiguousarray(block[:, t])) for t, i in enumerate(missing))

    def correlations(self, b, support, coef):
        """``Âᵀ(b − Â_S coef) = Âᵀb − Σ_{i∈S} (Âᵀâ_i) coef_i`` from the cached columns (O(|S| p), no pass over
        A), or None when a column of S is not cached."""
        if not all(i in self.cache for i in support):
            return None
        out = self.atb(b).copy()
        for i, c in zip(support, coef):
            out -= c * self.cache[i]
        return out

    def __getitem__(self, i):
        if i in self.cache:
            return self.cache[i]
        return self.design.rmatvec(self.design.cols64([i])[:, 0])


# Exact swap scoring may spend this many flops per removed coordinate (beyond
# one product with A): enough to score every swap of a problem with a few
# dozen columns, where one-coordinate estimates mislead most.
_EXACT_SCORING_FLOPS = 1e6
# Python-level cost of one exact refit, in flop equivalents (~50 µs).
_REFIT_OVERHEAD_FLOPS = 1e5


def swap_search(design, b, w, r, w_bar, nlam, *, max_swaps, tol, n_candidates=5):
    """1-swap local search from the feasible ``w``; returns ``(w, r, n_swaps)``.

    For each ``i ∈ S`` (cheapest removal first) the outside coordinates are
    ranked by their one-coordinate gain. When a refit of S costs less than a
    product with A, the best ``n_candidates`` swaps (all of them on small
    problems) are scored exactly (refit of ``S − i + j``); otherwise the
    one-coordinate estimate decides. The first
    improving swap is taken, and the scan restarts from the new support.
    """
    gram = GramColumns.of(design)
    if 0 < np.count_nonzero(w) <= gram.capacity:
        found = _gram_swap_search(design, gram, b, w, r, w_bar, nlam, max_swaps=max_swaps, tol=tol)
        if found is not None:
            return found
    w, r = w.copy(), r.copy()
    col_sq = design.col_sq()
    in_s = np.zeros(w.size, dtype=np.bool_)
    in_s[np.flatnonzero(w)] = True
    if not in_s.any():
        return w, r, 0
    refit_cost = backsolve_cost(design.n, int(in_s.sum()))
    exact = refit_cost * n_candidates <= design.n * design.p + _EXACT_SCORING_FLOPS
    per_refit = refit_cost + _REFIT_OVERHEAD_FLOPS
    n_candidates = int(np.clip(_EXACT_SCORING_FLOPS // per_refit, n_candidates, design.p))
    gain, value_j = np.empty(w.size), np.empty(w.size)
    n_swaps = 0
    while n_swaps < max_swaps:
        support = np.flatnonzero(in_s)
        value = objective_from_residual(r, w, w_bar, nlam)
        threshold = value - tol * max(value, np.finfo(float).tiny)
        h = design.rmatvec(r)
        order = support[np.argsort(_removal_change(w, h, col_sq, w_bar, nlam, support), kind="stable")]
        gram.prefetch(order)
        for i in order:
            kern.insertion_gains(h, gram[i], w[i], w_bar, col_sq, nlam, in_s, gain, value_j)
            if exact:
                trial = _best_exact_swap(design, b, w_bar, nlam, in_s, i,
                                         largest(gain, n_candidates, in_s))
            else:
                trial = _one_coordinate_swap(design, b, w, r, w_bar, nlam, in_s, i,
                                             gain, value_j, h, col_sq, tol)
            if trial is not None and objective_from_residual(trial[1], trial[0], w_bar, nlam) < threshold:
                w, r = trial
                in_s[:] = False
                in_s[np.flatnonzero(w)] = True
                n_swaps += 1
                break
        else:
            break
    return w, r, n_swaps


class _SingularSupport(Exception):
    """``A_SᵀA_S + nλI`` is numerically singular: the Gram-form scores do not apply."""


def swap_gains(C, support, hb, col_sq, w_bar, nlam):
    """``(best_j, gain, removal)``: swapping ``support[t]`` for ``best_j[t]`` lowers F by ``gain[t]``, the
    most of any j ∉ S (refits on both supports; −1 and −inf when every column is in S), and dropping
    ``support[t]`` raises F by ``removal[t]``. ``C`` holds the Gram columns of the support as rows,
    ``hb = Aᵀb``."""
    k = support.size
    try:
        factor = scipy.linalg.cho_factor(C[:, support] + nlam * np.eye(k), check_finite=False)
    except np.linalg.LinAlgError:
        raise _SingularSupport from None
    M = scipy.linalg.cho_solve(factor, np.eye(k), check_finite=False)
    diag = np.diag(M).copy()
    if not (np.all(diag > 0.0) and np.all(np.isfinite(M))):
        raise _SingularSupport
    u = M @ (hb[support] + nlam * w_bar[support])
    h = hb - C.T @ u + nlam * w_bar
    in_support = np.zeros(C.shape[1], dtype=np.bool_)
    in_support[support] = True
    best_j, gain = np.empty(k, dtype=np.int64), np.empty(k)
    kern.best_swaps(C, M @ C, h, u, diag, col_sq + nlam, in_support, best_j, gain)
    removal = 0.5 * u * u / diag
    return best_j, gain - removal, removal


def _improving_gram_swap(C, support, hb, col_sq, w_bar, nlam, min_gain):
    """``(t, j)``: a swap ``support[t] → j`` lowering F by more than ``min_gain``, or None. As the scan of
    large supports: the cheapest removal first, each with its best j."""
    best_j, gain, removal = swap_gains(C, support, hb, col_sq, w_bar, nlam)
    for t in np.argsort(removal, kind="stable"):
        if gain[t] > min_gain:
            return int(t), int(best_j[t])
    return None


def _gram_swap_search(design, gram, b, w, r, w_bar, nlam, *, max_swaps, tol):
    """1-swaps scored exactly from the Gram columns of the support (module docstring); ``(w, r, n_swaps)``
    refitted on the last support, or None when a support's Gram matrix is singular (the caller then scans
    as for large supports)."""
    value = objective_from_residual(r, w, w_bar, nlam)
    min_gain = tol * max(value, np.finfo(float).tiny)
    hb, col_sq = gram.atb(b), design.col_sq()
    support = np.flatnonzero(w)
    n_swaps = 0
    while n_swaps < max_swaps:
        gram.prefetch(support)
        try:
            swap = _improving_gram_swap(np.stack([gram[i] for i in support]), support, hb, col_sq, w_bar, nlam,
                                        min_gain)
        except _SingularSupport:
            return None
        if swap is None:
            break
        support = np.sort(np.append(np.delete(support, swap[0]), swap[1]))
        n_swaps += 1
    if n_swaps == 0:
        return w.copy(), r.copy(), 0
    w_new = ridge_on_support(design, b, support, w_bar, nlam)
    r_new = b - design.cols_matvec(support, w_new[support])
    if objective_from_residual(r_new, w_new, w_bar, nlam) > value:
        return w.copy(), r.copy(), 0
    return w_new, r_new, n_swaps


def _swapped(in_s, i, j):
    mask = in_s.copy()
    mask[i], mask[j] = False, True
    return np.flatnonzero(mask)


def _best_exact_swap(design, b, w_bar, nlam, in_s, i, candidates):
    best, best_value = None, np.inf
    for j in candidates:
        support = _swapped(in_s, i, j)
        w = ridge_on_support(design, b, support, w_bar, nlam)
        r = b - design.cols_matvec(support, w[support])
        value = objective_from_residual(r, w, w_bar, nlam)
        if value < best_value:
            best, best_value = (w, r), value
    return best


def _one_coordinate_swap(design, b, w, r, w_bar, nlam, in_s, i, gain, value_j, h, col_sq, tol):
    j = int(np.argmax(gain))
    if gain[j] <= _removal_change(w, h, col_sq, w_bar, nlam, i):
        return None
    w, r = w.copy(), r.copy()
    design.add_cols(np.array([i, j]), np.array([w[i], -value_j[j]]), r)
    w[i], w[j] = 0.0, value_j[j]
    return refit_support(design, b, w, r, w_bar, nlam, _swapped(in_s, i, j), tol=tol,
                         budget=design.n * design.p)
