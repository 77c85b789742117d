"""L0-constrained quadratic problems in Gram form, batched over the rows of a layer.

For a linear layer with dense rows ``w̄_r`` and calibration inputs X, pruning row r
means minimising ``½‖X(w̄_r − w)‖²``, which only needs the Gram matrix ``H = XᵀX``.
:func:`solve_gram` minimises, for every row r, with ``c_r`` the r-th row of C,

    f_r(w) = ½ wᵀH w − c_rᵀw + (λ/2)‖w − w̄_r‖²

under a sparsity constraint, and reports ``F_r(w) = f_r(w) − f_r(w̄_r)``: with
the default ``C = W̄ H`` that is ``½(w − w̄_r)ᵀH(w − w̄_r) + (λ/2)‖w − w̄_r‖²``,
the reconstruction error (0 for the dense row). It is computed in the stable
form ``½ dᵀHd − eᵀd + (λ/2)‖d‖²`` with ``d = w − w̄_r`` and ``e = c_r − H w̄_r``.

Pipeline (phases timed in ``GramResult.timings``), all rows at once:

1. start: the magnitude support and the Wanda support (``|w̄_j|·√H_jj``), both
   refitted exactly; each row starts from the better one (with a layer budget,
   the better allocation for the whole layer);
2. IHT with the exact path line search (``_gram_linesearch``), one BLAS product
   ``V @ H`` per step for all active rows;
3. exact refit on the supports (``_gram_refit``), then coordinate descent and
   1-swaps (``_gram_local``) and a refit of the rows they changed; repeated
   from the rows that changed while that helps;
4. with ``budget="layer"``: budget moves between rows (``_exchange_budget``).

Every phase keeps a row's new values only if they lower its objective, so no
row ends above its start (with a layer budget: the layer's total).
"""
import logging
import numbers
import re
from dataclasses import dataclass, field

import array_api_compat
import numpy as np

from ._gram_admm import GramEigh, admm_masks
from ._gram_linesearch import directions, line_search_rows
from ._gram_budget import marginals_rows, pair_rows
from ._gram_local import exact_swaps_rows, local_search_rows
from ._gram_refit import exact_is_cheap, refit_rows
from ._gram_starts import backward_rows
from ._gram_supports import layer_counts, row_masks
from ._result import timed
from ._threads import blas_threads_for
from ._validation import check_k, check_matrix, check_nonnegative, check_positive_int

logger = logging.getLogger(__name__)

# Line search: exact breakpoints visited per row. Breakpoints cost O(events·k) per row
# (``_kernels.topk_path_events``); on SmolLM2's layers 6 with 6 IHT steps reached a lower
# reconstruction error than 2 breakpoints plus 4 sampled supports with 10 steps, in the same time.
_N_EVENTS = 6
# IHT stops on a row whose support has not changed for this many steps (a refit follows).
_SUPPORT_PATIENCE = 5
# H d is recomputed by a product every this many steps (round-off of the updates).
_RESYNC_EVERY = 25
# Rounds of IHT, refit and local search: up to this many on layers with r·p² below
# _SMALL_LAYER_FLOPS, one on larger layers (later rounds gain ~1% there).
_MAX_ROUNDS = 3
_SMALL_LAYER_FLOPS = 5e7
# Local search per row and round: swaps taken (fewer on large layers, where a swap and
# its coordinate-descent sweep cost O(k·p) per row: r·swaps·k·p ≤ _SWAP_FLOPS, at
# least _MIN_SWAPS), removal candidates scored per swap.
_MAX_SWAPS = 20
_MIN_SWAPS = 2
_SWAP_FLOPS = 4e9
_N_REMOVE = 16
# Swaps are scored with the refit of the new support (``exact_swaps_rows``) while
# one swap costs at most this many flops per row (p·k²); otherwise with the other
# coordinates fixed (``local_search_rows``).
_EXACT_SWAP_FLOPS = 4e6
# Layers with r·p⁴ below this also run the exact swap search from forward selection
# and from backward elimination (``_gram_starts``) on every row; the best result is kept.
_EXTRA_START_FLOPS = 2e8
# Layer budgets: rounds of budget moves between rows (one unit per row and round).
_MAX_EXCHANGE_ROUNDS = 100


