"""Sparsity constraints as pluggable projections.

A projection ``P`` maps a dense vector to the nearest point of the constraint
set (a union of coordinate subspaces, closed under removing coordinates). The
solvers only ask it these things:

- ``bind(p)``: a copy validated for vectors of length p; ``size``: the most
  nonzeros a feasible vector can have; ``is_feasible(w)``;
- ``support(v)``: the support of ``P(v)``;
- ``support_on_line(w, g, tau)``: the support of ``P(w − τ g)``;
- ``start_support(w, g)``: that support for small τ > 0;
- ``path_events(w, g, support, max_events)``: the breakpoints of
  ``τ ↦ supp P(w − τ g)`` (where the kept set changes), which make the IHT
  line search exact on the first pieces of the path;
- ``expand(columns)`` and ``restrict(columns)``: the smallest superset of
  ``columns`` on which the constraint restricts (whole groups), and the
  constraint on that sub-vector (active sets);
- ``n_swap_moves`` and ``swap_moves(support)``: exchanges that keep the
  pattern, for the local search (TopK has its own, ``_local_search``).

Constraints: :class:`TopK` (``‖w‖₀ ≤ k``), :class:`NM` (n nonzeros in every
group of m consecutive coordinates) and :class:`Groups` (nonzeros in at most
``k_groups`` groups).
"""
import copy
import numbers
from abc import ABC, abstractmethod

import numpy as np

from . import _kernels as kern
from . import _projection_kernels as pkern
from ._validation import check_k, check_nonnegative_int, check_positive_int


def largest(score, m, exclude=None, ranked=True):
    """Indices of the ``m`` largest entries of ``score`` (outside the boolean
    mask ``exclude``), largest first, ties by lowest index; with ``ranked=False``
    the same set in increasing index order.

    One partition (introselect, O(p)), then a sort of the ``m`` winners only when
    ranked.
    """
    if exclude is not None:
        score = np.where(exclude, -np.inf, score)
        m = min(m, int(score.size - np.count_nonzero(exclude)))
    m = min(m, score.size)
    if m <= 0:
        return np.empty(0, dtype=np.int64)
    thresh = np.partition(score, score.size - m)[score.size - m]
    chosen = score > thresh
    ties = np.flatnonzero(score == thresh)[: m - np.count_nonzero(chosen)]
    if not ranked:
        chosen[ties] = True
        return np.flatnonzero(chosen)
    chosen = np.concatenate([np.flatnonzero(chosen), ties])
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
    def is_feasible(self, w):
        """Whether ``w`` satisfies the constraint."""

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
        """``(taus, leaving, entering)``: breakpoints of ``τ ↦ supp P(w − τ g)``
        from ``support = start_support(w, g)``; at ``taus[t]`` the index (or
        index array) ``leaving[t]`` leaves the support and ``entering[t]`` enters."""

    def expand(self, columns):
        """The smallest sorted superset of ``columns`` that :meth:`restrict` accepts."""
        return columns

    @abstractmethod
    def restrict(self, columns):
        """The constraint on the sub-vector ``w[columns]`` (sorted indices, active sets)."""

    n_swap_moves = 0

    def swap_moves(self, support):
        """``(leaving, entering)`` index arrays: the feasible exchanges from
        ``support`` for the local search (``n_swap_moves`` of them; none by default)."""
        return iter(())


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
        if not tau:
            return largest(np.abs(w), self.k, ranked=False)
        score = np.multiply(g, -tau, dtype=float)  # |w − τg| with one temporary
        score += w
        return largest(np.abs(score, out=score), self.k, ranked=False)

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

    def is_feasible(self, w):
        return np.count_nonzero(w) <= self.k

    def restrict(self, columns):
        return TopK(min(self.k, len(columns)))

    def path_events(self, w, g, support, max_events):
        mask = np.zeros(w.size, dtype=np.bool_)
        mask[support] = True
        rays = largest(np.abs(g), max_events + 1, mask)
        return kern.topk_path_events(np.ascontiguousarray(w, dtype=np.float64),
                                     np.ascontiguousarray(g, dtype=np.float64),
                                     np.ascontiguousarray(support, dtype=np.int64), rays, max_events)


def _require_bound(projection):
    if projection.n_features is None:
        raise ValueError(f"{projection!r} is not bound to a length yet; call bind(p) first")
    return projection.n_features


def _check_length(w, projection):
    if np.shape(w) != (_require_bound(projection),):
        raise ValueError(f"{projection!r} is bound to vectors of length {projection.n_features}, "
                         f"got shape {np.shape(w)}")
    return np.asarray(w)


def _as_columns(columns):
    return np.asarray(columns, dtype=np.int64)


