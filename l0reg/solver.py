"""The functional entry point: :func:`solve`.

Pipeline (each phase timed in ``SolveResult.timings``):

1. start from ``P(w_init)`` (or ``P(w̄)``, or 0); on large problems (no swap search) from the better
   exact refit of its supports ranked in IHT's metric and by plain magnitude;
2. IHT with the path line search, on all columns or on an active set (a refitted start whose first
   step does not lower F is the answer at once: it is a fixed point of the IHT map);
3. back-solve on the support (exact ridge on S), then IHT again while that
   changes anything;
4. when affordable (small problems): 1-swap local search, each swap followed
   by a refit, and the whole local search repeated from a forward-greedy
   support and from the projected unconstrained ridge solution; when the
   supports are few enough, enumeration of all of them instead (``_exhaustive``);
5. the best of the result and of the baselines (0, the start, magnitude
   supports refitted), compared by exact F once rounded (``_safeguard``).

The phases work on the problem rescaled by powers of two (``_scaling``), so
that neither the magnitude of A nor that of b matters.
"""
import itertools
import logging
from functools import partial

import numpy as np

from . import _exhaustive
from . import _kernels as kern
from ._design import scaled_design
from ._backsolve import backsolve_cost, ridge_on_support
from ._greedy import forward_greedy
from ._iht import iht, jacobi_scale
from ._linesearch import line_search
from ._local_search import GramColumns, objective_from_residual, refit_support, swap_search
from ._pattern_swaps import pattern_swap_search, swap_pass_cost
from ._relaxation import with_lower_bound
from ._result import SolveResult, timed
from ._safeguard import best_candidate, magnitude_refits
from ._scaling import Scaling, exact_objective
from ._threads import blas_threads_for
from ._validation import check_nonnegative, check_positive_int, check_problem, check_vector, not_finite
from .projection import TopK, bound_projection

logger = logging.getLogger(__name__)

# ``active_set="auto"`` restricts IHT to a working set when A has at least this
# many entries and the working set (copied) is at most _ACTIVE_SET_MAX_FRACTION of
# the columns. On a 1000 x 268,336 float32 A: k = 10% of p, 5.2 s and 708 MB beyond A
# with the working set (then a third of the columns) against 2.7 s and 44 MB without;
# k = 4%: 1.5 s against 2.8 s; k = 2%: 1.05 s against 1.2 s.
_ACTIVE_SET_MIN_ENTRIES = 5e7
_ACTIVE_SET_MAX_FRACTION = 0.1
# ``swaps="auto"`` runs the swap search and its extra starts when one pass and
# the greedy start cost at most this many flops (see ``_local_search_cost``).
_SWAP_BUDGET = 1e9
# Python-level cost of one greedy or swap step, in flop equivalents (~1 ms).
_STEP_OVERHEAD_FLOPS = 1e6
_MAX_SWAPS = 100
# Work below this many flops is cheap whatever the problem's shape.
_SMALL_PROBLEM_FLOPS = 1e6
_MAX_ROUNDS = 5
# The exact back-solve runs when it costs at most this many flops (about ten
# seconds on two cores); otherwise coordinate descent refits the support.
_BACKSOLVE_MAX_FLOPS = 2e11
# IHT followed by a refit stops once its support is unchanged for this many steps.
_SUPPORT_PATIENCE = 5


def objective(A, b, w, lam=0.0, w_bar=None):
    """``F(w) = ½‖b − A w‖² + (nλ/2)‖w − w̄‖²`` with n = ``A.shape[0]``, in float64
    (residual accumulated in float64, the problem rescaled by powers of two)."""
    A, b, _, lam, w_bar, _ = check_problem(A, b, 0, lam, w_bar, finite=False)
    w = check_vector(w, A.shape[1], np.float64, "w")
    design = _finite_design(A)
    scaling = Scaling(design, b, w_bar)
    value = exact_objective(design, scaling.data(b), scaling.coef(w), scaling.coef(w_bar),
                            scaling.penalty(A.shape[0] * lam))
    return scaling.objective(value)


def _finite_design(A):
    """``scaled_design(A)``: A's finiteness (``ValueError`` naming A), scale and column norms in one read."""
    design = scaled_design(A)
    if design is None:
        raise not_finite("A")
    return design


def _check_choice(value, name):
    if value not in ("auto", True, False):
        raise ValueError(f"{name} must be 'auto', True or False, got {value!r}")
    return value


