"""Magnitude pruning of one layer: keep the largest ``|W_ij|`` under the budget (per row, per layer or N:M)."""


def magnitude(W, H, budget, **_):
    """``(W ⊙ keep, keep)`` with ``keep`` the largest ``|W|`` (``H`` unused)."""
    keep = budget.select(W.abs())
    return W * keep, keep
