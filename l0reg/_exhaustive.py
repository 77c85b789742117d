"""Exhaustive search over supports: a certified global optimum on small problems.

When the ``C(p, k)`` supports of size k are few and each costs little (a QR of
an ``(n + k) × k`` matrix), F is minimised over every one of them
(:func:`l0reg._brute_force.best_of_all_supports`) on the solver's scaled data,
with the refits' singular-value cutoff (``_backsolve.default_rcond``) so that
the winner is the support the solver's own refit does best on. Adding a
coordinate never raises the minimum, so supports of size exactly k suffice.
"""
import math

import numpy as np

from ._backsolve import default_rcond
from ._brute_force import best_of_all_supports

# Enumerate when there are at most this many supports, ...
_MAX_SUPPORTS = 5000
# ... their QR factorisations cost at most this many flops in all, ...
_MAX_FLOPS = 1e8
# ... and the float64 copy of the design has at most this many entries.
_MAX_ENTRIES = 1 << 20


def affordable(n, p, k):
    """Whether enumerating all supports of size k is cheap."""
    if n * p > _MAX_ENTRIES:
        return False
    count = math.comb(p, k)
    return count <= _MAX_SUPPORTS and count * (n + k) * k * k <= _MAX_FLOPS


def best_support(design, b, w_bar, nlam, k):
    """The support of size ``k`` on which the minimum of F is lowest (sorted int64)."""
    if k == 0:
        return np.empty(0, dtype=np.int64)
    rows = design.n + (k if nlam > 0 else 0)
    support, _ = best_of_all_supports(design.cols64(np.arange(design.p)), b, nlam, w_bar, k,
                                      default_rcond(design.A.dtype, rows, k))
    return np.asarray(support, dtype=np.int64)
