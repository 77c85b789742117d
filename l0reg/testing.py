"""Seeded random small problems and the promises :func:`l0reg.solve` must keep on them.

Used by the test suite (a few hundred problems) and by
``benchmarks/fuzz_l0reg.py`` (thousands). Every reference value is computed
here independently of the solver, in float64 from the upcast inputs.

Promises checked by :func:`check_solve` (``F`` the objective of the returned
coefficients): ``‖w‖₀ ≤ k``; ``F ≤ F(start)``, ``F ≤ F(0)``, ``F ≤ F(magnitude
support of the start or of w̄, refitted)``, each up to round-off of the dtype;
the reported objective equals a fresh :func:`l0reg.objective` (1e-9 relative);
and, where ``C(p, k)`` is small, the gap to :func:`l0reg.brute_force`.
"""
import math
from dataclasses import dataclass

import numpy as np

from ._brute_force import brute_force
from .solver import objective, solve

DESIGNS = ("gaussian", "toeplitz", "duplicated", "near_duplicate", "zero_columns", "integer", "low_rank",
           "column_scaled")
# Enumerate the reference optimum when there are at most this many supports.
REFERENCE_MAX_SUPPORTS = 5000


@dataclass
class FuzzProblem:
    """One problem: the arrays for :func:`l0reg.solve` and how they were drawn."""

    A: np.ndarray
    b: np.ndarray
    k: int
    lam: float
    w_bar: object
    w_init: object
    design: str
    seed: int

    def describe(self):
        n, p = self.A.shape
        return (f"seed={self.seed} design={self.design} n={n} p={p} k={self.k} lam={self.lam:.3g} "
                f"dtype={self.A.dtype} order={'F' if self.A.flags.f_contiguous else 'C'} "
                f"w_bar={'yes' if self.w_bar is not None else 'no'} w_init={'yes' if self.w_init is not None else 'no'}")


