"""Lower bounds on ``min {F(w) : ‖w‖₀ ≤ k}`` from the Boolean (perspective) relaxation, for λ > 0.

With γ = nλ, ``s(α) = Aᵀα + γw̄`` and ``c₀ = (γ/2)‖w̄‖²``, the best w on a support S is a ridge problem whose
Fenchel dual is ``F_S = max_α c₀ + bᵀα − ½‖α‖² − (1/2γ) Σ_{i∈S} s_i(α)²``. Hence for **any** α ∈ ℝⁿ, every
support S with ``|S| ≤ k``, ``O ⊆ S`` (fixed ones) and ``S ∩ Z = ∅`` (fixed zeros) has

    F_S ≥ D(α) = c₀ + bᵀα − ½‖α‖² − (1/2γ)(Σ_{i∈O} s_i² + the k − |O| largest s_i² over i ∉ O ∪ Z).

D is the dual of the relaxation ``z ∈ [0,1]^p, Σz ≤ k`` of the perspective formulation (its primal is P of
``_relaxation_kernels``), so the best α is the residual of the relaxation's solution. w̄ only adds the linear
term ``−γw̄ᵀw``: the bound holds for any w̄. α = b − A_W w (w on a working set W) gives
``D = ½‖b‖² + c₀ − ½‖A_W w‖² − Q/(2γ)``: only Gram columns ``Aᵀa_j`` (j ∈ W) are needed, cached here. A column
outside W among the k − |O| largest ``s_i²`` joins W and the relaxation is solved again (column generation).
Whatever its accuracy, the bound is valid (float rounding aside, for which ``_ROUNDING`` of its terms is
subtracted). With λ = 0 the relaxation is least squares on every column: no bound is computed.
"""
from dataclasses import dataclass

import numpy as np

from . import _relaxation_kernels as kern

# Relative allowance for float rounding subtracted from every bound (of c₀ + ½‖A_W w‖² + Q/(2γ)).
_ROUNDING = 1e-11
# FISTA steps per working-set round, and the relative duality gap on W at which it stops.
_MAX_STEPS = 5000
_TOL = 1e-9
_MAX_ROUNDS = 30
# Rounds for the bound reported by ``l0reg.solve`` (kept cheap).
_SOLVE_ROUNDS = 3
# z within this of 0 or 1 counts as integral.
_INTEGRAL = 1e-6


class GramColumns:
    """Columns ``Aᵀa_j`` of the Gram matrix, computed once each, when first asked for (stored as rows of a
    buffer that doubles when full)."""

    def __init__(self, A):
        self.A = A
        self.slot = np.full(A.shape[1], -1, dtype=np.int64)
        self.rows = np.empty((16, A.shape[1]))
        self.count = 0

    def ensure(self, cols):
        new = cols[self.slot[cols] < 0]
        if new.size:
            needed = self.count + new.size
            if needed > self.rows.shape[0]:
                grown = np.empty((max(needed, 2 * self.rows.shape[0]), self.rows.shape[1]))
                grown[:self.count] = self.rows[:self.count]
                self.rows = grown
            self.rows[self.count:needed] = self.A[:, new].T @ self.A
            self.slot[new] = np.arange(self.count, needed)
            self.count = needed

    def block(self, cols):
        """``A_colsᵀ A_cols``."""
        self.ensure(cols)
        return self.rows[np.ix_(self.slot[cols], cols)]

    def product(self, cols, x):
        """``Aᵀ A_cols x`` (length p)."""
        self.ensure(cols)
        return kern.combine_rows(self.rows, self.slot[cols], np.ascontiguousarray(x, dtype=np.float64))


@dataclass
class NodeRelaxation:
    """The relaxation of one node: its bound, a warm start for its children (``w`` on ``working``), the
    column to branch on and a rounded support."""

    bound: float
    working: np.ndarray
    w: np.ndarray
    branch: int            # the column to branch on; -1: the node is solved exactly
    rounded: np.ndarray    # a support of size ≤ k built from the relaxation (to refit)