class _Problem:
    """F on one design (all columns, or a working set): state and phases."""

    def __init__(self, design, projection, b, w_bar, nlam, tol, timings, history, on_step=None):
        self.design, self.projection = design, projection
        self.b, self.w_bar, self.nlam, self.tol = b, w_bar, nlam, tol
        self.timings, self.history = timings, history
        self.on_step = on_step  # called after every IHT step (solve's ``callback``)
        self.n_iter = 0
        self.start_value = np.nan  # F of the refitted start (``start_refitted``), when used
        self.exact = False  # the current values are the exact refit of their support
        self.gram = None  # the design's GramColumns, when IHT may take gradients from them (small supports)

    def start(self, w):
        self.w = w
        self.r = self.b - self.design.cols_matvec(np.flatnonzero(w), w[w != 0])
        self.value = objective_from_residual(self.r, w, self.w_bar, self.nlam)

    def start_refitted(self, points):
        """Start at the best exact refit of the supports of the feasible ``points`` (F there: ``start_value``)."""
        self.value = np.inf
        for x in points:
            w, r, value = self._refitted(x)
            if value < self.value:
                self.w, self.r, self.value = w, r, value
        self.start_value = self.value
        self.exact = True

    def run_iht(self, max_iter, patience):
        w = self.w
        with timed(self.timings, "iht"):
            self.w, self.r, self.value, steps, converged = iht(
                self.design, self.projection, self.b, self.w, self.r, self.w_bar, self.nlam,
                max_iter=max_iter, tol=self.tol, value=self.value, history=self.history,
                patience=patience, on_step=self.on_step, gram=self.gram)
        self.n_iter += steps
        self.exact = self.exact and self.w is w  # iht hands back its input when it takes no step
        return converged

    def _refitted(self, w, r=None):
        """Exact values on the support of ``w``: ``(w, r, F)``."""
        if r is None:
            r = self.b - self.design.cols_matvec(np.flatnonzero(w), w[w != 0])
        with timed(self.timings, "backsolve"):
            w, r = refit_support(self.design, self.b, w.copy(), r.copy(), self.w_bar, self.nlam,
                                 np.flatnonzero(w), tol=self.tol, budget=_BACKSOLVE_MAX_FLOPS)
        return w, r, objective_from_residual(r, w, self.w_bar, self.nlam)

    def refit(self):
        """Refit the current support; True if F dropped by more than tol."""
        if self.exact:
            return False
        w, r, value = self._refitted(self.w, self.r)
        self.exact = True
        improved = value < self.value - self.tol * max(abs(self.value), np.finfo(float).tiny)
        if value < self.value:
            self.w, self.r, self.value = w, r, value
            self.history.append(value)
        return improved

    def descend(self, max_iter, backsolve, rivals=()):
        """IHT, then alternate exact refits of the support and IHT while that helps.

        With refits, each of the feasible points ``rivals`` (e.g. the start),
        refitted as it is, competes with the result: IHT from a point far from
        optimal can trade its support for a worse one.
        """
        patience = _SUPPORT_PATIENCE if backsolve else None
        converged = self.run_iht(max_iter - self.n_iter, patience)
        for _ in range(_MAX_ROUNDS):
            if not backsolve or not self.refit() or self.n_iter >= max_iter:
                break
            before = self.value
            converged = self.run_iht(max_iter - self.n_iter, patience)
            if not self.value < before:
                break
        for rival in rivals if backsolve else ():
            w, r, value = self._refitted(rival)
            if value < self.value:
                self.w, self.r, self.value = w, r, value
                self.history.append(value)
        return converged


def _initial_point(projection, w0, scale):
    """``P(w0)`` in the metric of IHT (ranking by ``|√D_j w0_j|``)."""
    w = np.zeros_like(w0)
    support = projection.support(scale * w0)
    w[support] = w0[support]
    return w


def _local_search_cost(n, p, k):
    """Flops of one swap pass (k Gram columns) plus the forward-greedy start
    (k products with Aᵀ and refits of 1..k columns), with the per-step
    overhead of the Python loops counted in."""
    cost = 2.0 * k * n * p
    for size in range(1, k + 1):
        cost += backsolve_cost(n, size) + 2 * _STEP_OVERHEAD_FLOPS
        if cost > _SWAP_BUDGET:
            break
    return cost


def _extra_starts(design, projection, b, k, w_bar, nlam):
    """Further starting points for small problems, as ``(name, factory)`` pairs:
    forward greedy selection, and ``P(unconstrained ridge solution)`` when the
    full ridge solve costs no more than one swap pass."""
    yield "greedy", lambda: _initial_point(projection, forward_greedy(design, b, k, w_bar, nlam), 1.0)
    if backsolve_cost(design.n, design.p) <= k * design.n * design.p + _SMALL_PROBLEM_FLOPS:
        yield "ridge_start", lambda: _initial_point(
            projection, ridge_on_support(design, b, np.arange(design.p), w_bar, nlam), 1.0)


