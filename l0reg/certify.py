"""Certified best subset: best-first branch and bound over supports (:func:`certify`).

A node fixes some columns in (O) and some out (Z); its bound is the Boolean relaxation's dual value
(``_relaxation``), never more than F on any support of the node. The incumbent starts as :func:`l0reg.solve`'s
answer and improves by refitting each node's rounded relaxation. The node of lowest bound is expanded first, on
its most fractional column (z_j = 1 in one child, 0 in the other); children start from their parent's
working set and solution, and keep at least its bound. The global lower bound (the least bound of the open and
pruned nodes) never decreases and the incumbent never increases, so the gap ``(F − bound)/F`` is monotone.
"""
import heapq
import itertools
import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np

from ._brute_force import _objective64
from ._relaxation import Relaxation, initial_working_set, relative_gap
from ._validation import check_nonnegative, check_positive_int, check_problem
from .solver import solve

logger = logging.getLogger(__name__)

# Seconds between progress lines in the log (INFO).
_LOG_EVERY = 5.0


@dataclass(frozen=True)
class Progress:
    """State of the search, passed to ``certify``'s callback after every expanded node."""

    nodes: int
    open_nodes: int
    lower_bound: float
    objective: float
    gap: float
    seconds: float


@dataclass
class CertifyResult:
    """Outcome of :func:`certify`.

    ``coef`` (float64, at most k nonzeros) has ``objective`` F; every w with ``‖w‖₀ ≤ k`` has
    ``F(w) ≥ lower_bound``; ``gap = (objective − lower_bound)/objective``. ``status``: ``"optimal"`` (gap ≤
    gap_tol), ``"time_limit"`` or ``"node_limit"`` (the best solution found and its gap). ``nodes``: relaxations
    solved; ``history``: the :class:`Progress` after every node.
    """

    coef: np.ndarray
    support: np.ndarray
    objective: float
    lower_bound: float
    gap: float
    nodes: int
    status: str
    seconds: float
    history: list = field(default_factory=list, repr=False)


@dataclass(order=True)
class _Node:
    bound: float
    order: int
    ones: np.ndarray = field(compare=False)
    zeros: np.ndarray = field(compare=False)
    working: np.ndarray = field(compare=False)
    w: np.ndarray = field(compare=False)
    branch: int = field(compare=False)


def certify(A, b, k, *, lam, w_bar=None, time_limit=60.0, node_limit=1_000_000, gap_tol=1e-4, callback=None):
    """Minimise ``½‖b − Aw‖² + (nλ/2)‖w − w̄‖²`` s.t. ``‖w‖₀ ≤ k`` with a proof: branch and bound.

    Parameters
    ----------
    A, b, k, w_bar : as in :func:`l0reg.solve` (float64 copies of A and b are made).
    lam : float > 0
        The ridge λ; with λ = 0 the relaxation is least squares and bounds nothing, so it is refused.
    time_limit : float > 0
        Seconds; the search stops after the node running when they are spent (status ``"time_limit"``).
    node_limit : int ≥ 1
        Relaxations solved at most, the root's included (status ``"node_limit"`` when the next expansion
        would pass it).
    gap_tol : float ≥ 0
        Stop when ``(F − lower bound)/F ≤ gap_tol`` (status ``"optimal"``).
    callback : callable, optional
        ``callback(progress)`` with a :class:`Progress` after every node.

    Returns
    -------
    CertifyResult
    """
    start = time.perf_counter()
    A, b, k, lam, w_bar, _ = check_problem(A, b, k, lam, w_bar)
    if lam <= 0:
        raise ValueError("lam must be > 0: with lam = 0 the Boolean relaxation is least squares, which certifies "
                         "nothing")
    time_limit = check_nonnegative(time_limit, "time_limit")
    if time_limit == 0:
        raise ValueError("time_limit must be > 0, got 0.0")
    node_limit = check_positive_int(node_limit, "node_limit")
    gap_tol = check_nonnegative(gap_tol, "gap_tol")
    if callback is not None and not callable(callback):
        raise ValueError(f"callback must be callable, got {type(callback).__name__}")

    first = solve(A, b, k, lam=lam, w_bar=w_bar)
    relaxation = Relaxation(A, b, lam, w_bar)
    A64, b64, w_bar64 = relaxation.A, np.asarray(b, dtype=np.float64), np.asarray(w_bar, dtype=np.float64)
    best_w = first.coef.astype(np.float64)
    upper = _objective64(A64, b64, best_w, relaxation.gamma, w_bar64)
    p = A64.shape[1]
    counter = itertools.count()
    open_nodes, history = [], []
    pruned_bound = math.inf  # least bound of the nodes closed without expansion
    nodes = 0
    last_log = start

    def evaluate(ones, zeros, working, w, floor):
        """Relax a node, update the incumbent; push it if it may hold a better support."""
        nonlocal nodes, upper, best_w, pruned_bound
        nodes += 1
        node = relaxation.node(k, ones, zeros, working, w)
        bound = max(floor, node.bound)
        w_round, value = relaxation.refit(node.rounded)
        if value < upper:
            exact = _objective64(A64, b64, w_round, relaxation.gamma, w_bar64)
            if exact < upper:
                upper, best_w = exact, w_round
        if node.branch < 0 or bound >= upper - gap_tol * abs(upper):
            pruned_bound = min(pruned_bound, bound)
        else:
            heapq.heappush(open_nodes, _Node(bound, next(counter), ones, zeros, node.working, node.w, node.branch))

    def global_bound():
        return min(upper, pruned_bound, open_nodes[0].bound if open_nodes else math.inf)

    none = np.zeros(p, dtype=bool)
    working = initial_working_set(relaxation, k, first.support) if k else np.empty(0, dtype=np.int64)
    if k == 0:
        pruned_bound = upper
    else:
        evaluate(none, none, working, best_w[working], -math.inf)
    while True:
        lower = global_bound()
        gap = relative_gap(upper, lower)
        elapsed = time.perf_counter() - start
        progress = Progress(nodes, len(open_nodes), lower, upper, gap, elapsed)
        history.append(progress)
        if callback is not None:
            callback(progress)
        if elapsed - (last_log - start) >= _LOG_EVERY:
            last_log = time.perf_counter()
            logger.info("certify: %d nodes, %d open, bound %.10g, objective %.10g, gap %.3g, %.1f s",
                        nodes, len(open_nodes), lower, upper, gap, elapsed)
        if gap <= gap_tol or not open_nodes:
            status = "optimal"
            break
        if elapsed >= time_limit:
            status = "time_limit"
            break
        if nodes + 2 > node_limit:  # an expansion solves two relaxations
            status = "node_limit"
            break
        node = heapq.heappop(open_nodes)
        if node.bound >= upper - gap_tol * abs(upper):
            pruned_bound = min(pruned_bound, node.bound)
            continue
        j = node.branch
        ones, zeros = node.ones.copy(), node.zeros.copy()
        ones[j] = True
        zeros[j] = True
        evaluate(ones, node.zeros, node.working, node.w, node.bound)
        evaluate(node.ones, zeros, node.working, node.w, node.bound)

    lower = global_bound()
    logger.info("certify: %s after %d nodes, objective %.10g, bound %.10g", status, nodes, upper, lower)
    return CertifyResult(coef=best_w, support=np.flatnonzero(best_w), objective=upper, lower_bound=lower,
                         gap=relative_gap(upper, lower), nodes=nodes, status=status,
                         seconds=time.perf_counter() - start, history=history)
