"""Line search for IHT along the projected (preconditioned) gradient path.

The path is ``τ ↦ P(w − τ g)`` for a descent direction g, where the
projection ranks coordinates by the scaled magnitudes ``|s_j (w_j − τ g_j)|``
(s = 1 is plain IHT; IHT uses the Jacobi scaling, see ``_iht``). The support
is piecewise constant along it, and on a piece with support S the objective
is the quadratic

    φ_S(τ) = ½‖r_S + τ q_S‖² + (nλ/2)(‖d_S − τ g_S‖² + ‖w̄_{S^c}‖²),

with ``r_S = b − A_S w_S``, ``q_S = A_S g_S`` and ``d_S = w_S − w̄_S``. Its
minimiser has the closed form ``τ* = (nλ d_S·g_S − r_S·q_S)/(‖q_S‖² + nλ‖g_S‖²)``.
Since ``P_S(w − τ g)`` is feasible for every τ, each visited support is
minimised over all τ ≥ 0, which can only improve on the exact line search.

Visited supports: every piece up to the ``n_events``-th breakpoint (exact
breakpoints from the projection), then supports sampled geometrically further
along the path. Moving from one support to the next costs O(n) per changed
coordinate, so the whole search costs O(n·k) plus O(p) per sample.
"""
import numpy as np

from . import _kernels as kern


class SupportQuadratic:
    """``φ_S`` for a support S that changes one coordinate at a time."""

    def __init__(self, design, r, w, g, w_bar, nlam, support, q=None):
        """Start at S = supp w (where ``r_S = r``; ``q = Â_S g_S`` when the caller has it), then move to ``support``."""
        self.design = design
        self.w, self.g, self.w_bar, self.nlam = w, g, w_bar, nlam
        nonzero = np.flatnonzero(w)
        self.in_s = np.zeros(w.size, dtype=np.bool_)
        self.in_s[nonzero] = True
        self.support = nonzero
        gs = g[nonzero]
        d = w[nonzero] - w_bar[nonzero]
        self.r = r.copy()
        self.q = design.cols_matvec(nonzero, gs) if q is None else q.copy()
        self.dd = kern.dot(d, d)
        self.dg = kern.dot(d, gs)
        self.gg = kern.dot(gs, gs)
        wbs = w_bar[nonzero]
        self.wb_out = kern.dot(w_bar, w_bar) - kern.dot(wbs, wbs)
        self.move_to(np.asarray(support, dtype=np.int64))

    def swap(self, leaving, entering):
        """Replace the coordinates ``leaving`` by ``entering`` (arrays of equal size)."""
        w, g, wb = self.w, self.g, self.w_bar
        leaving = np.asarray(leaving, dtype=np.int64)
        entering = np.asarray(entering, dtype=np.int64)
        idx = np.concatenate([leaving, entering])
        sign = np.concatenate([np.ones(leaving.size), -np.ones(entering.size)])
        self.design.add_cols2(idx, sign * w[idx], -sign * g[idx], self.r, self.q)
        d = w[idx] - wb[idx]
        self.dd -= kern.dot(sign, d * d)
        self.dg -= kern.dot(sign, d * g[idx])
        self.gg -= kern.dot(sign, g[idx] * g[idx])
        self.wb_out += kern.dot(sign, wb[idx] * wb[idx])
        self.in_s[leaving] = False
        self.in_s[entering] = True

    def move_to(self, support):
        """Change S to ``support`` (sorted), swapping only the differences."""
        new = np.zeros_like(self.in_s)
        new[support] = True
        self.swap(np.flatnonzero(self.in_s & ~new), np.flatnonzero(new & ~self.in_s))
        self.support = np.asarray(support, dtype=np.int64)

    def minimize(self):
        """``(τ*, φ_S(τ*))`` over τ ≥ 0."""
        rq = kern.dot(self.r, self.q)
        qq = kern.dot(self.q, self.q)
        rr = kern.dot(self.r, self.r)
        curv = qq + self.nlam * self.gg
        slope = rq - self.nlam * self.dg
        tau = max(0.0, -slope / curv) if curv > 0 else 0.0
        value = 0.5 * rr + tau * slope + 0.5 * tau * tau * curv + 0.5 * self.nlam * (self.dd + self.wb_out)
        return tau, value

    def current_support(self):
        return np.flatnonzero(self.in_s)


def line_search(design, projection, r, w, g, w_bar, nlam, scale, n_events=8, n_samples=6, q=None):
    """Best step along the projected path ``P(w − τ g)`` from the feasible ``w``
    (``q = Â_S g_S`` on S = supp w, when the caller has it).

    Returns ``(value, tau, support, r_new)``: the objective, the step, the
    support of the new iterate ``P_S(w − τ g)`` and its residual ``b − A w_new``.
    """
    sw, sg = scale * w, scale * g
    start = projection.start_support(sw, sg)
    quad = SupportQuadratic(design, r, w, g, w_bar, nlam, start, q)
    best = _Candidate(quad, start)
    taus, leaving, entering = projection.path_events(sw, sg, start, n_events)
    for t in range(taus.size):
        quad.swap(np.atleast_1d(leaving[t]), np.atleast_1d(entering[t]))
        best.consider(quad, None)
    # Further along the path: sampled supports, starting beyond the last breakpoint.
    last = taus[-1] if taus.size else 0.0
    anchor = max(best.tau, last, np.finfo(float).tiny)
    worse_in_a_row = 0
    for j in range(n_samples):
        tau_j = anchor * 2.0 ** (j + 1)
        support = projection.support_on_line(sw, sg, tau_j)
        quad.move_to(support)
        improved = best.consider(quad, support)
        worse_in_a_row = 0 if improved else worse_in_a_row + 1
        if worse_in_a_row == 2:
            break
    return best.value, best.tau, best.support, best.residual


class _Candidate:
    """The best (support, τ) seen so far, with the residual of its point."""

    def __init__(self, quad, support):
        self.value = np.inf
        self.consider(quad, support)

    def consider(self, quad, support):
        tau, value = quad.minimize()
        if value < self.value:
            self.value, self.tau = value, tau
            self.support = quad.current_support() if support is None else support
            self.residual = quad.r + tau * quad.q
            return True
        return False
