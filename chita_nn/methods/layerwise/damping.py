"""The dampening shared by SparseGPT and layer-wise CHITA: ``λ = dampening · mean(diag H)``."""
import torch


def ridge(H, dampening):
    """``λ = dampening · mean(diag H)`` (the scale-free ridge, SparseGPT's "percdamp")."""
    return float(dampening * torch.diagonal(H).mean())


def dampened(H, dampening):
    """``H + λI``; a dead input (``H_jj = 0``, never active on the calibration data) gets ``H_jj = 1`` first,
    so that the matrix is positive definite even with ``dampening = 0``."""
    H = H.clone()
    diag = torch.diagonal(H)
    diag[diag == 0] = 1.0
    diag += ridge(H, dampening)
    return H


def corrected_target(W_bar, H, G, dampening):
    """The rows ``W*`` that best map the pruned model's inputs to the dense model's outputs, with a ridge
    towards ``W̄``: ``min ‖X_d W̄ᵀ − X_p Wᵀ‖² + nλ‖W − W̄‖²``, i.e. ``(H + λI) W*ᵀ = (G + λI) W̄ᵀ`` with
    ``H = X_pᵀX_p / n`` and ``G = X_pᵀX_d / n`` (``W* = W̄`` when the inputs agree).  Pruning ``W*`` under
    ``H`` then minimises the same objective up to a constant."""
    lam = ridge(H, dampening)
    eye = torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
    rhs = (G + lam * eye) @ W_bar.T
    return torch.linalg.solve(dampened(H, dampening), rhs).T
