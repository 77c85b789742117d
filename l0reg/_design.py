"""The design matrix ``A`` seen through the few products the solvers need.

``Design`` dispatches each product to BLAS (full products, in the dtype of
``A`` so that a float32 matrix is never upcast) or to a Numba kernel chosen for
the memory layout (restricted products over a column subset). It never copies
or writes into ``A``; vectors handed back are float64.

A design may stand for ``Â = A / s`` with a power of two ``s`` (see
:func:`matrix_scale`): every product is then scaled by ``1/s`` (exactly), so
that quadratic quantities such as ``‖â_j‖²`` or Gram blocks neither overflow
nor underflow whatever the magnitude of ``A``.
"""
import numba
import numpy as np
import scipy.linalg.blas

from . import _kernels as kern
from ._threads import gram_blas_threads
from ._validation import all_finite

# A restricted product ``A[:, S] @ x`` over more than this fraction of the
# columns is faster as one full BLAS product with x scattered into zeros (BLAS
# streams A with SIMD on every core; the gather kernel does not); for a
# C-ordered A already beyond 1/32, in both directions (its selected columns are
# spread over every cache line, so rows are read whole anyway: a 10% gather
# took 19 ms against 7 ms for the full product, 1000 x 32,360 float32).
_DENSE_FRACTION = {"matvec": 1.0 / 8, "c": 1.0 / 32}
# Column updates of more columns than this go through the restricted product.
_FEW_COLUMNS = 32
# Kernels run on Numba's threads only beyond this many multiply-adds: on 2 shared
# cores a parallel gather of 1.5M entries took 1-12 ms against 0.24 ms on one
# thread (each call waits for a descheduled thread), a full 1000 x 32,360 pass
# 7.7 vs 5 ms, max|A| of a 500 x 1000 A 37 ms.
_PARALLEL_MIN_WORK = 1 << 23
# Bytes of one float64 block of columns or rows converted at a time by the Gram
# products (bounded temporaries: 1 MB is 128 columns of a 1000-row A).
_BLOCK_BYTES = 1 << 20


def matrix_scale(A):
    """The power of two ``s`` with ``max|A| / s`` in [0.5, 1) (1 for a zero matrix)."""
    kernel = kern.max_abs.parallel if A.size >= _PARALLEL_MIN_WORK else kern.max_abs
    return _power_of_two_above(float(kernel(A.reshape(-1, order="A"))))


# ``scaled_design`` takes the column norms of A itself only when the largest square lies within these powers
# of two (below, the squares of small entries would underflow where those of Â need not).
_RAW_SQUARES_MIN_EXPONENT = -900


def _power_of_two_above(peak):
    return float(np.ldexp(1.0, int(np.frexp(peak)[1]))) if peak > 0 else 1.0


def scaled_design(A):
    """A design of ``A`` with its column norms ``‖â_j‖²``, from one read of A (against three reads for a
    finiteness check, ``matrix_scale`` and the norms); None when A holds a NaN or an infinity.

    The scale is the power of two above ``max_j ‖a_j‖`` (≥ max|A_ij|, so max|Â_ij| ≤ 1 as with
    ``matrix_scale``, and ‖â_j‖² < 1): ``Σ_i A_ij²``, computed once, gives both, and ``‖â_j‖² = ‖a_j‖²/s²``
    exactly (s is a power of two). When the squares overflow or underflow: ``matrix_scale`` and the norms
    of Â, as ``Design`` computes them.
    """
    raw = Design(A)
    sq = raw.col_sq()
    if not np.isfinite(sq).all():  # a NaN or an infinity, or squares beyond float64's range
        return Design(A, matrix_scale(A)) if all_finite(A) else None
    top = float(sq.max())
    zero = np.flatnonzero(sq == 0.0)
    if top == 0.0 or np.frexp(top)[1] < _RAW_SQUARES_MIN_EXPONENT or not _zero_columns(raw, zero):
        return Design(A, matrix_scale(A))  # a zero norm from underflowing squares: the norms of Â
    scale = _power_of_two_above(np.sqrt(top))
    return Design(A, scale, col_sq=sq / (scale * scale))