@dataclass
class GramResult:
    """Outcome of :func:`solve_gram`.

    Attributes
    ----------
    coef : ndarray (r, p)
        Sparse rows, in the dtype of ``W_bar``.
    mask : ndarray (r, p) of bool
        ``coef != 0``.
    objective : ndarray (r,) float64
        ``F_r(coef_r) = f_r(coef_r) − f_r(w̄_r)`` (reconstruction error with the default C).
    objective_start : ndarray (r,) float64
        The same for the starting point (best of magnitude and Wanda supports, refitted).
    n_iter : ndarray (r,) int
        IHT steps taken by each row.
    timings : dict
        Seconds per phase.
    converged : ndarray (r,) bool
        Whether each row's last IHT run stopped by its tolerance or patience rather than ``max_iter``.
    """

    coef: np.ndarray
    mask: np.ndarray
    objective: np.ndarray
    objective_start: np.ndarray
    n_iter: np.ndarray
    timings: dict = field(default_factory=dict)
    converged: np.ndarray = None

    def __repr__(self):
        return (f"GramResult(rows={self.coef.shape[0]}, nnz={int(self.mask.sum())}, "
                f"objective={self.objective.sum():.6g} (start {self.objective_start.sum():.6g}), "
                f"time={sum(self.timings.values()):.3g}s)")


def _one_blas_thread():
    """One BLAS thread while Numba threads call LAPACK row by row (no nested thread pools)."""
    return blas_threads_for(0)


# --------------------------------------------------------------------------- validation
def _check_gram(H):
    """``H`` as a symmetric float64 C-ordered copy (validated square, finite, symmetric)."""
    H = check_matrix(H, "H")
    if H.shape[0] != H.shape[1]:
        raise ValueError(f"H must be square (p, p), got shape {H.shape}")
    H64 = H.astype(np.float64)
    size = max(float(np.abs(H64).max()), np.finfo(np.float64).tiny)
    asym = float(np.abs(H64 - H64.T).max())
    if asym > np.sqrt(np.finfo(H.dtype).eps) * size:
        raise ValueError(f"H must be symmetric: max |H - H.T| = {asym:.3g} (max |H| = {size:.3g})")
    if (np.diag(H64) < 0).any():
        raise ValueError("H must be positive semidefinite; it has a negative diagonal entry")
    return np.ascontiguousarray(0.5 * (H64 + H64.T))


def _check_rows(X, shape, name):
    """A finite float32/float64 array of the given 2-D shape (1-D accepted for one row)."""
    if not isinstance(X, np.ndarray):
        raise TypeError(f"{name} must be a numpy ndarray, got {type(X).__name__}")
    if X.dtype not in (np.float32, np.float64):
        raise ValueError(f"{name} must have dtype float32 or float64, got {X.dtype}")
    if X.ndim == 1:
        X = X[None, :]
    if X.shape != shape:
        raise ValueError(f"{name} must have shape {shape} (rows, p), got {X.shape}")
    if not np.isfinite(X).all():
        raise ValueError(f"{name} contains NaN or infinity")
    return X


def _nm_pattern(projection):
    """``(n, m)`` from an ``NM`` projection, a tuple ``(n, m)`` or a string ``"n:m"``."""
    if isinstance(projection, str):
        match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", projection)
        if match is None:
            raise ValueError(f"projection string must look like 'n:m', got {projection!r}")
        n, m = int(match.group(1)), int(match.group(2))
    elif isinstance(projection, tuple) and len(projection) == 2:
        n, m = projection
    elif hasattr(projection, "n") and hasattr(projection, "m"):
        n, m = projection.n, projection.m
    else:
        raise ValueError(f"projection must be an N:M pattern (l0reg.NM, (n, m) or 'n:m'), got {projection!r}")
    m = check_positive_int(m, "projection m")
    n = check_k(n, m, "projection n")
    return n, m