def _working_set(w, g, size):
    """The ``size`` columns kept by ``P(w − τ g)`` for a τ large enough to reach them."""
    ranking = TopK(size).bind(w.size)
    ratio = np.max(np.abs(w)) / max(np.max(np.abs(g)), np.finfo(float).tiny)
    return ranking.support_on_line(w, g, ratio * 1e-3 if np.any(w) else 1.0)


def _solve_active_set(full, design, projection, max_iter, backsolve, work_size, rivals):
    """Solve on a working set W, grow W with the full-gradient violators, repeat.

    W starts with the columns ranked first along the gradient path and the
    supports of ``rivals`` (which compete in the first round only).
    """
    scale, inv_diag = jacobi_scale(design, full.nlam)
    g = design.step_direction(full.r, full.w, full.w_bar, full.nlam, inv_diag)[0]
    W = _working_set(scale * full.w, scale * g, work_size)
    for rival in rivals:
        W = np.union1d(W, np.flatnonzero(rival))
    W = projection.expand(W)
    converged = False
    while True:
        with timed(full.timings, "active_set"):
            sub = None  # the previous working set's copy of A goes before the next one is made
            sub = _Problem(design.subset(W), projection.restrict(W), full.b,
                           full.w_bar[W], full.nlam, full.tol, full.timings, [], full.on_step)
            sub.start(full.w[W].copy())
        sub.descend(max_iter - full.n_iter, backsolve, [rival[W] for rival in rivals])
        rivals = ()
        full.n_iter += sub.n_iter
        # The working-set objective omits the constant (nλ/2)‖w̄ outside W‖².
        outside = 0.5 * full.nlam * (kern.dot(full.w_bar, full.w_bar) - kern.dot(sub.w_bar, sub.w_bar))
        full.history.extend(v + outside for v in sub.history)
        full.w = np.zeros_like(full.w)
        full.w[W] = sub.w
        full.r = sub.r
        full.value = objective_from_residual(full.r, full.w, full.w_bar, full.nlam)
        if full.n_iter >= max_iter:
            break
        # One full step: if it still lowers F, its support tells where W falls short.
        with timed(full.timings, "iht"):
            g, q = design.step_direction(full.r, full.w, full.w_bar, full.nlam, inv_diag)
            value, tau, support, r, _ = line_search(design, projection, full.r, full.w, g, full.w_bar,
                                                    full.nlam, scale, q=q)
        full.n_iter += 1
        if full.on_step is not None:
            full.on_step()
        if value >= full.value - full.tol * max(abs(full.value), np.finfo(float).tiny):
            converged = True
            break
        w = np.zeros_like(full.w)
        w[support] = full.w[support] - tau * g[support]
        full.w, full.r, full.value = w, r, value
        full.history.append(value)
        in_w = np.zeros(full.w.size, dtype=np.bool_)
        in_w[W] = True
        violators = support[~in_w[support]]
        extra = TopK(min(work_size // 2, int((~in_w).sum()))).bind(full.w.size)
        score = np.where(in_w, 0.0, np.abs(scale * g))
        W = projection.expand(np.union1d(np.union1d(W, violators), extra.support(score)))
        logger.debug("active set grown to %d columns (%d violators)", W.size, violators.size)
    return converged


def solve(A, b, k=None, *, lam=0.0, w_bar=None, w_init=None, projection=None, max_iter=200, tol=1e-7,
          active_set="auto", swaps="auto", backsolve=True, exhaustive="auto", callback=None,
          bound=False):
    """Minimise ``½‖b − A w‖² + (nλ/2)‖w − w̄‖²`` subject to ``‖w‖₀ ≤ k``.

    Parameters
    ----------
    A : ndarray (n, p), float32 or float64, C or Fortran order
        Never copied (Fortran order is fastest) and never written to.
    b : array (n,)
    k : int in [0, p], optional
        Number of nonzeros allowed; implied by ``projection`` when None (if
        given, it must equal ``projection.size``).
    lam : float ≥ 0
        Ridge strength λ; the penalty is ``(nλ/2)‖w − w̄‖²`` with n = A.shape[0].
    w_bar : array (p,), optional
        Ridge centre w̄ (default 0). It is also the starting point unless
        ``w_init`` is given.
    w_init : array (p,), optional
        Starting point (projected onto the constraint first).
    projection : Projection, optional
        The sparsity constraint (``TopK``, ``NM``, ``Groups``); default ``TopK(k)``.
    max_iter : int
        Maximum number of IHT steps.
    tol : float
        Relative decrease of F under which a phase stops.
    active_set : 'auto', True or False
        Run IHT on a working set of about 1.5k columns grown by violators (a copy
        of those columns of A); 'auto': when A has at least 5e7 entries and the
        working set is at most a tenth of its columns.
    swaps : 'auto', True or False
        Run the 1-swap local search (about k products with A per pass; for
        other constraints, exact refits of the projection's swap moves).
    backsolve : bool
        Refit the values on the final support exactly.
    exhaustive : 'auto' or False
        With ``TopK`` and at most a few thousand supports of size k (and little
        work per support), minimise over all of them (the result is then
        ``certified_optimal``) instead of the swap search; False never does.
    callback : callable, optional
        ``callback(step)`` after every IHT step (about two passes over A, or over the working set), ``step``
        counting the steps of this call from 1 (over every start; on large problems, which have one start,
        the last ``step`` is ``n_iter``): e.g. a progress bar over ``max_iter``.
    bound : bool
        With ``TopK`` and λ > 0, also compute ``lower_bound`` and ``gap`` from the Boolean relaxation
        (``_relaxation``: Gram columns of a working set of ≈ 3k columns, a few rounds; 0.04 to 0.1 s at
        n = 500, p = 1,000). A solve certified by enumeration reports them whatever ``bound`` says.

    Returns
    -------
    SolveResult
        Its ``coef`` is the best of the search's result, 0, the start and the
        magnitude supports of the start and of w̄ refitted (the latter on
        small problems), by exact F of the coefficients as returned;
        ``objective`` is recomputed from ``coef``.
    """
    A, b, _, lam, w_bar, w_init = check_problem(A, b, 0, lam, w_bar, w_init, finite=False)  # A: in _solve
    if not isinstance(bound, (bool, np.bool_)):
        raise ValueError(f"bound must be True or False, got {bound!r}")
    projection = bound_projection(projection, k, A.shape[1])
    k = projection.size
    with blas_threads_for(A.size):
        result = _solve(A, b, k, lam, w_bar, w_init, projection, max_iter, tol, active_set, swaps, backsolve,
                        exhaustive, callback)
    return with_lower_bound(result, A, b, k, lam, w_bar, requested=bound is True and isinstance(projection, TopK))


def _solve(A, b, k, lam, w_bar, w_init, projection, max_iter, tol, active_set, swaps, backsolve, exhaustive,
           callback):
    """:func:`solve` after the problem's arrays are validated (and under its BLAS thread setting)."""
    if callback is not None and not callable(callback):
        raise ValueError(f"callback must be callable, got {type(callback).__name__}")
    steps = itertools.count(1)
    on_step = None if callback is None else (lambda: callback(next(steps)))
    max_iter = check_positive_int(max_iter, "max_iter")
    tol = check_nonnegative(tol, "tol")
    active_set = _check_choice(active_set, "active_set")
    swaps = _check_choice(swaps, "swaps")
    if exhaustive not in ("auto", False):
        raise ValueError(f"exhaustive must be 'auto' or False, got {exhaustive!r}")
    n, p = A.shape

    timings, history = {}, []
    with timed(timings, "init"):
        # Internally: F̂ on Â = A/s, b̂ = b/t (powers of two; see _scaling).
        design = _finite_design(A)
        scaling = Scaling(design, b, w_bar)
        nlam = scaling.penalty(n * lam)
        w_bar64 = scaling.coef(w_bar)
        b64 = scaling.data(b)
        w0 = w_bar64 if w_init is None else scaling.coef(w_init)
    enumerate_all = (exhaustive == "auto" and isinstance(projection, TopK)
                     and _exhaustive.affordable(n, p, k))
    # Structured constraints: the exact search over the projection's own swap moves.
    local_search, swap_cost = swap_search, _local_search_cost(n, p, k)
    if not isinstance(projection, TopK):
        local_search = partial(pattern_swap_search, projection=projection)
        swap_cost += swap_pass_cost(n, projection)
    if swaps is True and not np.isfinite(swap_cost):
        raise ValueError(f"swaps=True, but {projection!r} has no swap move")
    run_swaps = k > 0 and (swaps is True or (swaps == "auto" and swap_cost <= _SWAP_BUDGET
                                             and not enumerate_all))
    work_size = min(p, int(np.ceil(1.5 * k)) + 10)
    use_active = active_set is True or (
        active_set == "auto" and n * p >= _ACTIVE_SET_MIN_ENTRIES and work_size <= _ACTIVE_SET_MAX_FRACTION * p)

    # Large problems (no swap search, no enumeration): the best refitted start first.
    refit_start = backsolve and not run_swaps and not enumerate_all

    def search(problem, rivals):
        if use_active and work_size < p:
            return _solve_active_set(problem, design, projection, max_iter, backsolve, work_size, rivals)
        return problem.descend(max_iter, backsolve, rivals)

    def local_solve(start, rivals, iht_first=True):
        problem = _Problem(design, projection, b64, w_bar64, nlam, tol, timings, [], on_step)
        problem.gram = GramColumns.of(design) if run_swaps else None
        problem.start(start)
        problem.history.append(problem.value)
        if k == 0:
            return problem, True
        if refit_start:
            # The refit is the answer when its first IHT step lowers F by at most tol·F (a fixed point of
            # the IHT map); otherwise IHT from it competes with IHT from the start as it is (which explores
            # other supports: neither wins always).
            refitted = _Problem(design, projection, b64, w_bar64, nlam, tol, timings, [], on_step)
            refitted.start_refitted(rivals)
            refitted.history.append(refitted.value)
            if refitted.run_iht(1, None):
                logger.debug("the refitted start is a fixed point of the IHT map: no further step")
                return refitted, True
            refitted_converged = search(refitted, ())
        # Without IHT (the greedy start, a refit already): the swap search below ends at a 1-swap optimum.
        converged = search(problem, rivals) if iht_first else True
        if refit_start:
            refitted.n_iter = problem.n_iter = problem.n_iter + refitted.n_iter
            problem.start_value = refitted.start_value
            if refitted.value < problem.value:
                problem, converged = refitted, refitted_converged
        if run_swaps:
            with timed(timings, "swap"):
                w, r, n_swaps = local_search(design, b64, problem.w, problem.r, w_bar64, nlam,
                                            max_swaps=_MAX_SWAPS, tol=tol)
            logger.debug("swap search: %d swaps", n_swaps)
            if n_swaps:
                problem.w, problem.r = w, r
                problem.value = objective_from_residual(r, w, w_bar64, nlam)
                problem.history.append(problem.value)
                problem.descend(max(1, max_iter - problem.n_iter), backsolve)
        return problem, converged

    with timed(timings, "init"):
        # IHT starts from P(w0) in its own metric; P(w0) by plain magnitude
        # competes after the refits (each wins on some problems).
        start = _initial_point(projection, w0, jacobi_scale(design, nlam)[0])
        plain = _initial_point(projection, w0, 1.0)
        rivals = [start] if np.array_equal(start != 0, plain != 0) else [start, plain]
    starts = [start, plain]
    best, converged = local_solve(start, rivals)
    start_objective = scaling.objective(best.start_value)
    if run_swaps:
        # Small problem: the local search again from other starting supports
        # (it is a local search: on correlated designs the start matters).
        for name, make_start in _extra_starts(design, projection, b64, k, w_bar64, nlam):
            with timed(timings, name):
                start = make_start()
            # The greedy start goes straight to the swap search: IHT from it changed no support of the 54
            # best_subset.py instances and cost 15% of the median time.
            other, other_converged = local_solve(start, [start], iht_first=name != "greedy")
            if other.value < best.value:
                best, converged = other, other_converged
    history, n_iter = best.history, best.n_iter

    candidates = [best.w]
    if enumerate_all:
        with timed(timings, "exhaustive"):
            candidates.append(ridge_on_support(
                design, b64, _exhaustive.best_support(design, b64, w_bar64, nlam, k), w_bar64, nlam))
    with timed(timings, "finalize"):
        candidates += [np.zeros(p)] + starts
        if backsolve and backsolve_cost(n, k) <= n * p + _SMALL_PROBLEM_FLOPS:
            candidates += magnitude_refits(design, projection, b64, w_bar64, nlam, [w0, w_bar64])
        coef, value, chosen = best_candidate(design, scaling, A.dtype, b64, w_bar64, nlam, candidates)
        if chosen > 0:
            logger.debug("safeguard: candidate %d beats the search (%g < %g)", chosen, value, best.value)
            history.append(value)
    return SolveResult(coef=coef, support=np.flatnonzero(coef), objective=scaling.objective(value),
                       history=[scaling.objective(v) for v in history], n_iter=n_iter, timings=timings,
                       converged=bool(converged), certified_optimal=bool(enumerate_all),
                       start_objective=start_objective)