def design_matrix(kind, n, p, rng):
    """An n × p design of the given kind (float64), drawn from ``rng``.

    Gaussian rows ~ N(0, Σ) for ``"gaussian"`` (Σ = I), ``"toeplitz"`` (Σᵢⱼ = 0.9^|i−j|)
    and ``"equicorrelated"`` (Σᵢⱼ = 0.8, i ≠ j); the other kinds are the fuzz's
    hard cases (:data:`DESIGNS`). Shared with the enumeration tests.
    """
    if kind == "equicorrelated":
        z = rng.standard_normal((n, p))
        return math.sqrt(0.8) * rng.standard_normal((n, 1)) + math.sqrt(0.2) * z
    if kind == "toeplitz":
        idx = np.arange(p)
        return rng.standard_normal((n, p)) @ np.linalg.cholesky(0.9 ** np.abs(idx[:, None] - idx[None, :])).T
    if kind == "integer":
        return rng.integers(-3, 4, size=(n, p)).astype(np.float64)
    if kind == "low_rank":
        rank = int(rng.integers(1, min(n, p) + 1))
        return rng.standard_normal((n, rank)) @ rng.standard_normal((rank, p))
    A = rng.standard_normal((n, p))
    if p >= 2 and kind in ("duplicated", "near_duplicate"):
        src, dst = rng.choice(p, size=2, replace=False)
        A[:, dst] = A[:, src] * (1.0 + (1e-12 if kind == "near_duplicate" else 0.0) * rng.standard_normal(n))
    elif kind == "zero_columns":
        A[:, rng.choice(p, size=max(1, p // 4), replace=False)] = 0.0
    elif kind == "column_scaled":
        A *= 10.0 ** rng.uniform(-3, 3, size=p)
    return A


def fuzz_problem(seed):
    """The problem of the given seed: n, p ≤ 30, float32/float64, C/F order,
    λ = 0 or log-uniform in [1e-4, 10], w̄ random or 0, w_init sometimes."""
    rng = np.random.default_rng(seed)
    n, p = int(rng.integers(1, 31)), int(rng.integers(1, 31))
    k = int(rng.integers(0, p + 1)) if rng.random() < 0.2 else int(rng.integers(1, min(p, 5) + 1))
    kind = DESIGNS[int(rng.integers(len(DESIGNS)))]
    A = design_matrix(kind, n, p, rng)
    w_true = np.zeros(p)
    w_true[rng.choice(p, size=max(k, 1), replace=False)] = rng.standard_normal(max(k, 1))
    b = A @ w_true + rng.uniform(0.0, 1.0) * rng.standard_normal(n)
    lam = 0.0 if rng.random() < 0.3 else float(10.0 ** rng.uniform(-4, 1))
    w_bar = rng.standard_normal(p) if rng.random() < 0.5 else None
    w_init = rng.standard_normal(p) if rng.random() < 0.25 else None
    dtype = np.float32 if rng.random() < 0.5 else np.float64
    order = "F" if rng.random() < 0.5 else "C"
    cast = (lambda v: None if v is None else v.astype(dtype))
    return FuzzProblem(A=np.asarray(A, dtype=dtype, order=order), b=b.astype(dtype), k=k, lam=lam,
                       w_bar=cast(w_bar), w_init=cast(w_init), design=kind, seed=seed)


def objective64(A, b, w, lam, w_bar):
    """F in float64 from the upcast inputs (independent of the solver)."""
    A, b, w = (np.asarray(x, dtype=np.float64) for x in (A, b, w))
    d = w if w_bar is None else w - np.asarray(w_bar, dtype=np.float64)
    r = b - A @ w
    return 0.5 * float(r @ r) + 0.5 * A.shape[0] * lam * float(d @ d)


def _top_k(v, k):
    out = np.zeros(v.size)
    keep = np.argsort(-np.abs(v), kind="stable")[:k]
    out[keep] = v[keep]
    return out


def rank_revealing_refit(A, b, support, lam, w_bar):
    """``argmin {F(w) : supp w ⊆ S}`` by least squares on ``[A_S; √(nλ) I]``, singular
    values below ``max(rows, |S|)·ε(dtype of A)`` (relative) dropped, rounded to that dtype."""
    n = A.shape[0]
    A64, b64 = A.astype(np.float64), b.astype(np.float64)
    w_bar = np.zeros(A.shape[1]) if w_bar is None else np.asarray(w_bar, dtype=np.float64)
    M, rhs = A64[:, support], b64 - A64[:, support] @ w_bar[support]
    if lam > 0:
        M = np.vstack([M, math.sqrt(n * lam) * np.eye(support.size)])
        rhs = np.concatenate([rhs, np.zeros(support.size)])
    w = np.zeros(A.shape[1])
    if support.size:
        rcond = max(M.shape) * float(np.finfo(A.dtype).eps)
        w[support] = w_bar[support] + np.linalg.lstsq(M, rhs, rcond=rcond)[0]
    return w.astype(A.dtype)


def _evaluation_error(A, coef, value):
    """Round-off of F = ½‖r‖² + … evaluated in float64 at ``coef``: ``10·p·ε·‖r‖·‖|A||w|‖``
    (large for huge coefficients, as on near-duplicate columns with λ = 0)."""
    A, w = np.asarray(A, dtype=np.float64), np.asarray(coef, dtype=np.float64)
    return 10 * A.shape[1] * np.finfo(float).eps * np.linalg.norm(np.abs(A) @ np.abs(w)) * math.sqrt(2 * value)


def _round_off(problem, values, coef):
    """Allowance for comparing objectives: 100 ulps of the dtype of A relative to the
    scale of F (‖b‖² and the compared values), plus the evaluation error at ``coef``."""
    eps = float(np.finfo(problem.A.dtype).eps)
    b = problem.b.astype(np.float64)
    return (100 * eps * (0.5 * float(b @ b) + max(values)) + _evaluation_error(problem.A, coef, max(values))
            + np.finfo(float).tiny)


def check_solve(problem, **solve_kwargs):
    """Solve ``problem`` and measure every promise; returns a dict of findings.

    ``violations`` lists the broken promises (empty when all hold); ``gap`` is
    ``(F − F*)/max(F*, ε·½‖b‖²)`` against enumeration (None when not enumerated;
    ε of A's dtype: below that, F is round-off) and ``at_optimum`` whether that
    gap is at most 1e-6 once the round-off of evaluating F is allowed for.
    """
    A, b, k, lam, w_bar = problem.A, problem.b, problem.k, problem.lam, problem.w_bar
    result = solve(A, b, k, lam=lam, w_bar=w_bar, w_init=problem.w_init, **solve_kwargs)
    value = objective64(A, b, result.coef, lam, w_bar)
    origin = problem.w_init if problem.w_init is not None else w_bar
    origin = np.zeros(A.shape[1]) if origin is None else origin.astype(np.float64)
    baselines = {"zero": objective64(A, b, np.zeros(A.shape[1]), lam, w_bar),
                 "start": objective64(A, b, _top_k(origin, k), lam, w_bar)}
    for name, point in (("magnitude_start", origin), ("magnitude_w_bar", w_bar)):
        if point is not None:
            support = np.flatnonzero(_top_k(np.asarray(point, dtype=np.float64), k))
            baselines[name] = objective64(A, b, rank_revealing_refit(A, b, support, lam, w_bar), lam, w_bar)
    tol = _round_off(problem, [value, *baselines.values()], result.coef)
    violations = []
    if np.count_nonzero(result.coef) > k:
        violations.append(f"{np.count_nonzero(result.coef)} nonzeros > k={k}")
    violations += [f"F={value!r} > F({name})={base!r}" for name, base in baselines.items() if value > base + tol]
    fresh = objective(A, b, result.coef, lam, w_bar)
    if not math.isclose(result.objective, fresh, rel_tol=1e-9, abs_tol=np.finfo(float).tiny):
        violations.append(f"reported objective {result.objective!r} != objective(coef) {fresh!r}")
    if not math.isclose(fresh, value, rel_tol=1e-9, abs_tol=tol):
        violations.append(f"objective(coef) {fresh!r} != independent F {value!r}")
    gap = optimum = at_optimum = None
    if math.comb(A.shape[1], k) <= REFERENCE_MAX_SUPPORTS:
        w_opt, optimum = brute_force(A, b, k, lam, w_bar)
        b64 = b.astype(np.float64)
        scale = max(optimum, float(np.finfo(A.dtype).eps) * 0.5 * float(b64 @ b64), np.finfo(float).tiny)
        gap = (value - optimum) / scale
        evaluation = _evaluation_error(A, result.coef, value) + _evaluation_error(A, w_opt, optimum)
        at_optimum = value - optimum <= 1e-6 * scale + evaluation
    return dict(problem=problem.describe(), objective=value, optimum=optimum, gap=gap, at_optimum=at_optimum,
                certified=bool(result.certified_optimal), violations=violations, lam=lam,
                dtype=str(A.dtype), design=problem.design)