def _constraint(k, budget, projection, r, p):
    """``(ks, n, m, total)``: per-row budgets, N:M pattern (m = 0: none), layer total (or None)."""
    if budget not in ("row", "layer"):
        raise ValueError(f"budget must be 'row' or 'layer', got {budget!r}")
    if projection is not None:
        if k is not None or budget != "row":
            raise ValueError("give either k (with budget) or an N:M projection, not both")
        n, m = _nm_pattern(projection)
        per_row = n * (p // m) + min(n, p % m)
        return np.full(r, per_row, dtype=np.int64), n, m, None
    if k is None:
        raise ValueError("k is required unless an N:M projection is given")
    if budget == "layer":
        total = check_k(k, r * p, "k (layer budget)")
        return None, 0, 0, total
    if isinstance(k, numbers.Integral) and not isinstance(k, (bool, np.bool_)):
        return np.full(r, check_k(k, p), dtype=np.int64), 0, 0, None
    ks = np.asarray(k)
    if ks.shape != (r,) or ks.dtype.kind not in "iu":
        raise ValueError(f"k must be an int or an integer array of length {r} (one budget per row), got {k!r}")
    if ks.min() < 0 or ks.max() > p:
        raise ValueError(f"per-row budgets k must lie in [0, p={p}], got range [{ks.min()}, {ks.max()}]")
    return ks.astype(np.int64), 0, 0, None


# --------------------------------------------------------------------------- the rows' state
class _Rows:
    """W, ``H(W − W̄)`` and F for all rows, and the phases that improve them."""

    def __init__(self, H, C, Wbar, E, lam, ks, n, m, tol, timings):
        self.H, self.C, self.Wbar, self.E, self.lam = H, C, Wbar, E, lam
        self.ks, self.n, self.m, self.tol, self.timings = ks, n, m, tol, timings
        hdiag = np.diag(H) + lam
        self.hdiag = hdiag
        self.scale = np.sqrt(hdiag)
        self.inv_diag = np.where(hdiag > 0, 1.0 / np.where(hdiag > 0, hdiag, 1.0), 0.0)
        self.n_iter = np.zeros(Wbar.shape[0], dtype=np.int64)
        self.converged = np.zeros(Wbar.shape[0], dtype=bool)
        # Rows at the exact optimum of their support (an exact refit since their last change).
        self.fitted = np.zeros(Wbar.shape[0], dtype=bool)

    def evaluate(self, W, rows):
        """``(H d, F)`` of the candidate rows ``W`` for the rows ``rows``."""
        D = W - self.Wbar[rows]
        HD = D @ self.H
        return HD, np.einsum("ij,ij->i", D, 0.5 * (HD + self.lam * D) - self.E[rows])

    def set(self, W):
        self.W = W
        self.HD, self.F = self.evaluate(W, slice(None))
        self.fitted[:] = False

    def offer(self, W, rows):
        """Keep the candidate rows ``W`` where they lower F; returns the rows kept."""
        HD, F = self.evaluate(W, rows)
        better = F < self.F[rows]
        kept = np.asarray(rows)[better]
        self.W[kept], self.HD[kept], self.F[kept] = W[better], HD[better], F[better]
        self.fitted[kept] = False
        return kept

    def refit(self, rows):
        """Refit the rows ``rows`` on their supports (exact or CG from their values); keeps improvements.
        Rows already at the exact optimum of their support are skipped."""
        with timed(self.timings, "refit"):
            rows = np.arange(self.W.shape[0])[rows]
            rows = rows[~self.fitted[rows]]
            W = self.W[rows]
            masks = W != 0
            exact = exact_is_cheap(self.H.shape[0], masks)
            kept = self.offer(refit_rows(self.H, self.C[rows], self.Wbar[rows], self.lam, masks,
                                         start=None if exact else W), rows)
            self.fitted[rows] = exact
            return kept

    def step(self, active):
        """One IHT step of the rows ``active``: their new rows, ``H d`` and F (not stored)."""
        Delta, masks0, V = directions(active, self.W, self.Wbar, self.E, self.HD, self.inv_diag, self.scale,
                                      self.lam, self.ks, self.n, self.m)
        return line_search_rows(self.H, active, self.W, self.Wbar, self.E, self.HD, Delta, V @ self.H, masks0,
                                self.scale, self.lam, self.n, self.m, _N_EVENTS)

    def iht(self, rows, max_iter):
        """IHT from the current rows ``rows``; each row stops on its own criterion."""
        active = np.asarray(rows, dtype=np.int64)
        stable = np.zeros(self.W.shape[0], dtype=np.int64)
        with timed(self.timings, "iht"):
            for step in range(1, max_iter + 1):
                if active.size == 0:
                    break
                if step % _RESYNC_EVERY == 0:
                    self.HD[active], self.F[active] = self.evaluate(self.W[active], active)
                W_new, HD_new, F_new = self.step(active)
                self.n_iter[active] += 1
                better = F_new < self.F[active]
                moved = active[better]
                decrease = self.F[moved] - F_new[better]
                same = ((W_new[better] != 0) == (self.W[moved] != 0)).all(axis=1)
                stable[moved] = np.where(same, stable[moved] + 1, 0)
                self.fitted[moved[~same]] = False
                self.W[moved], self.HD[moved], self.F[moved] = W_new[better], HD_new[better], F_new[better]
                done = np.ones(active.size, dtype=bool)
                done[better] = (decrease <= self.tol * np.maximum(np.abs(F_new[better]), 1e-300)) | (
                    stable[moved] >= _SUPPORT_PATIENCE)
                self.converged[active] = done
                active = active[~done]
            if np.size(rows):
                self.HD[rows], self.F[rows] = self.evaluate(self.W[rows], rows)

    def extra_starts(self, max_swaps):
        """Exact swap searches from forward selection (an empty support) and from
        backward elimination; each row keeps the best (small p only)."""
        rows = np.arange(self.W.shape[0])
        with _one_blas_thread():
            W_back, masks_back = backward_rows(self.H, self.C, self.Wbar, self.lam, self.ks, self.n, self.m)
        for W, masks in ((np.zeros_like(self.W), np.zeros_like(masks_back)), (W_back, masks_back)):
            values = self.evaluate(W, rows)[1]
            with _one_blas_thread():
                exact_swaps_rows(self.H, self.hdiag, self.C, self.Wbar, W, masks, self.ks, self.n, self.m,
                                 self.lam, values, max_swaps + int(self.ks.max(initial=0)), self.tol)
            self.offer(np.where(masks, W, 0.0), rows)

    def exchange_budget(self, max_swaps):
        """Move budget units between rows while a pair of rows gains (``_gram_budget``);
        returns the number of units moved."""
        moved = 0
        with timed(self.timings, "exchange"):
            for _ in range(_MAX_EXCHANGE_ROUNDS):
                masks = self.W != 0
                G = self.HD - self.E + self.lam * (self.W - self.Wbar)
                exact = self.H.shape[0] * float(masks.sum(axis=1).max()) ** 2 <= _EXACT_SWAP_FLOPS
                with _one_blas_thread():
                    marginals = marginals_rows(self.H, self.hdiag, self.C, self.Wbar, self.W, G, masks, self.lam,
                                               exact)
                donors, recipients = pair_rows(*marginals, self.tol * max(np.abs(self.F).max(), 1e-300))
                if donors.size == 0:
                    break
                masks[donors, marginals[1][donors]] = False
                masks[recipients, marginals[3][recipients]] = True
                self.ks[donors] -= 1
                self.ks[recipients] += 1
                changed = np.concatenate([donors, recipients])
                self.W[changed] = refit_rows(self.H, self.C[changed], self.Wbar[changed], self.lam, masks[changed],
                                             start=self.W[changed])
                self.HD[changed], self.F[changed] = self.evaluate(self.W[changed], changed)
                self.fitted[changed] = False
                moved += donors.size
                if max_swaps:
                    self.refit(self.local_search(changed, max_swaps))
        logger.debug("budget exchange: %d units moved", moved)
        return moved

    def local_search(self, rows, max_swaps):
        """CD and swaps on ``rows``; returns the rows whose support changed (and improved)."""
        with timed(self.timings, "swap"):
            W = self.W[rows].copy()
            D = W - self.Wbar[rows]
            G = self.HD[rows] - self.E[rows] + self.lam * D
            masks = W != 0
            values = self.F[rows].copy()
            if self.H.shape[0] * float(masks.sum(axis=1).max(initial=0)) ** 2 <= _EXACT_SWAP_FLOPS:
                with _one_blas_thread():
                    swaps = exact_swaps_rows(self.H, self.hdiag, self.C[rows], self.Wbar[rows], W, masks,
                                             self.ks[rows], self.n, self.m, self.lam, values, max_swaps, self.tol)
            else:
                swaps = local_search_rows(self.H, self.hdiag, W, G, masks, self.ks[rows], self.n, self.m,
                                          self.lam, values, max_swaps, _N_REMOVE, self.tol)
            kept = self.offer(np.where(masks, W, 0.0), rows)
        logger.debug("local search: %d swaps, %d rows improved", int(swaps.sum()), kept.size)
        return np.intersect1d(kept, np.asarray(rows)[swaps > 0])


# --------------------------------------------------------------------------- entry point
def solve_gram(H, W_bar, k=None, *, C=None, lam=0.0, budget="row", projection=None, start=None, max_iter=10,
               tol=1e-6, swaps="auto", rounds="auto"):
    """Sparse rows ``W`` minimising each row's ``f_r(w) = ½wᵀHw − c_rᵀw + (λ/2)‖w − w̄_r‖²``.

    Parameters
    ----------
    H : ndarray (p, p), float32 or float64
        Symmetric positive semidefinite Gram matrix (``XᵀX`` of the calibration inputs).
    W_bar : ndarray (r, p) or (p,), float32 or float64
        Dense rows w̄_r (the ridge centres).
    k : int, or int array (r,), or int with ``budget="layer"``
        Nonzeros per row, per-row budgets, or the total over the layer.
    C : ndarray (r, p), optional
        Linear terms (default ``W_bar @ H``: reconstruction of the dense rows).
    lam : float ≥ 0
        Ridge strength λ (no 1/n factor, unlike :func:`l0reg.solve`).
    budget : 'row' or 'layer'
        With 'layer', ``k`` nonzeros in total and rows compete for them.
    projection : N:M pattern, optional
        ``l0reg.NM(n, m)``, ``(n, m)`` or ``"n:m"``: keep n of every m consecutive
        entries of each row (instead of ``k``).
    start : ndarray (r, p), bool or float, ``"admm"``, or a list of them, optional
        Starting rows: a mask (refitted from W̄) or dense rows whose nonzeros are the
        support (e.g. SparseGPT's result; the better of them and their refit is kept);
        ``"admm"``: the supports of :func:`admm_supports` (the penalty path from the
        dense rows). Each must satisfy the constraint; with a list each row starts from
        its best candidate (a layer budget: the best candidate for the layer). Default:
        the better of the magnitude and Wanda supports, refitted. No row ends above its
        start. Refits are exact on small supports, by CG (approximate) on large ones.
    max_iter : int
        IHT steps per round.
    tol : float
        Relative decrease of F under which a row stops.
    swaps : 'auto', True or False
        Coordinate descent and 1-swaps after the refits ('auto': on; up to 20
        swaps per row and round, fewer on large layers).
    rounds : 'auto' or int
        Rounds of IHT, refit and local search ('auto': 3 on small layers, r·p² ≤ 5e7,
        else 1; later rounds gain about 1% on SmolLM2-sized layers).

    Returns
    -------
    GramResult
        ``objective`` is ``f_r(w) − f_r(w̄_r)`` for each row.
    """
    timings = {}
    with timed(timings, "validate"):
        H64 = _check_gram(H)
        p = H64.shape[0]
        if not isinstance(W_bar, np.ndarray):
            raise TypeError(f"W_bar must be a numpy ndarray, got {type(W_bar).__name__}")
        Wbar_in = _check_rows(W_bar, (W_bar.shape[0] if W_bar.ndim == 2 else 1, p), "W_bar")
        r = Wbar_in.shape[0]
        Wbar = np.ascontiguousarray(Wbar_in, dtype=np.float64)
        lam = check_nonnegative(lam, "lam")
        max_iter = check_positive_int(max_iter, "max_iter")
        tol = check_nonnegative(tol, "tol")
        if rounds != "auto":
            rounds = check_positive_int(rounds, "rounds")
        if swaps not in ("auto", True, False):
            raise ValueError(f"swaps must be 'auto', True or False, got {swaps!r}")
        ks, n, m, total = _constraint(k, budget, projection, r, p)
        WbarH = Wbar @ H64
        if C is None:
            C64, E = WbarH, np.zeros_like(WbarH)
        else:
            C64 = np.ascontiguousarray(_check_rows(C, (r, p), "C"), dtype=np.float64)
            E = C64 - WbarH
        if start is not None:
            starts = start if isinstance(start, (list, tuple)) else [start]
            if not starts:
                raise ValueError("start must hold at least one mask or array of rows")
    if start is not None:
        with timed(timings, "admm"):
            starts = [admm_masks(H64, Wbar, lam=lam, ks=_uniform(ks), n=n, m=m, total=total, C=C64)[0]
                      if _is_admm(one) else one for one in starts]
        start = [_check_start(one, r, p, ks, n, m, total) for one in starts]

    with timed(timings, "start"):
        state, start = _start(H64, C64, Wbar, E, lam, ks, n, m, total, tol, timings, start)
    logger.debug("start: F = %.6g", state.F.sum())
    rows = np.arange(r)
    max_swaps = _swap_budget(r, p, state.ks) if swaps else 0
    if rounds == "auto":
        rounds = _MAX_ROUNDS if r * float(p) ** 2 <= _SMALL_LAYER_FLOPS else 1
    for _ in range(rounds):
        state.iht(rows, max_iter)
        state.refit(rows)
        if not max_swaps:
            break
        rows = state.local_search(rows, max_swaps)
        state.refit(rows)
        if rows.size == 0:
            break

    small = swaps and r * float(p) ** 4 <= _EXTRA_START_FLOPS
    for _ in range(_MAX_ROUNDS):
        if small:
            with timed(timings, "extra_starts"):
                state.extra_starts(_MAX_SWAPS)
        if total is None or not state.exchange_budget(max_swaps):
            break

    with timed(timings, "finalize"):
        coef = state.W.astype(Wbar_in.dtype)
        _, objective = state.evaluate(coef.astype(np.float64), slice(None))
        start_coef = start.astype(Wbar_in.dtype)
        _, objective_start = state.evaluate(start_coef.astype(np.float64), slice(None))
        worse = objective > objective_start
        if total is None and worse.any():  # only by rounding to W_bar's dtype
            coef[worse], objective[worse] = start_coef[worse], objective_start[worse]
    if W_bar.ndim == 1:
        coef = coef.reshape(1, p)
    return GramResult(coef=coef, mask=coef != 0, objective=objective, objective_start=objective_start,
                      n_iter=state.n_iter, timings=timings, converged=state.converged)


def _swap_budget(r, p, ks):
    """Swaps per row and round: ``_MAX_SWAPS``, fewer when r·swaps·k·p would exceed ``_SWAP_FLOPS``."""
    cost = r * p * max(int(ks.max(initial=0)), 1)
    return int(np.clip(_SWAP_FLOPS // cost, _MIN_SWAPS, _MAX_SWAPS))


def _is_admm(start):
    if isinstance(start, str):
        if start != "admm":
            raise ValueError(f"start must be an array, a list of them or 'admm', got {start!r}")
        return True
    return False


def _uniform(ks):
    """One int when every row has the same budget (the fast selection), else the array (None stays None)."""
    if ks is None or ks.size == 0 or (ks != ks[0]).any():
        return ks
    return int(ks[0])


def admm_supports(H, W_bar, k=None, *, lam=0.0, budget="row", projection=None, C=None, eig=None, max_iter=300):
    """Supports at the end of the ADMM penalty path from the dense rows (``l0reg._gram_admm``): the
    search that can leave the basin of a greedy start; :func:`solve_gram` with ``start=[supports]`` (or
    ``start="admm"``) refits and polishes them.

    ``H``, ``W_bar`` and the constraint (``k``, ``budget``, ``projection``, ``C``, ``lam``) are those of
    :func:`solve_gram`.  ``H`` and ``W_bar`` may be numpy arrays or torch tensors (the path then runs on their
    device: one eigendecomposition of H, two products with it per step); ``eig``: a :class:`GramEigh` of the
    same ``H + λI`` (from :func:`gram_eigh`), shared by layers that read the same inputs.  Returns a boolean
    mask ``(r, p)`` in the namespace of ``W_bar`` that satisfies the constraint exactly (``k`` nonzeros per row,
    ``k`` in the layer, or n of every m).
    """
    xp = array_api_compat.array_namespace(H, W_bar)
    if H.ndim != 2 or H.shape[0] != H.shape[1]:
        raise ValueError(f"H must be square (p, p), got shape {tuple(H.shape)}")
    p = H.shape[0]
    if W_bar.ndim != 2 or W_bar.shape[1] != p:
        raise ValueError(f"W_bar must have shape (rows, {p}), got {tuple(W_bar.shape)}")
    if C is not None and tuple(C.shape) != tuple(W_bar.shape):
        raise ValueError(f"C must have the shape of W_bar {tuple(W_bar.shape)}, got {tuple(C.shape)}")
    for name, X in (("H", H), ("W_bar", W_bar)) + ((("C", C),) if C is not None else ()):
        if not bool(xp.all(xp.isfinite(X))):
            raise ValueError(f"{name} contains NaN or infinity")
    lam = check_nonnegative(lam, "lam")
    max_iter = check_positive_int(max_iter, "max_iter")
    if eig is not None and (not isinstance(eig, GramEigh) or eig.lam != lam or eig.Q.shape[0] != p):
        raise ValueError("eig must be gram_eigh(H, lam) of this H and lam")
    ks, n, m, total = _constraint(k, budget, projection, W_bar.shape[0], p)
    return admm_masks(H, W_bar, lam=lam, ks=_uniform(ks), n=n, m=m, total=total, C=C, eig=eig,
                      max_iter=max_iter)[0]


def _check_start(start, r, p, ks, n, m, total):
    """``(masks, values)`` of a start: a boolean mask (values: W̄ on it, set by the caller as None)
    or dense rows (their nonzeros); it must satisfy the constraint."""
    if not isinstance(start, np.ndarray):
        raise TypeError(f"start must be a numpy ndarray (mask or rows), got {type(start).__name__}")
    if start.ndim == 1:
        start = start[None, :]
    if start.shape != (r, p):
        raise ValueError(f"start must have shape {(r, p)} (rows, p), got {start.shape}")
    if start.dtype == np.bool_:
        masks, values = start, None
    else:
        values = np.array(_check_rows(start, (r, p), "start"), dtype=np.float64)
        masks = values != 0
    counts = masks.sum(axis=1)
    if m:
        padded = np.zeros((r, -(-p // m) * m), dtype=bool)
        padded[:, :p] = masks
        feasible = (padded.reshape(r, -1, m).sum(axis=2) <= n).all()
    else:
        feasible = counts.sum() <= total if total is not None else (counts <= ks).all()
    if not feasible:
        raise ValueError("start does not satisfy the constraint (too many nonzeros in a row, group or the layer)")
    return masks, values


def _start(H, C, Wbar, E, lam, ks, n, m, total, tol, timings, start):
    """The start rows, refitted: the ``start`` candidates (their values or W̄ on their masks, then the
    refit; each row keeps the best), or the better of the refitted magnitude and Wanda supports; returns ``(state, start W)``."""
    if start is not None:
        candidates = start
    else:
        candidates = [(None, score) for score in (np.abs(Wbar), np.abs(Wbar) * np.sqrt(np.diag(H)))]
    states = []
    for masks, values in candidates:
        if masks is None:
            row_ks = ks if total is None else layer_counts(values, total)
            masks, values = row_masks(values, row_ks, n, m), None
        else:
            row_ks = ks if total is None else masks.sum(axis=1).astype(np.int64)
        state = _Rows(H, C, Wbar, E, lam, row_ks.copy(), n, m, tol, timings)
        state.set(np.where(masks, Wbar, 0.0) if values is None else values)
        state.refit(np.arange(Wbar.shape[0]))
        states.append(state)
    best = states[0]
    for other in states[1:]:
        if total is None:
            better = other.F < best.F
            best.W[better], best.HD[better], best.F[better] = other.W[better], other.HD[better], other.F[better]
            best.fitted[better] = other.fitted[better]
        elif other.F.sum() < best.F.sum():
            best = other
    return best, best.W.copy()