class NM(Projection):
    """N:M sparsity: at most ``n`` nonzeros in every group of ``m`` consecutive
    coordinates (groups ``[0, m), [m, 2m), …``); ``P`` keeps the ``n`` entries
    of largest magnitude of each group (ties by lowest index).

    For a row-major ``(out, in)`` weight matrix flattened, the groups run along
    the input dimension (the 2:4 hardware layout). Several layers concatenated
    into one vector form consecutive groups too, as long as every layer's size
    is a multiple of ``m``. ``size = n·p/m``.
    """

    def __init__(self, n, m):
        self.m = check_positive_int(m, "m")
        self.n = check_nonnegative_int(n, "n")
        if self.n > self.m:
            raise ValueError(f"n must be at most m, got n={self.n} > m={self.m}")
        self.n_features = None

    def __repr__(self):
        return f"NM(n={self.n}, m={self.m})"

    def bind(self, n_features):
        if n_features % self.m:
            raise ValueError(
                f"{self!r} needs a length that is a multiple of m={self.m}, got {n_features} "
                f"coordinates ({n_features % self.m} left over); with several layers concatenated, "
                f"each layer's size must be a multiple of m")
        bound = copy.copy(self)
        bound.n_features = n_features
        return bound

    @property
    def size(self):
        return self.n * (_require_bound(self) // self.m)

    def _keep(self, score):
        """Boolean mask of the ``n`` largest scores of each group (ties by lowest index)."""
        grouped = score.reshape(-1, self.m)
        mask = np.zeros(grouped.shape, dtype=np.bool_)
        top = np.argsort(-grouped, axis=1, kind="stable")[:, :self.n]
        np.put_along_axis(mask, top, True, axis=1)
        return mask.reshape(-1)

    def is_feasible(self, w):
        w = _check_length(w, self)
        return bool(np.all(np.count_nonzero(w.reshape(-1, self.m), axis=1) <= self.n))

    def support_on_line(self, w, g, tau):
        return np.flatnonzero(self._keep(np.abs(w - tau * g) if tau else np.abs(w)))

    def start_support(self, w, g):
        # Nonzeros of w first (they dominate for small τ), then zeros by |g|.
        if not self.is_feasible(w):
            raise ValueError(f"w has more than n={self.n} nonzeros in a group of m={self.m}")
        return np.flatnonzero(self._keep(np.where(w != 0, np.inf, np.abs(g))))

    def path_events(self, w, g, support, max_events):
        kept = np.zeros(w.size, dtype=np.bool_)
        kept[support] = True
        return pkern.nm_path_events(np.ascontiguousarray(w, dtype=np.float64),
                                    np.ascontiguousarray(g, dtype=np.float64), kept, self.m, max_events)

    def expand(self, columns):
        groups = np.unique(_as_columns(columns) // self.m)
        return (groups[:, None] * self.m + np.arange(self.m)).reshape(-1)

    def restrict(self, columns):
        columns = _as_columns(columns)
        if not np.array_equal(columns, self.expand(columns)):
            raise ValueError(f"{self!r} restricts only to whole groups of m={self.m} coordinates")
        return self.bind(columns.size)

    @property
    def n_swap_moves(self):
        return (self.n_features // self.m) * self.n * (self.m - self.n)

    def swap_moves(self, support):
        """Exchange a kept coordinate for an unkept one of the same group."""
        in_s = np.zeros(self.n_features, dtype=np.bool_)
        in_s[support] = True
        for lo in range(0, self.n_features, self.m):
            group = np.arange(lo, lo + self.m)
            for i in group[in_s[group]]:
                for j in group[~in_s[group]]:
                    yield np.array([i]), np.array([j])


def _is_int(x):
    return isinstance(x, numbers.Integral) and not isinstance(x, (bool, np.bool_))


class Groups(Projection):
    """Group sparsity: nonzeros in at most ``k_groups`` groups; ``P`` keeps the
    ``k_groups`` groups of largest ℓ2 norm, every entry of a kept group (ties
    by lowest group label).

    ``groups`` is either an int s (consecutive groups of s coordinates: whole
    rows of a row-major ``(out, in)`` weight with s = in, i.e. output channels,
    or attention heads with s = head_dim·in), or an integer label per
    coordinate (any partition, e.g. input channels ``np.tile(np.arange(in), out)``).
    ``size`` is the total size of the ``k_groups`` largest groups.
    """

    def __init__(self, groups, k_groups):
        if _is_int(groups):
            check_positive_int(groups, "groups")
        self.groups, self.k_groups = groups, check_nonnegative_int(k_groups, "k_groups")
        self.n_features = None

    def __repr__(self):
        groups = self.groups if _is_int(self.groups) else "<labels>"
        return f"Groups(groups={groups}, k_groups={self.k_groups})"

    def bind(self, n_features):
        if _is_int(self.groups):
            width = int(self.groups)
            if n_features % width:
                raise ValueError(f"groups of {width} consecutive coordinates need a length that is a "
                                 f"multiple of {width}, got {n_features}")
            labels = np.arange(n_features) // width
        else:
            labels = np.asarray(self.groups)
            if labels.dtype.kind not in "iu":
                raise ValueError(f"groups must be a group size (int) or integer labels, got dtype {labels.dtype}")
            if labels.shape != (n_features,):
                raise ValueError(f"groups has shape {labels.shape}, expected one label per coordinate "
                                 f"({n_features},)")
        bound = copy.copy(self)
        bound.n_features = n_features
        bound._ids = np.unique(labels, return_inverse=True)[1].reshape(-1)
        bound._order = np.argsort(bound._ids, kind="stable")
        bound._bounds = np.concatenate([[0], np.cumsum(np.bincount(bound._ids))])
        if self.k_groups > bound.n_groups:
            raise ValueError(f"k_groups must be at most the number of groups ({bound.n_groups}), "
                             f"got {self.k_groups}")
        return bound

    @property
    def n_groups(self):
        return self._bounds.size - 1

    def members(self, group):
        """Sorted coordinates of the group numbered ``group`` (0 … n_groups − 1)."""
        return self._order[self._bounds[group]:self._bounds[group + 1]]

    @property
    def size(self):
        _require_bound(self)
        return int(np.sort(np.diff(self._bounds))[self.n_groups - self.k_groups:].sum())

    def _group_sum(self, x):
        return np.bincount(self._ids, weights=x, minlength=self.n_groups)

    def _coordinates(self, groups):
        """Sorted coordinates of the groups ``groups``."""
        keep = np.zeros(self.n_groups, dtype=np.bool_)
        keep[groups] = True
        return np.flatnonzero(keep[self._ids])

    def _occupied(self, w):
        """Boolean mask of the groups holding a nonzero of ``w``."""
        return self._group_sum(w != 0) > 0

    def is_feasible(self, w):
        w = _check_length(w, self)
        return int(np.count_nonzero(self._occupied(w))) <= self.k_groups

    def support_on_line(self, w, g, tau):
        v = w - tau * g if tau else w
        return self._coordinates(largest(self._group_sum(v * v), self.k_groups))

    def start_support(self, w, g):
        # Groups holding nonzeros of w first (they dominate for small τ), then by ‖g_G‖.
        occupied = self._occupied(w)
        if np.count_nonzero(occupied) > self.k_groups:
            raise ValueError(f"w has nonzeros in more than k_groups={self.k_groups} groups")
        return self._coordinates(largest(np.where(occupied, np.inf, self._group_sum(g * g)), self.k_groups))

    def path_events(self, w, g, support, max_events):
        kept = np.unique(self._ids[support])
        in_kept = np.zeros(self.n_groups, dtype=np.bool_)
        in_kept[kept] = True
        gamma = self._group_sum(g * g)
        rays = largest(gamma, max_events + 1, in_kept)
        taus, out, into = pkern.group_path_events(self._group_sum(w * w), self._group_sum(w * g), gamma,
                                                  kept, rays, max_events)
        return taus, [self.members(q) for q in out], [self.members(q) for q in into]

    def expand(self, columns):
        return self._coordinates(self._ids[_as_columns(columns)])

    def restrict(self, columns):
        columns = _as_columns(columns)
        if not np.array_equal(columns, self.expand(columns)):
            raise ValueError(f"{self!r} restricts only to whole groups")
        labels = self._ids[columns]
        return Groups(labels, min(self.k_groups, np.unique(labels).size)).bind(columns.size)

    @property
    def n_swap_moves(self):
        return self.k_groups * (self.n_groups - self.k_groups)

    def swap_moves(self, support):
        """Exchange a kept group for an unkept one."""
        kept = np.zeros(self.n_groups, dtype=np.bool_)
        kept[self._ids[support]] = True
        for a in np.flatnonzero(kept):
            for b in np.flatnonzero(~kept):
                yield self.members(a), self.members(b)


def bound_projection(projection, k, n_features):
    """The constraint of ``solve(A, b, k, projection=…)`` bound to ``n_features``
    columns: ``TopK(k)`` by default; a given ``k`` must equal the projection's size."""
    if projection is None:
        if k is None:
            raise ValueError("give k or a projection")
        return TopK(k).bind(n_features)
    if not isinstance(projection, Projection):
        raise ValueError(f"projection must be a l0reg.Projection, got {type(projection).__name__}")
    projection = projection.bind(n_features)
    if k is not None and check_k(k, n_features) != projection.size:
        raise ValueError(f"k={k} but {projection!r} keeps {projection.size} of {n_features} entries; "
                         f"pass k=None (implied by the projection) or k={projection.size}")
    return projection


def projection_mask(projection, scores):
    """Boolean keep mask of ``P(scores)`` (e.g. scores = |w|: the magnitude mask
    of the pattern, top-n of |w| in every group of m for :class:`NM`)."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    mask = np.zeros(scores.size, dtype=np.bool_)
    mask[projection.bind(scores.size).support(scores)] = True
    return mask
