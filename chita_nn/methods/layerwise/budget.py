"""What one layer keeps, and the masks that keep the highest scores under it.

A layer's weight is seen as rows ``(r, p)`` (output rows, input columns).  A :class:`Budget` is either a
sparsity ``s`` applied to every row (``round(s·p)`` pruned per row, as SparseGPT and Wanda do) or to the
whole layer (``round(s·r·p)`` pruned in total), or an N:M pattern (``m − n`` pruned in every group of ``m``
consecutive entries of a row, along the input dimension).
"""
from dataclasses import dataclass

import torch


def pruned_count(sparsity, size):
    """Entries pruned out of ``size`` at ``sparsity`` (rounded to the nearest integer)."""
    return round(sparsity * size)


@dataclass(frozen=True)
class Budget:
    """``sparsity`` per row (``per_row``) or per layer, or an N:M pattern (``m > 0``; then ``per_row``)."""

    sparsity: float
    per_row: bool = True
    n: int = 0
    m: int = 0

    @property
    def nm(self):
        return self.m > 0

    def keep_per_row(self, p):
        """Nonzeros each row keeps (row budgets and N:M only)."""
        if self.nm:
            return self.n * (p // self.m)
        return p - pruned_count(self.sparsity, p)

    def select(self, scores):
        """Keep mask (bool, like ``scores``) of the highest ``scores`` allowed by the budget."""
        return prune_lowest(scores, self, 0, scores.shape[1], scores.shape[1])

    def solve_gram_args(self, r, p):
        """The constraint as keyword arguments of :func:`l0reg.solve_gram`."""
        if self.nm:
            return {"projection": (self.n, self.m)}
        if self.per_row:
            return {"k": self.keep_per_row(p)}
        return {"k": r * p - pruned_count(self.sparsity, r * p), "budget": "layer"}


def prune_lowest(scores, budget, start, end, p):
    """Keep mask of the columns ``[start, end)`` of a layer with ``p`` columns (``scores`` holds just them):
    the lowest scores are pruned, as many as the budget allots to those columns.

    Row and layer budgets allot ``round(s·end) − round(s·start)`` entries per row (times the rows for a
    layer budget), so that sweeping the columns in blocks prunes exactly the budget in total; N:M prunes
    ``m − n`` in every group (``start`` and ``end`` are multiples of ``m``).
    """
    r, width = scores.shape
    keep = torch.ones_like(scores, dtype=torch.bool)
    if budget.nm:
        groups = scores.reshape(r, width // budget.m, budget.m)
        lowest = groups.topk(budget.m - budget.n, dim=2, largest=False).indices
        keep.view(r, -1, budget.m).scatter_(2, lowest, False)
    elif budget.per_row:
        count = pruned_count(budget.sparsity, end) - pruned_count(budget.sparsity, start)
        if count:
            keep.scatter_(1, scores.topk(count, dim=1, largest=False).indices, False)
    else:
        count = pruned_count(budget.sparsity, r * end) - pruned_count(budget.sparsity, r * start)
        if count:
            keep.view(-1)[scores.reshape(-1).topk(count, largest=False).indices] = False
    return keep
