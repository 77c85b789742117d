"""Magnitude pruning of one layer: keep the largest ``|W_ij|`` under the budget (per row, per layer or N:M)."""
from .budget import check_layer


def magnitude(W, H, budget, **_):
    """``(W ⊙ keep, keep)`` with ``keep`` the largest ``|W|`` (``H`` unused)."""
    check_layer(W, H, budget)
    keep = budget.select(W.abs())
    return W * keep, keep
