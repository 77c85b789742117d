"""Many small problems on column blocks of one matrix, in one call: :func:`solve_blocks`.

For blocks ``B = [lo, hi)`` of the columns of ``A`` (a block-diagonal
approximation of ``AᵀA``, as in block-wise pruning) it solves, independently,

    min_w ½‖b_B − A_B w‖² + (nλ/2)‖w − w̄_B‖²   s.t. ‖w‖₀ ≤ k_B,   b_B = A_B w̄_B − γ·1,

with the whole loop over blocks in one Numba call (``_block_kernels``): no
Python work per block, blocks spread over threads, BLAS on one thread
meanwhile. Each block: exact refit of the start support, IHT with an exact
step search, exact refits (see ``_block_kernels``).
"""
import logging
import time
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from . import _block_kernels as kern
from ._backsolve import default_rcond
from ._validation import check_matrix, check_nonnegative, check_positive_int, check_vector

logger = logging.getLogger(__name__)


@dataclass
class BlocksResult:
    """Outcome of :func:`solve_blocks` (float64 ``coef``; ``mask`` has exactly ``k_B`` entries per block).

    ``coef_start`` is the exact refit of each block's start support (the baseline the search
    improves on); ``objective_start`` / ``objective`` hold each block's F there and at its
    result; ``n_iter`` its IHT steps.
    """

    coef: np.ndarray
    mask: np.ndarray
    coef_start: np.ndarray
    objective_start: np.ndarray
    objective: np.ndarray
    n_iter: np.ndarray
    seconds: float

    @property
    def settled(self):
        """Blocks whose refitted start support was kept (a full step from it did not lower F)."""
        return self.objective >= self.objective_start


def _check_blocks(blocks, ks, p):
    los = np.array([lo for lo, _ in blocks], dtype=np.int64)
    his = np.array([hi for _, hi in blocks], dtype=np.int64)
    ks = np.asarray(ks, dtype=np.int64)
    if ks.shape != los.shape:
        raise ValueError(f"ks must have one entry per block ({los.size}), got {ks.shape}")
    if np.any(los < 0) or np.any(his > p) or np.any(his <= los):
        raise ValueError("blocks must be (lo, hi) column ranges with 0 <= lo < hi <= p")
    if np.any(los[1:] < his[:-1]):
        raise ValueError("blocks must be sorted and must not overlap")
    if np.any(ks < 0) or np.any(ks > his - los):
        raise ValueError("each k_B must be in [0, block size]")
    return los, his, ks


def solve_blocks(A, blocks, ks, *, lam=0.0, w_bar=None, w_init=None, gradient=0.0, max_iter=200, tol=1e-7):
    """Solve the problem of every block (see the module docstring).

    Parameters
    ----------
    A : ndarray (n, p), float32 or float64, Fortran order (the fast layout; C works)
    blocks : sequence of ``(lo, hi)`` sorted, disjoint column ranges
    ks : budgets ``k_B``, one per block
    lam : ridge λ (penalty ``(nλ/2)‖w − w̄‖²``, n = A.shape[0])
    w_bar : centre w̄ (p,), default 0
    w_init : start (p,): each block starts from its ``k_B`` entries of largest ``√D_j |w_init_j|``
        (default ``w̄``)
    gradient : γ in ``b_B = A_B w̄_B − γ``: one value, or one ``γ_B`` per block
    max_iter : IHT steps per block; tol : relative decrease under which IHT stops

    Columns outside every block get 0.
    """
    A = check_matrix(A)
    p = A.shape[1]
    w_bar = np.zeros(p) if w_bar is None else check_vector(w_bar, p, np.float64, "w_bar")
    w_init = w_bar if w_init is None else check_vector(w_init, p, np.float64, "w_init")
    los, his, ks = _check_blocks(blocks, ks, p)
    lam = check_nonnegative(lam, "lam")
    max_iter = check_positive_int(max_iter, "max_iter")
    tol = check_nonnegative(tol, "tol")
    gammas = np.asarray(gradient, dtype=np.float64)
    if gammas.ndim > 1 or (gammas.ndim == 1 and gammas.size != los.size):
        raise ValueError(f"gradient must be a number or one value per block ({los.size}), got shape "
                         f"{gammas.shape}")
    if not np.all(np.isfinite(gammas)):
        raise ValueError(f"gradient must be finite, got {gradient!r}")
    gammas = np.ascontiguousarray(np.broadcast_to(gammas, (los.size,)))
    coef, coef_start = np.zeros(p), np.zeros(p)
    mask = np.zeros(p, dtype=np.bool_)
    info = np.zeros((los.size, 3))
    rcond = default_rcond(A.dtype, A.shape[0], int(np.max(his - los, initial=1)))
    start = time.perf_counter()
    with threadpool_limits(limits=1, user_api="blas"):  # the kernel's threads are the parallelism
        kern.solve_blocks(A, los, his, ks, w_bar, w_init, A.shape[0] * lam, gammas, max_iter, tol,
                          rcond, coef, mask, coef_start, info)
    seconds = time.perf_counter() - start
    logger.debug("%d blocks in %.3fs, %d IHT steps", los.size, seconds, int(info[:, 2].sum()))
    return BlocksResult(coef, mask, coef_start, info[:, 0].copy(), info[:, 1].copy(),
                        info[:, 2].astype(np.int64), seconds)
