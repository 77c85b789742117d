"""A SparseGPT-style OBS sweep (Frantar & Alistarh, 2023), written from the paper's description.

Pruning the rows of W to reconstruct ``X W̄ᵀ`` is, for each row, the quadratic ``½ dᵀ H d`` in ``d = w − w̄``
(H dampened).  The sweep visits the columns left to right; when column j is reached, the columns before it
are fixed and the inverse Hessian of the remaining ones, ``H_F⁻¹`` (F = {j, …, p−1}), gives the optimal
(OBS) update of the remaining weights when ``w_j`` is set to its final value q:

    δ_F = −(w_j − q) / [H_F⁻¹]_jj · H_F⁻¹[:, j].

All the ``H_F⁻¹`` come from one upper Cholesky factor U of ``H⁻¹`` (``H⁻¹ = UᵀU``): row j of U is
``H_F⁻¹[j, F] / √[H_F⁻¹]_jj``, so the update is ``−(w_j − q)/U_jj · U[j, F]``.  Columns are processed in
blocks of ``block_size``: updates inside a block are applied at once, and the block's accumulated errors
update the later columns with one product (lazy batch updates).  The pruning mask is chosen adaptively at
the start of each block (N:M: of each group of m) from the current weights by ``w_ij² / U_jj²``, the OBS
saliency, lowest first, as many as the budget allots to those columns.
"""
import torch

from .budget import check_layer, prune_lowest
from .damping import dampened


def inverse_cholesky(H, dampening):
    """Upper Cholesky factor U of ``(H + λI)⁻¹`` (see :func:`dampened`)."""
    Hd = dampened(H, dampening)
    L, info = torch.linalg.cholesky_ex(Hd)
    if int(info):
        raise ValueError(f"the dampened Gram matrix is not positive definite (dampening={dampening}); "
                         "use a larger dampening")
    return torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)


def sparsegpt(W, H, budget, *, dampening=0.01, block_size=128, keep=None, factor=None, **_):
    """``(W_new, keep)``: W (r × p) pruned to the budget by the OBS sweep.

    ``keep`` (bool r × p) fixes the mask instead of choosing it; ``factor`` is a precomputed
    :func:`inverse_cholesky` of H (layers sharing their inputs share it).
    """
    check_layer(W, H, budget)
    U = inverse_cholesky(H, dampening) if factor is None else factor
    W = W.clone()
    p = W.shape[1]
    m = budget.m if budget.nm else 1
    step = max(m, block_size // m * m)
    chosen = torch.ones_like(W, dtype=torch.bool) if keep is None else keep.clone()
    for start in range(0, p, step):
        end = min(start + step, p)
        Wb, Ub = W[:, start:end], U[start:end, start:end]
        diag = torch.diagonal(Ub)
        kb = chosen[:, start:end]
        if keep is None and not budget.nm:
            kb[:] = prune_lowest((Wb / diag) ** 2, budget, start, end, p)
        errors = torch.zeros_like(Wb)
        for j in range(end - start):
            if keep is None and budget.nm and j % m == 0:
                kb[:, j:j + m] = prune_lowest((Wb[:, j:j + m] / diag[j:j + m]) ** 2, budget, 0, m, m)
            err = Wb[:, j] * ~kb[:, j] / diag[j]
            Wb[:, j:] -= err[:, None] * Ub[j, j:][None, :]
            errors[:, j] = err
        Wb *= kb  # exact zeros where pruned
        W[:, end:] -= errors @ U[start:end, end:]
    return W, chosen
