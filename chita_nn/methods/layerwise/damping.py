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
