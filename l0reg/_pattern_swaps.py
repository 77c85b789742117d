"""Exact swap search for structured constraints (N:M, groups): small problems only.

From the support S of a feasible ``w``, every exchange the projection offers
(``projection.swap_moves``: a coordinate for another of its N:M group, a group
for another group) gives a feasible support S′; each is refitted exactly,
``min {F(w) : supp w ⊆ S′}``, the best one is taken if it lowers F by more
than ``tol·F``, and the search repeats. One pass costs ``n_swap_moves`` refits.
"""
import numpy as np

from ._backsolve import backsolve_cost, ridge_on_support
from ._local_search import objective_from_residual

# Python-level cost of one exact refit, in flop equivalents (~50 µs).
_REFIT_OVERHEAD_FLOPS = 1e5


def swap_pass_cost(n, projection):
    """Flops of one pass over the projection's swap moves (inf when it has none)."""
    if not projection.n_swap_moves:
        return np.inf
    return projection.n_swap_moves * (backsolve_cost(n, projection.size) + _REFIT_OVERHEAD_FLOPS)


def pattern_swap_search(design, b, w, r, w_bar, nlam, *, projection, max_swaps, tol):
    """Best-improvement swap search from the feasible ``w``; returns ``(w, r, n_swaps)``."""
    value = objective_from_residual(r, w, w_bar, nlam)
    n_swaps = 0
    while n_swaps < max_swaps:
        support = np.flatnonzero(w)
        best = None
        threshold = value - tol * max(abs(value), np.finfo(float).tiny)
        for leaving, entering in projection.swap_moves(support):
            trial = np.union1d(np.setdiff1d(support, leaving), entering)
            w_t = ridge_on_support(design, b, trial, w_bar, nlam)
            r_t = b - design.cols_matvec(trial, w_t[trial])
            value_t = objective_from_residual(r_t, w_t, w_bar, nlam)
            if value_t < threshold:
                best, threshold = (w_t, r_t, value_t), value_t
        if best is None:
            break
        w, r, value = best
        n_swaps += 1
    return w, r, n_swaps
