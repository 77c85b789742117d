"""Forward greedy selection: a second starting point for small problems.

Starting from the empty support, add the coordinate whose one-dimensional
move lowers F most, ``argmax_j g_j² / (‖a_j‖² + nλ)`` with ``g = ∇F``, then
refit the support exactly (orthogonal matching pursuit, with the ridge term).
Cost: k products with Aᵀ and k small refits.
"""
import numpy as np

from ._backsolve import ridge_on_support


def forward_greedy(design, b, k, w_bar, nlam):
    """A feasible point with ``k`` nonzeros built greedily; returns ``w``."""
    col_sq = design.col_sq()
    in_s = np.zeros(design.p, dtype=np.bool_)
    w = np.zeros(design.p)
    r = b.copy()
    for _ in range(k):
        g = -design.rmatvec(r) - nlam * w_bar
        score = np.where(in_s, -1.0, g * g / np.maximum(col_sq + nlam, np.finfo(float).tiny))
        in_s[int(np.argmax(score))] = True
        support = np.flatnonzero(in_s)
        w = ridge_on_support(design, b, support, w_bar, nlam)
        r = b - design.cols_matvec(support, w[support])
    return w
