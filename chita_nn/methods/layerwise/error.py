"""Reconstruction error of a pruned layer from the Gram matrix of its inputs.

For inputs X (n × p) with ``H = XᵀX`` and rows W̄ → W (r × p), ``D = W̄ − W``:
``‖X Dᵀ‖²_F = tr(D H Dᵀ)``, row by row ``d_rᵀ H d_r``; the relative error divides by ``tr(W̄ H W̄ᵀ)``.
"""


def row_errors(W_bar, W, H):
    """``d_rᵀ H d_r`` for every row (a tensor of length r)."""
    D = W_bar - W
    return ((D @ H) * D).sum(dim=1)


def relative_error(W_bar, W, H):
    """``tr((W̄ − W) H (W̄ − W)ᵀ) / tr(W̄ H W̄ᵀ)`` (0 for an all-zero layer)."""
    dense = float(((W_bar @ H) * W_bar).sum())
    return float(row_errors(W_bar, W, H).sum()) / dense if dense > 0 else 0.0
