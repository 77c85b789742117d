"""What one layer keeps, and the masks that keep the highest scores under it.

A layer's weight is seen as rows ``(r, p)`` (output rows, input columns).  A :class:`Budget` is either a
sparsity ``s`` applied to every row (``round(s·p)`` pruned per row, as SparseGPT and Wanda do) or to the
whole layer (``round(s·r·p)`` pruned in total), or an N:M pattern (``m − n`` pruned in every group of ``m``
consecutive entries of a row, along the input dimension).
"""
import numbers
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

    def __post_init__(self):
        if isinstance(self.sparsity, bool) or not isinstance(self.sparsity, numbers.Real) \
                or not 0 <= self.sparsity <= 1:
            raise ValueError(f"Budget: sparsity must be a number in [0, 1], got {self.sparsity!r}")
        if not isinstance(self.per_row, bool):
            raise ValueError(f"Budget: per_row must be True or False, got {self.per_row!r}")
        if (self.n, self.m) != (0, 0) and not (all(isinstance(v, int) and not isinstance(v, bool)
                                                   for v in (self.n, self.m)) and 0 < self.n < self.m):
            raise ValueError(f"Budget: an N:M budget needs integers 0 < n < m, got n={self.n!r}, m={self.m!r}")

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


def check_layer(W, H, budget):
    """``TypeError`` / ``ValueError`` naming the argument unless ``W`` (r × p) and ``H`` (p × p) are floating-point
    tensors of one dtype and device and ``budget`` a :class:`Budget` that fits p (the per-layer solvers' inputs)."""
    for name, value in (("W", W), ("H", H)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch tensor, got {type(value).__name__}")
    if W.dim() != 2 or not W.is_floating_point():
        raise ValueError(f"W must be a 2-D floating-point tensor (rows r x inputs p), got {W.dtype} of shape "
                         f"{tuple(W.shape)}")
    p = W.shape[1]
    if tuple(H.shape) != (p, p) or H.dtype != W.dtype or H.device != W.device:
        raise ValueError(f"H must be {p} x {p} (p = the columns of W), {W.dtype} on {W.device} as W, got "
                         f"{H.dtype} of shape {tuple(H.shape)} on {H.device}")
    if not isinstance(budget, Budget):
        raise TypeError(f"budget must be a chita_nn.methods.layerwise.Budget (e.g. Budget(0.5)), got "
                        f"{type(budget).__name__}")
    if budget.nm and p % budget.m:
        raise ValueError(f"budget {budget.n}:{budget.m} needs W's columns (p = {p}) to be a multiple of {budget.m}")
