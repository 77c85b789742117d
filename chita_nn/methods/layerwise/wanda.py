"""Wanda (Sun et al., 2023): keep the largest ``|W_ij| · ‖X_j‖₂`` under the budget, weights unchanged.

``‖X_j‖₂² = H_jj`` up to the common factor n (H is the mean ``XᵀX / n``), which does not change the ranking.
"""
import torch

from .budget import check_layer


def wanda_scores(W, norms_squared):
    """``|W_ij| · ‖X_j‖₂`` from ``norms_squared = diag H``."""
    return W.abs() * norms_squared.clamp(min=0).sqrt()


def wanda(W, H, budget, **_):
    """``(W ⊙ keep, keep)`` with ``keep`` the largest Wanda scores (per row as in the paper, or per layer)."""
    check_layer(W, H, budget)
    keep = budget.select(wanda_scores(W, torch.diagonal(H)))
    return W * keep, keep
