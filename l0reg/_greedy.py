"""Forward greedy selection: a second starting point for small problems.

Starting from the empty support, add the coordinate whose one-dimensional
move lowers F most, ``argmax_j g_j² / (‖a_j‖² + nλ)`` with ``g = ∇F``, then
refit the support exactly (orthogonal matching pursuit, with the ridge term).
With ``r = b − A_S w_S``, ``Aᵀr = Aᵀb − Σ_{i∈S} (Aᵀa_i) w_i``: one product ``Aᵀb`` and
one Gram column per selected coordinate (kept for the swap search), k small refits.
"""
import numpy as np

from ._backsolve import ridge_on_support
from ._local_search import GramColumns


def forward_greedy(design, b, k, w_bar, nlam):
    """A feasible point with ``k`` nonzeros built greedily; returns ``w``."""
    col_sq = design.col_sq()
    gram = GramColumns.of(design)
    in_s = np.zeros(design.p, dtype=np.bool_)
    w = np.zeros(design.p)
    atb = gram.atb(b)
    h = atb  # Âᵀr, r = b − Â_S w_S
    for _ in range(k):
        g = -h - nlam * w_bar
        score = np.where(in_s, -1.0, g * g / np.maximum(col_sq + nlam, np.finfo(float).tiny))
        j = int(np.argmax(score))
        in_s[j] = True
        gram.prefetch([j])
        support = np.flatnonzero(in_s)
        w = ridge_on_support(design, b, support, w_bar, nlam)
        h = atb - np.column_stack([gram[i] for i in support]) @ w[support]
    return w
