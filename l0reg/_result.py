"""The result object shared by every solver, and the phase timer that fills its ``timings``."""
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np


@dataclass
class SolveResult:
    """Outcome of an L0-constrained ridge solve.

    Attributes
    ----------
    coef : ndarray of shape (p,)
        The solution ``w`` (at most ``k`` nonzeros), in the dtype of ``A``.
    support : ndarray of int64
        Sorted indices of the nonzeros of ``coef``.
    objective : float
        ``F(coef) = ½‖b − A coef‖² + (nλ/2)‖coef − w̄‖²``.
    history : list of float
        Objective after each outer step (start value first).
    n_iter : int
        Number of IHT steps taken (over all active-set rounds).
    timings : dict
        Seconds spent per phase (``"init"``, ``"iht"``, ``"backsolve"``, ``"swap"``, ...).
    converged : bool
        Whether the stopping tolerance was reached before ``max_iter``.
    certified_optimal : bool
        True only when every support of size k was enumerated (small problems,
        ``TopK``): ``support`` is then a global minimiser (up to round-off).
    start_objective : float
        F at the better exact refit of the start supports (``P(w_init)`` or ``P(w̄)``, ranked in IHT's
        metric and by magnitude) on large problems with ``backsolve``: if one IHT step from it lowers F by
        at most tol·F it is the result (a fixed point of the IHT map), else IHT from it competes with IHT
        from the unrefitted start; nan otherwise.
    lower_bound : float
        Every w with ``‖w‖₀ ≤ k`` has ``F(w) ≥ lower_bound``: ``objective`` when ``certified_optimal``, else
        with ``solve(..., bound=True)`` and λ > 0 the dual value of the Boolean relaxation (``_relaxation``, a
        few rounds; at least 0); nan otherwise (λ = 0: that relaxation is least squares, no bound).
    gap : float
        ``(objective − lower_bound)/objective``, the most by which ``objective`` can exceed the optimum.
    """

    coef: np.ndarray
    support: np.ndarray
    objective: float
    history: list = field(default_factory=list)
    n_iter: int = 0
    timings: dict = field(default_factory=dict)
    converged: bool = False
    certified_optimal: bool = False
    start_objective: float = float("nan")
    lower_bound: float = float("nan")
    gap: float = float("nan")

    def __repr__(self):
        return (f"SolveResult(k={self.support.size}, objective={self.objective:.6g}, "
                f"n_iter={self.n_iter}, converged={self.converged}, certified={self.certified_optimal}, "
                f"time={sum(self.timings.values()):.3g}s)")


@contextmanager
def timed(timings, phase):
    """Add the wall time of the ``with`` block to ``timings[phase]`` (seconds)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[phase] = timings.get(phase, 0.0) + time.perf_counter() - start