class Relaxation:
    """The relaxation of ``F`` (float64 copies of the data) at any node (fixed ones, fixed zeros)."""

    def __init__(self, A, b, lam, w_bar):
        self.A = np.asarray(A, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64)
        w_bar = np.asarray(w_bar, dtype=np.float64)
        self.gamma = A.shape[0] * lam
        self.q = self.A.T @ b + self.gamma * w_bar
        self.c0 = 0.5 * float(b @ b) + 0.5 * self.gamma * float(w_bar @ w_bar)
        self.gram = GramColumns(self.A)

    def refit(self, support):
        """Exact ridge on ``support``: ``(w, F(w))`` with ``F = c₀' − ½ q_Sᵀw_S``."""
        w = np.zeros(self.A.shape[1])
        if support.size == 0:
            return w, self.c0
        G = self.gram.block(support) + self.gamma * np.eye(support.size)
        w[support] = np.linalg.solve(G, self.q[support])
        return w, self.c0 - 0.5 * float(self.q[support] @ w[support])

    def _dual(self, working, w, allowed, ones, k_free):
        """``(D, s)``: the valid bound at α = b − A_W w, and s over all columns."""
        nonzero = w != 0
        working, w = working[nonzero], w[nonzero]
        s = self.q - self.gram.product(working, w)
        sq = s * s
        free_sq = sq[allowed & ~ones]
        top = np.sum(np.partition(free_sq, free_sq.size - k_free)[free_sq.size - k_free:]) if k_free else 0.0
        q_total = float(sq[ones].sum() + top)
        half_quad = 0.5 * float(w @ (self.gram.block(working) @ w))
        bound = self.c0 - half_quad - q_total / (2 * self.gamma)
        return bound - _ROUNDING * (self.c0 + half_quad + q_total / (2 * self.gamma)), s

    def node(self, k, ones, zeros, working, w_start, max_rounds=_MAX_ROUNDS):
        """Relax the node (``ones``: bool mask of fixed ones, ``zeros`` of fixed zeros) from ``w_start`` on
        ``working``, at most ``max_rounds`` rounds of column generation; returns a :class:`NodeRelaxation`."""
        allowed = ~zeros
        k_free = k - int(ones.sum())
        free_allowed = allowed & ~ones
        if k_free == 0 or free_allowed.sum() <= k_free:  # the node is one ridge problem
            support = np.flatnonzero(ones if k_free == 0 else allowed)
            w = self.refit(support)[0][support]
            bound = self._dual(support, w, allowed, ones, k_free)[0]
            return NodeRelaxation(bound, support, w, -1, support)
        keep = allowed[working]
        working, w = working[keep], w_start[keep]
        extra = np.setdiff1d(np.flatnonzero(ones), working)
        if extra.size:
            working = np.concatenate([working, extra])
            w = np.concatenate([w, np.zeros(extra.size)])
        bound = -np.inf
        for round_ in range(max_rounds):
            G = self.gram.block(working)
            free = ~ones[working]
            w, z, _, _, _ = kern.fista(G, self.q[working], free, k_free, self.gamma, w, self.c0, _MAX_STEPS, _TOL)
            value, s = self._dual(working, w, allowed, ones, k_free)
            bound = max(bound, value)
            sq = np.where(free_allowed, s * s, -1.0)
            inside = np.zeros(sq.size, dtype=bool)
            inside[working] = True
            inside_sq = np.sort(sq[inside & free_allowed])[::-1]
            threshold = inside_sq[k_free - 1] if k_free <= inside_sq.size else 0.0
            violators = np.flatnonzero(~inside & (sq > threshold))
            if violators.size == 0 or round_ == max_rounds - 1:
                break
            violators = violators[np.argsort(-sq[violators], kind="stable")[:2 * k_free + 10]]
            working = np.concatenate([working, violators])
            w = np.concatenate([w, np.zeros(violators.size)])
        branch = self._branch_column(working, w, z, s, free_allowed)
        rounded = self._rounded(working, w, z, s, ones, free_allowed, k_free)
        # The children start from the nonzeros and the columns of largest s² (column generation adds the rest).
        top = np.argsort(-sq, kind="stable")[:2 * k_free + 10]
        nonzero = working[w != 0]
        children = np.union1d(nonzero, top[sq[top] >= 0])
        w_children = np.zeros(children.size)
        w_children[np.searchsorted(children, nonzero)] = w[w != 0]
        return NodeRelaxation(bound, children, w_children, branch, rounded)

    @staticmethod
    def _branch_column(working, w, z, s, free_allowed):
        """The most fractional free column of W; if none, the largest free |w|, else the largest free |s|."""
        free = free_allowed[working]
        fraction = np.where(free, np.minimum(z, 1.0 - z), 0.0)
        if fraction.max(initial=0.0) > _INTEGRAL:
            return int(working[np.argmax(fraction)])
        magnitude = np.where(free, np.abs(w), 0.0)
        if magnitude.max(initial=0.0) > 0:
            return int(working[np.argmax(magnitude)])
        return int(np.argmax(np.where(free_allowed, np.abs(s), -1.0)))

    @staticmethod
    def _rounded(working, w, z, s, ones, free_allowed, k_free):
        """The fixed ones and the k' free columns of largest z (then largest |w|, then largest |s|)."""
        z_full, w_full = np.zeros(s.size), np.zeros(s.size)
        z_full[working], w_full[working] = z, np.abs(w)
        candidates = np.flatnonzero(free_allowed)
        order = np.lexsort((-np.abs(s[candidates]), -w_full[candidates], -z_full[candidates]))
        return np.sort(np.concatenate([np.flatnonzero(ones), candidates[order[:k_free]]]))


def initial_working_set(relaxation, k, support):
    """``support`` and the 2k + 10 columns of largest ``|q_j| / ‖a_j‖`` (the start's working set)."""
    norms = np.sqrt(np.maximum(np.einsum("ij,ij->j", relaxation.A, relaxation.A), np.finfo(float).tiny))
    score = np.abs(relaxation.q) / norms
    top = np.argsort(-score, kind="stable")[:2 * k + 10]
    return np.union1d(support, top).astype(np.int64)


def with_lower_bound(result, A, b, k, lam, w_bar, *, requested):
    """``result`` (a ``SolveResult`` of budget k) with ``lower_bound`` and ``gap`` filled in: F itself when
    certified by enumeration, the root relaxation's bound (``_SOLVE_ROUNDS`` rounds, from ``result.coef``) when
    λ > 0 and ``requested``; left nan otherwise."""
    if result.certified_optimal:
        result.lower_bound = result.objective
    elif lam > 0 and requested and k > 0:
        relaxation = Relaxation(A, b, lam, w_bar)
        working = initial_working_set(relaxation, k, result.support)
        none = np.zeros(relaxation.A.shape[1], dtype=bool)
        coef = np.asarray(result.coef, dtype=np.float64)
        bound = relaxation.node(k, none, none, working, coef[working], max_rounds=_SOLVE_ROUNDS).bound
        result.lower_bound = min(result.objective, max(0.0, bound))  # F ≥ 0 always
    else:
        return result
    result.gap = relative_gap(result.objective, result.lower_bound)
    return result


def relative_gap(upper, lower):
    """``(upper − lower)/|upper|`` (at least 0): the most by which ``upper`` can exceed the optimum, relatively."""
    return max(0.0, (upper - lower) / max(abs(upper), np.finfo(float).tiny))
