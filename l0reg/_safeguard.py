"""The returned point: the best of several feasible candidates, by exact F.

Candidates are the search's result and points that any answer should beat: 0,
the start as given, and the magnitude supports of the start and of w̄ refitted
exactly (plus the enumerated optimum on small problems). Each candidate is
rounded to the caller's dtype in the caller's units and F is recomputed from the
rounded values with the residual accumulated in float64, so that the reported
objective is that of the returned coefficients.
"""
import numpy as np

from ._backsolve import ridge_on_support
from ._scaling import exact_objective


def magnitude_refits(design, projection, b, w_bar, nlam, points):
    """``argmin {F(w) : supp w ⊆ supp P(x)}`` for each point x (distinct supports only)."""
    seen, refits = set(), []
    for x in points:
        support = projection.support(x)
        if support.tobytes() not in seen:
            seen.add(support.tobytes())
            refits.append(ridge_on_support(design, b, support, w_bar, nlam))
    return refits


def best_candidate(design, scaling, dtype, b, w_bar, nlam, candidates):
    """``(coef, F̂, index)`` of the best candidate (internal units) once rounded to ``dtype``.

    ``coef`` is in the caller's units and dtype; ties go to the earliest candidate.
    """
    best = (None, np.inf, -1)
    for index, w in enumerate(candidates):
        with np.errstate(over="ignore"):  # a value beyond the dtype's range makes F infinite
            coef = scaling.uncoef(w).astype(dtype)
        value = exact_objective(design, b, scaling.coef(coef), w_bar, nlam)
        value = value if np.isfinite(value) else np.inf
        if best[0] is None or value < best[1]:
            best = (coef, value, index)
    return best
