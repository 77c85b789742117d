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

For a C-ordered A those column updates would each cost a pass over the rows:
there the products come from few gathered passes (``_RowPass``), the sampled
supports' vectors from ``r + Â_S w_S − Â_T w_T`` and ``Â_T g_T``, two supports
per pass.
"""
import numpy as np

from . import _kernels as kern


class SupportQuadratic:
    """``φ_S`` for a support S that changes one coordinate at a time."""

    def __init__(self, design, r, w, g, w_bar, nlam, support, q=None):
        """Start at S = supp w (where ``r_S = r``; ``q = Â_S g_S`` when the caller has it), then move to ``support``."""
        self.design = design
        self.w, self.g, self.w_bar, self.nlam = w, g, w_bar, nlam
        self.wb_sq = kern.dot(w_bar, w_bar)
        nonzero = np.flatnonzero(w)
        self.reset(nonzero, r.copy(), design.cols_matvec(nonzero, g[nonzero]) if q is None else q.copy())
        self.move_to(np.asarray(support, dtype=np.int64))

    def reset(self, support, r, q):
        """Set S to ``support`` with its vectors ``r_S`` and ``q_S`` (taken, not copied)."""
        self.in_s = np.zeros(self.w.size, dtype=np.bool_)
        self.in_s[support] = True
        self.support = np.asarray(support, dtype=np.int64)
        gs, wbs = self.g[support], self.w_bar[support]
        d = self.w[support] - wbs
        self.r, self.q = r, q
        self.dd = kern.dot(d, d)
        self.dg = kern.dot(d, gs)
        self.gg = kern.dot(gs, gs)
        self.wb_out = self.wb_sq - kern.dot(wbs, wbs)

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


N_SAMPLES = 6  # supports sampled beyond the breakpoints, at most (two worse in a row end the search)


def line_search(design, projection, r, w, g, w_bar, nlam, scale, n_events=8, n_samples=N_SAMPLES, q=None):
    """Best step along the projected path ``P(w − τ g)`` from the feasible ``w``
    (``q = Â_S g_S`` on S = supp w, when the caller has it).

    Returns ``(value, tau, support, r_new, sampled)``: the objective, the step,
    the support of the new iterate ``P_S(w − τ g)``, its residual ``b − A w_new``
    and whether a sampled support (beyond the breakpoints) beat the breakpoints'.
    """
    sw, sg = scale * w, scale * g
    start = projection.start_support(sw, sg)
    taus, leaving, entering = projection.path_events(sw, sg, start, n_events)
    last = max(taus[-1] if taus.size else 0.0, np.finfo(float).tiny)
    samples = _Samples(projection, sw, sg, n_samples)
    if design.fortran:
        quad = SupportQuadratic(design, r, w, g, w_bar, nlam, start, q)
    else:
        rows = _RowPass(design, r, w, g, start, leaving, entering, q, samples)
        quad = SupportQuadratic(rows, r, w, g, w_bar, nlam, start, rows.q)
    best = _Candidate(quad, start)
    for t in range(taus.size):
        quad.swap(np.atleast_1d(leaving[t]), np.atleast_1d(entering[t]))
        best.consider(quad, None)
    if not design.fortran:
        rows.columns = None  # the gathered columns served the breakpoints only (O(n) each)
    # Further along the path: sampled supports, starting beyond the last breakpoint.
    anchor = max(best.tau, last)
    worse_in_a_row, sampled = 0, False
    for j in range(n_samples):
        support = samples.support(anchor, j)
        if design.fortran:
            quad.move_to(support)
        else:
            quad.reset(support, *rows.vectors(anchor, j))
        improved = best.consider(quad, support)
        sampled |= improved
        worse_in_a_row = 0 if improved else worse_in_a_row + 1
        if worse_in_a_row == 2:
            break
    return best.value, best.tau, best.support, best.residual, sampled


class _Samples:
    """The sampled supports ``supp P(w − τ_j g)`` at ``τ_j = anchor·2^(j+1)``, computed once per anchor."""

    def __init__(self, projection, sw, sg, n_samples):
        self.projection, self.sw, self.sg, self.n = projection, sw, sg, n_samples
        self.cache = {}

    def support(self, anchor, j):
        key = (anchor, j)
        if key not in self.cache:
            self.cache[key] = self.projection.support_on_line(self.sw, self.sg, anchor * 2.0 ** (j + 1))
        return self.cache[key]


class _RowPass:
    """The line search's products for a C-ordered A, in gathered passes over its rows.

    The first pass gives, on S = supp w, ``u = Â_S w_S`` (so ``r + u = b``) and ``q = Â_S g_S``, and the
    columns that the start and the path's events swap (standing in for the design in
    ``SupportQuadratic.swap``). A sampled support T then needs ``r_T = r + u − Â_T w_T`` and
    ``q_T = Â_T g_T``: columns of T only, ``_BATCH`` samples per pass.
    """

    _BATCH = 2  # two worse samples in a row end the search, so two usually suffice

    def __init__(self, design, r, w, g, start, leaving, entering, q, samples):
        self.design, self.w, self.g, self.samples = design, w, g, samples
        nonzero = np.flatnonzero(w)
        moved = w != 0
        moved[start] = ~moved[start]  # supp w Δ start (O(p) masks: np.setxor1d's sorts cost 4% of a step)
        for i in (*leaving, *entering):
            moved[i] = True
        self.swapped = np.flatnonzero(moved)
        products = [(self.swapped[t:t + 1], [1.0], [0.0]) for t in range(self.swapped.size)]
        out = design.sparse_products(products + [(nonzero, w[nonzero], g[nonzero])])
        self.columns = out[:-1, 0]  # a view of out: released (rows.columns = None) once the breakpoints are done
        self.base = r + out[-1, 0]
        self.q = out[-1, 1].copy() if q is None else q
        self.pending = {}

    def vectors(self, anchor, j):
        """``(r_T, q_T)`` of the j-th sampled support T at ``anchor``."""
        if (anchor, j) not in self.pending:
            js = range(j, min(j + self._BATCH, self.samples.n))
            supports = [self.samples.support(anchor, i) for i in js]
            out = self.design.sparse_products([(T, self.w[T], self.g[T]) for T in supports])
            for i, (u, q) in zip(js, out):
                self.pending[anchor, i] = (self.base - u, q)
        return self.pending.pop((anchor, j))

    def add_cols2(self, idx, x, y, out_x, out_y):
        """``out_x += Â[:, idx] @ x`` and ``out_y += Â[:, idx] @ y`` from the gathered columns."""
        cols = self.columns[np.searchsorted(self.swapped, idx)]
        out_x += np.asarray(x) @ cols
        out_y += np.asarray(y) @ cols


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
