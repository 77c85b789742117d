"""Sparsity patterns of the pruned weights: unstructured, N:M (``"2:4"``, ``"4:8"``) and whole output channels.

Every weight is seen as a matrix ``(rows, row_length)``: its flattened row-major layout with ``rows =
shape[0]`` (output channels of ``Linear`` / ``Conv*``).  An N:M pattern keeps at most ``n`` of every ``m``
consecutive entries of a row, i.e. along the input dimension of a ``Linear`` (the layout 2:4 sparse tensor
cores use); ``"channel"`` keeps whole rows.  A pattern turns into an :mod:`l0reg` ``Projection`` on a
column range of the flattened weights, so the solvers, the step search and every fallback respect it.
"""
import numbers
import re

import numpy as np

import l0reg

PATTERNS = ("unstructured", "N:M (e.g. '2:4')", "channel")


class Pattern:
    """A parsed ``pattern`` argument: ``kind`` in {"unstructured", "nm", "channel"}, and ``n``, ``m``."""

    def __init__(self, kind, n=None, m=None):
        self.kind, self.n, self.m = kind, n, m

    def __repr__(self):
        return f"{self.n}:{self.m}" if self.kind == "nm" else self.kind

    @classmethod
    def parse(cls, pattern):
        """``None`` / ``"unstructured"``, ``"N:M"`` (or a tuple ``(n, m)``) or ``"channel"``."""
        if pattern is None or pattern == "unstructured":
            return cls("unstructured")
        if pattern == "channel":
            return cls("channel")
        if isinstance(pattern, str) and re.fullmatch(r"\s*\d+\s*:\s*\d+\s*", pattern):
            n, m = (int(part) for part in pattern.split(":"))
        elif (isinstance(pattern, tuple) and len(pattern) == 2
              and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in pattern)):
            n, m = (int(v) for v in pattern)
        else:
            raise ValueError(f"pattern must be one of {PATTERNS}, got {pattern!r}")
        if not 0 < n < m:
            raise ValueError(f"pattern {pattern!r}: an N:M pattern needs 0 < N < M, got N={n}, M={m}")
        return cls("nm", n, m)

    @property
    def structured(self):
        return self.kind != "unstructured"

    def sparsity(self, sparsity):
        """The sparsity the pattern implies: ``1 − n/m`` for N:M (``sparsity`` must be None or equal)."""
        if self.kind != "nm":
            if sparsity is None:
                raise ValueError(f"sparsity is required with pattern={self!r}")
            return sparsity
        implied = 1.0 - self.n / self.m
        if sparsity is not None and abs(sparsity - implied) > 1e-9:
            raise ValueError(f"sparsity={sparsity} contradicts pattern='{self}', which keeps {self.n} of every "
                             f"{self.m} weights (sparsity {implied:g}); pass sparsity=None or {implied:g}")
        return implied

    def check_params(self, params):
        """Every weight's row length must be a multiple of ``m`` (N:M)."""
        if self.kind != "nm":
            return
        for pp in params:
            row = row_length(pp.shape)
            if row % self.m:
                raise ValueError(f"pattern='{self}' needs rows whose length is a multiple of {self.m}, but "
                                 f"{pp.name} of shape {tuple(pp.shape)} has rows of {row}; leave it out with "
                                 f"ignore=[{pp.module_name!r}] or use another pattern")

    def projection(self, start, end, row, keep_fraction):
        """The l0reg projection on columns ``[start, end)`` of one layer whose rows have ``row`` entries,
        keeping ``keep_fraction`` (channel pattern: of its rows); None for unstructured (TopK)."""
        if self.kind == "nm":
            return l0reg.NM(self.n, self.m).bind(end - start)
        if self.kind == "channel":
            rows = (end - start) // row
            return l0reg.Groups(row, int(np.floor(keep_fraction * rows + 1e-9))).bind(end - start)
        return None

    def holds(self, keep, slices, shapes):
        """Whether the boolean ``keep`` satisfies the pattern in every layer."""
        for (start, end), shape in zip(slices, shapes):
            rows = keep[start:end].reshape(-1, row_length(shape))
            if self.kind == "nm" and np.any(rows.reshape(-1, self.m).sum(axis=1) > self.n):
                return False
            if self.kind == "channel" and np.any(rows.any(axis=1) & ~rows.all(axis=1)):
                return False
        return True


def row_length(shape):
    """Entries per output row of a weight of ``shape``."""
    return int(np.prod(shape[1:])) if len(shape) > 1 else int(shape[0])


def pattern_keep(pattern, scores, slices, shapes, sparsity):
    """Keep mask of the pattern from ``scores`` (e.g. ``|w̄|``): top-n of every m (N:M) or the rows of largest
    norm in each layer (channel); one layer at a time."""
    keep = np.zeros(scores.size, dtype=bool)
    for (start, end), shape in zip(slices, shapes):
        projection = pattern.projection(start, end, row_length(shape), 1.0 - sparsity)
        keep[start:end] = l0reg.projection_mask(projection, scores[start:end])
    return keep