def _zero_columns(design, idx):
    """Whether the columns ``idx`` are all zero (read in blocks)."""
    return not any(np.any(blk) for _, _, blk in design.column_blocks(idx))


class Design:
    """Wrap ``A`` (n × p, float32/float64, C or Fortran order) as ``Â = A / scale`` (with ``col_sq``, its
    column norms ``‖â_j‖²`` if known)."""

    def __init__(self, A, scale=1.0, col_sq=None):
        self.A = A
        self.scale, self.inv = scale, 1.0 / scale
        self.n, self.p = A.shape
        self.fortran = bool(A.flags.f_contiguous) and not (A.flags.c_contiguous and self.n > 1)
        self._col_sq = col_sq  # ‖â_j‖², when the caller has them
        self._row_gram = None  # (support mask, A_S A_Sᵀ) of the last row_gram call
        self.refits = {}  # the last few exact refits, kept by _backsolve.ridge_on_support
        self.gram_columns = None  # Gram columns Âᵀâ_i kept by _local_search.GramColumns

    @property
    def nbytes(self):
        return self.A.nbytes

    # ------------------------------------------------------------------ full products
    def rmatvec(self, r):
        """``Âᵀ r`` (BLAS, in A's dtype), returned as float64."""
        return self._scaled((self.A.T @ r.astype(self.A.dtype, copy=False)).astype(np.float64, copy=False))

    def matvec(self, x):
        """``Â x`` (BLAS, in A's dtype), returned as float64."""
        return self._scaled((self.A @ x.astype(self.A.dtype, copy=False)).astype(np.float64, copy=False))

    def _scaled(self, v):
        if self.inv != 1.0:
            v *= self.inv
        return v

    # ------------------------------------------------------------------ restricted products
    def cols_matvec(self, idx, x, exact=False):
        """``Â[:, idx] @ x`` without forming ``Â[:, idx]``.

        With ``exact`` the products are always accumulated in float64 (no
        float32 BLAS), for objective values that are compared or reported.
        """
        idx = np.ascontiguousarray(idx, dtype=np.int64)
        x = np.ascontiguousarray(x, dtype=np.float64)
        if not exact and idx.size > self._dense_fraction() * self.p:
            dense = np.zeros(self.p, dtype=self.A.dtype)
            dense[idx] = x
            return self.matvec(dense)
        if self.fortran:
            return self._scaled(self._cols_matmul(idx, x.reshape(-1, 1))[0])
        out = np.empty(self.n)
        self._pick(kern.cols_matvec_c, idx.size)(self.A, idx, x, out)
        return self._scaled(out)

    def _dense_fraction(self):
        return _DENSE_FRACTION["matvec" if self.fortran else "c"]

    def _pick(self, kernel, n_cols):
        """The serial or the parallel build of ``kernel`` for a product over ``n_cols`` columns."""
        return kernel.parallel if self.n * n_cols >= _PARALLEL_MIN_WORK else kernel

    def _cols_matmul(self, idx, X):
        """``(A[:, idx] @ X)ᵀ`` (r × n, float64) for a Fortran-ordered A: one column run per Numba thread
        when the product runs in parallel."""
        kernel = self._pick(kern.cols_matmul_f, idx.size)
        out = np.zeros((X.shape[1], self.n))
        kernel(self.A, idx, X, out, numba.get_num_threads() if kernel is kern.cols_matmul_f.parallel else 1)
        return out

    def residual(self, b, idx, x):
        """``b − Â[:, idx] @ x`` accumulated in float64 (see ``cols_matvec``)."""
        return b - self.cols_matvec(idx, x, exact=True)

    def cols_rmatvec(self, idx, r):
        """``Â[:, idx].T @ r`` without forming ``Â[:, idx]``."""
        idx = np.ascontiguousarray(idx, dtype=np.int64)
        r = np.ascontiguousarray(r, dtype=np.float64)
        if not self.fortran and idx.size > _DENSE_FRACTION["c"] * self.p:
            return self.rmatvec(r)[idx]
        out = np.empty(idx.size)
        kernel = kern.cols_rmatvec
        (kernel.parallel if self.n * idx.size >= _PARALLEL_MIN_WORK else kernel)(self.A, idx, r, out)
        return self._scaled(out)

    def add_cols(self, idx, coef, out):
        """``out += Â[:, idx] @ coef`` (in place for a few columns, else one restricted product)."""
        if len(idx) > _FEW_COLUMNS:
            out += self.cols_matvec(idx, coef)
            return
        kern.add_cols(self.A, np.ascontiguousarray(idx, dtype=np.int64),
                      np.ascontiguousarray(coef, dtype=np.float64) * self.inv, out)

    def add_cols2(self, idx, x, y, out_x, out_y):
        """``out_x += Â[:, idx] @ x`` and ``out_y += Â[:, idx] @ y`` in one read of the columns."""
        idx = np.ascontiguousarray(idx, dtype=np.int64)
        if self.fortran:
            out = self._cols_matmul(idx, np.column_stack([x, y]) * self.inv)
        else:
            out = self.sparse_products([(idx, x, y)])[0]
        out_x += out[0]
        out_y += out[1]

    def sparse_products(self, products):
        """``[(Â[:, S_c] @ x_c, Â[:, S_c] @ y_c) for (S_c, x_c, y_c) in products]`` as an m × 2 × n float64 array
        (accumulated in float64), for a C-ordered A in one pass over its rows (each row's gathered entries stay
        in cache)."""
        bounds = np.zeros(len(products) + 1, dtype=np.int64)
        np.cumsum([len(S) for S, _, _ in products], out=bounds[1:])
        idx, coef = np.empty(bounds[-1], dtype=np.int64), np.empty((2, bounds[-1]))
        for (S, x, y), lo, hi in zip(products, bounds[:-1], bounds[1:]):  # filled in place: no temporaries
            idx[lo:hi], coef[0, lo:hi], coef[1, lo:hi] = S, x, y
        coef *= self.inv
        out = np.empty((len(products), 2, self.n))
        self._pick(kern.rows_gathered_dots, idx.size)(self.A, idx, coef, bounds, out)
        return out

    def step_direction(self, r, w, w_bar, nlam, inv_diag):
        """``(g, q)``: the preconditioned gradient ``g = D⁻¹∇F(w) = D⁻¹(nλ(w − w̄) − Âᵀr)`` and
        ``q = Â_S g_S`` on S = supp w, in one pass over the columns of a Fortran-ordered A (for a C-ordered
        A, q is None: the line search computes it in its own pass over the rows)."""
        if not self.fortran:  # in place: one p-vector temporary at most
            g = self.rmatvec(r)
            np.negative(g, out=g)
            if nlam:
                d = w - w_bar
                d *= nlam
                g += d
            g *= inv_diag
            return g, None
        parallel = self.A.size >= _PARALLEL_MIN_WORK
        kernel = kern.step_direction_f.parallel if parallel else kern.step_direction_f
        partial = np.empty((4 * numba.get_num_threads() if parallel else 1, self.n))
        g = np.empty(self.p)
        kernel(self.A, self.inv, np.ascontiguousarray(r, dtype=np.float64), w, w_bar, nlam, inv_diag, g, partial)
        return g, self._scaled(partial.sum(axis=0))

    def take_cols(self, idx):
        """A Fortran-ordered copy of ``A[:, idx]`` (O(n·|idx|) memory, written once)."""
        out = np.empty((self.n, len(idx)), dtype=self.A.dtype, order="F")
        for lo in range(0, len(idx), 256):  # blocks keep the temporaries small
            out[:, lo:lo + 256] = self.A[:, idx[lo:lo + 256]]
        return out

    def subset(self, idx):
        """The design of the columns ``idx`` (a copy, see ``take_cols``), with the same scale."""
        return Design(self.take_cols(idx), self.scale)

    def cols64(self, idx):
        """``Â[:, idx]`` as a float64 array (small column sets only)."""
        return self.A[:, idx].astype(np.float64) * self.inv

    def gram_cols(self, idx):
        """``Âᵀ Â[:, idx]`` (p × |idx|, float64: one BLAS product for a float64 A, else accumulated over
        float64 copies of column blocks of Â)."""
        right = self.cols64(idx)
        if self.A.dtype == np.float64:
            # C order: (rightᵀ A)ᵀ streams A's rows (2-2.5x faster than Aᵀ right, 10 columns of 200 x 20,000)
            return self._scaled(self.A.T @ right if self.fortran else (right.T @ self.A).T)
        out = np.empty((self.p, right.shape[1]))
        for lo, cols, blk in self.column_blocks(np.arange(self.p)):
            out[lo:lo + cols.size] = blk.T @ right
        return out

    def row_gram(self, support):
        """``A_S A_Sᵀ`` (n × n, float64, accumulated over column blocks of ``A_S``).

        The last result is kept and updated in place: when fewer columns differ from its support than ``S``
        has, the changed columns' outer products are added and subtracted (successive refits of a solver
        differ in a few columns). Products are symmetric rank-k updates (``dsyrk``, half the flops of a
        general product). Callers may overwrite the returned array's lower triangle and diagonal (an in-place
        Cholesky) if they restore them from its strict upper triangle before the next call.
        """
        mask = np.zeros(self.p, dtype=bool)
        mask[support] = True
        if self._row_gram is not None:
            previous, K = self._row_gram
            added, removed = np.flatnonzero(mask & ~previous), np.flatnonzero(previous & ~mask)
            if added.size + removed.size < len(support):
                self._syrk(K, added, 1.0)
                self._syrk(K, removed, -1.0)
                kern.mirror_lower(K)
                self._row_gram = (mask, K)
                return K
        if self._row_gram is None:
            K = np.zeros((self.n, self.n), order="F")
        else:  # recomputed in the previous product's memory (no second n x n array)
            K = self._row_gram[1]
            self._row_gram = None
            K[...] = 0.0
        self._syrk(K, np.asarray(support, dtype=np.int64), 1.0)
        kern.mirror_lower(K)
        self._row_gram = (mask, K)
        return K

    def _syrk(self, K, idx, alpha):
        """Lower triangle of ``K += alpha · Â[:, idx] Â[:, idx]ᵀ`` (K Fortran-ordered, updated in place)."""
        with gram_blas_threads(float(self.n) * self.n * len(idx)):
            for _, _, blk in self.column_blocks(idx):
                scipy.linalg.blas.dsyrk(alpha, blk, beta=1.0, c=K, lower=1, overwrite_c=1)

    def column_blocks(self, support):
        """``(offset, idx, Â[:, idx] as float64)`` over consecutive chunks ``idx`` of ``support``.

        Every block is written into the same buffer: use each before asking for the next.
        """
        support = np.asarray(support, dtype=np.int64)
        width = max(1, _BLOCK_BYTES // (8 * self.n))
        buffer = np.empty((self.n, min(width, len(support))), order="F")
        for lo in range(0, len(support), width):
            idx = support[lo:lo + width]
            blk = buffer[:, :idx.size]
            kern.gather_cols(self.A, idx, 0, self.n, self.inv, blk)
            yield lo, idx, blk

    def row_blocks(self, support):
        """``(offset, Â[rows, support] as float64)`` over consecutive chunks of rows (a new array each)."""
        support = np.asarray(support, dtype=np.int64)
        height = max(1, _BLOCK_BYTES // (8 * max(1, support.size)))
        for lo in range(0, self.n, height):
            hi = min(self.n, lo + height)
            blk = np.empty((hi - lo, support.size), order="F")
            kern.gather_cols(self.A, support, lo, hi, self.inv, blk)
            yield lo, blk

    def col_sq(self):
        """``‖â_j‖²`` for every column (computed once, cached)."""
        if self._col_sq is None:
            parallel = self.A.size >= _PARALLEL_MIN_WORK
            if self.fortran:
                out = np.empty(self.p)
                kernel = kern.column_norms_sq
                (kernel.parallel if parallel else kernel)(self.A, self.inv, out)
            else:  # one p-vector accumulator per thread
                partial = np.empty((numba.get_num_threads() if parallel else 1, self.p))
                kernel = kern.column_norms_sq_c
                (kernel.parallel if parallel else kernel)(self.A, self.inv, partial)
                out = partial.sum(axis=0)
            self._col_sq = out
        return self._col_sq
