"""The design matrix ``A`` seen through the few products the solvers need.

``Design`` dispatches each product to BLAS (full products, in the dtype of
``A`` so that a float32 matrix is never upcast) or to a Numba kernel chosen for
the memory layout (restricted products over a column subset). It never copies
or writes into ``A``; vectors handed back are float64.
"""
import numpy as np

from . import _kernels as kern

# A restricted product over more than this fraction of the columns of a
# C-ordered matrix is cheaper as one full BLAS product (its rows are read whole
# anyway, because the selected columns are spread over every cache line).
_C_ORDER_DENSE_FRACTION = 1.0 / 32
# Restricted products with fewer multiply-adds than this run on one thread.
_PARALLEL_MIN_WORK = 1 << 18


def _pick(kernel, work):
    return kernel.parallel if work >= _PARALLEL_MIN_WORK else kernel


class Design:
    """Wrap ``A`` (n × p, float32/float64, C or Fortran order)."""

    def __init__(self, A):
        self.A = A
        self.n, self.p = A.shape
        self.fortran = bool(A.flags.f_contiguous) and not (A.flags.c_contiguous and self.n > 1)
        self._col_sq = None

    @property
    def nbytes(self):
        return self.A.nbytes

    # ------------------------------------------------------------------ full products
    def rmatvec(self, r):
        """``Aᵀ r`` (BLAS, in A's dtype), returned as float64."""
        return (self.A.T @ r.astype(self.A.dtype, copy=False)).astype(np.float64, copy=False)

    def matvec(self, x):
        """``A x`` (BLAS, in A's dtype), returned as float64."""
        return (self.A @ x.astype(self.A.dtype, copy=False)).astype(np.float64, copy=False)

    # ------------------------------------------------------------------ restricted products
    def cols_matvec(self, idx, x):
        """``A[:, idx] @ x`` without forming ``A[:, idx]``."""
        idx = np.ascontiguousarray(idx, dtype=np.int64)
        x = np.ascontiguousarray(x, dtype=np.float64)
        if not self.fortran and idx.size > _C_ORDER_DENSE_FRACTION * self.p:
            dense = np.zeros(self.p, dtype=self.A.dtype)
            dense[idx] = x
            return self.matvec(dense)
        out = np.empty(self.n)
        kernel = kern.cols_matvec_f if self.fortran else kern.cols_matvec_c
        _pick(kernel, self.n * idx.size)(self.A, idx, x, out)
        return out

    def cols_rmatvec(self, idx, r):
        """``A[:, idx].T @ r`` without forming ``A[:, idx]``."""
        idx = np.ascontiguousarray(idx, dtype=np.int64)
        r = np.ascontiguousarray(r, dtype=np.float64)
        if not self.fortran and idx.size > _C_ORDER_DENSE_FRACTION * self.p:
            return self.rmatvec(r)[idx]
        out = np.empty(idx.size)
        kernel = kern.cols_rmatvec_f if self.fortran else kern.cols_rmatvec_c
        _pick(kernel, self.n * idx.size)(self.A, idx, r, out)
        return out

    def add_cols(self, idx, coef, out):
        """``out += A[:, idx] @ coef`` for a few columns."""
        kern.add_cols(self.A, np.ascontiguousarray(idx, dtype=np.int64),
                      np.ascontiguousarray(coef, dtype=np.float64), out)

    def take_cols(self, idx):
        """A Fortran-ordered copy of ``A[:, idx]`` (O(n·|idx|) memory)."""
        return np.asfortranarray(self.A[:, idx])

    def col_sq(self):
        """``‖a_j‖²`` for every column (computed once, cached)."""
        if self._col_sq is None:
            out = np.empty(self.p)
            if self.fortran:
                kern.column_norms_sq(self.A, out)
            else:
                out[:] = 0.0
                for lo in range(0, self.n, 256):
                    blk = self.A[lo:lo + 256].astype(np.float64)
                    out += np.einsum("ij,ij->j", blk, blk)
            self._col_sq = out
        return self._col_sq
