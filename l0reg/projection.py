"""Sparsity constraints as pluggable projections.

A projection ``P`` maps a dense vector to the nearest point of the constraint
set. The solvers only ask it these things, so a new constraint (N:M groups,
structured blocks) plugs in by implementing them:

- ``support(v)``: the support of ``P(v)``;
- ``support_on_line(w, g, tau)``: the support of ``P(w − τ g)``;
- ``path_events(w, g, support, max_events)``: the breakpoints of
  ``τ ↦ supp P(w − τ g)`` (where the kept set changes), which make the IHT
  line search exact on the first pieces of the path;
- ``restrict(m)``: the constraint on a working set of m coordinates.
"""
from abc import ABC, abstractmethod

import numpy as np

from . import _kernels as kern
from ._validation import check_k


def largest(score, m, exclude=None):
    """Indices of the ``m`` largest entries of ``score`` (outside the boolean
    mask ``exclude``), largest first, ties by lowest index.

    One partition (introselect, O(p)) and a sort of the ``m`` winners only.
    """
    if exclude is not None:
        score = np.where(exclude, -np.inf, score)
        m = min(m, int(score.size - np.count_nonzero(exclude)))
    m = min(m, score.size)
    if m <= 0:
        return np.empty(0, dtype=np.int64)
    thresh = np.partition(score, score.size - m)[score.size - m]
    above = np.flatnonzero(score > thresh)
    ties = np.flatnonzero(score == thresh)[: m - above.size]
    chosen = np.concatenate([above, ties])
    return chosen[np.argsort(-score[chosen], kind="stable")]


class Projection(ABC):
    """Base class of sparsity constraints."""

    @abstractmethod
    def bind(self, n_features):
        """Return a copy validated for vectors of length ``n_features``."""

    @property
    @abstractmethod
    def size(self):
        """Largest number of nonzeros a feasible vector can have."""

    @abstractmethod
    def support_on_line(self, w, g, tau):
        """Sorted support of ``P(w − τ g)``."""

    def support(self, v):
        """Sorted support of ``P(v)``."""
        return self.support_on_line(v, np.zeros_like(v), 0.0)

    @abstractmethod
    def start_support(self, w, g):
        """The support of ``P(w − τ g)`` for small τ > 0 (``w`` must be feasible)."""

    @abstractmethod
    def path_events(self, w, g, support, max_events):
        """``(taus, leaving, entering)``: breakpoints of ``τ ↦ supp P(w − τ g)``."""

    @abstractmethod
    def restrict(self, n_columns):
        """The constraint on a sub-vector of ``n_columns`` coordinates (active sets)."""


class TopK(Projection):
    """Keep the ``k`` entries of largest magnitude: ``{w : ‖w‖₀ ≤ k}``.

    Ties are broken by index (lowest first), so the projection is deterministic.
    """

    def __init__(self, k):
        self.k = k

    def __repr__(self):
        return f"TopK(k={self.k})"

    def bind(self, n_features):
        return TopK(check_k(self.k, n_features))

    @property
    def size(self):
        return self.k

    def support_on_line(self, w, g, tau):
        return np.sort(largest(np.abs(w - tau * g) if tau else np.abs(w), self.k))

    def start_support(self, w, g):
        # Nonzeros of w first (they dominate for small τ), then zeros by |g|.
        nonzero = np.flatnonzero(w)
        if nonzero.size > self.k:
            raise ValueError(f"w has {nonzero.size} nonzeros, more than k={self.k}")
        missing = self.k - nonzero.size
        if missing == 0:
            return nonzero
        mask = np.zeros(w.size, dtype=np.bool_)
        mask[nonzero] = True
        fill = largest(np.abs(g), missing, mask)
        return np.sort(np.concatenate([nonzero, fill]))

    def restrict(self, n_columns):
        return TopK(min(self.k, n_columns))

    def path_events(self, w, g, support, max_events):
        mask = np.zeros(w.size, dtype=np.bool_)
        mask[support] = True
        rays = largest(np.abs(g), max_events + 1, mask)
        return kern.topk_path_events(np.ascontiguousarray(w, dtype=np.float64),
                                     np.ascontiguousarray(g, dtype=np.float64),
                                     np.ascontiguousarray(support, dtype=np.int64), rays, max_events)
