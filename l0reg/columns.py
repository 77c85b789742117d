"""Column statistics of a large matrix, read in place and accumulated in float64.

For ``A`` of shape ``(n, p)`` with columns ``a_j``:

    column_norms_sq(A)[j] = ‖a_j‖² = Σ_i A_ij²        (the diagonal of AᵀA)
    column_means(A)[j]    = (1/n) Σ_i A_ij             (Aᵀ1 / n)

``A`` may be float16, float32 or float64, in C or Fortran order (or any strided view); it is never copied or
upcast as a whole.  Float32/float64 matrices go through l0reg's column kernels (each Fortran column streamed
once, a C-ordered A row by row, on Numba's threads for large A); other cases through
numpy with a float64 accumulator.  NaN and infinity propagate as in numpy.
"""
import numpy as np

from ._design import Design
from ._validation import _plain_array

_KERNEL_DTYPES = (np.float32, np.float64)


def _check(A, name):
    """``A`` as a plain 2-D floating-point ndarray (no copy), or ``TypeError`` / ``ValueError`` naming it."""
    if not isinstance(A, np.ndarray):
        raise TypeError(f"{name} must be a numpy ndarray, got {type(A).__name__}")
    A = _plain_array(A, name)
    if A.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, p), got shape {A.shape}")
    if A.dtype.kind != "f" or A.dtype.itemsize > 8:
        raise ValueError(f"{name} must have dtype float16, float32 or float64, got {A.dtype}")
    return A


def column_norms_sq(A):
    """``‖a_j‖² = Σ_i A_ij²`` for every column of ``A`` (float64, shape ``(p,)``; zeros if ``A`` has no rows)."""
    A = _check(A, "A")
    if A.dtype in _KERNEL_DTYPES:
        return Design(A).col_sq()
    return np.einsum("ij,ij->j", A, A, dtype=np.float64, optimize=False)


def column_means(A):
    """``(1/n) Σ_i A_ij`` for every column of ``A`` (float64, shape ``(p,)``); ``ValueError`` if ``A`` has no
    rows (the means are undefined)."""
    A = _check(A, "A")
    n, p = A.shape
    if n == 0:
        raise ValueError(f"A has no rows (shape {A.shape}): its column means are undefined")
    if A.dtype in _KERNEL_DTYPES and A.flags.f_contiguous:
        return Design(A).cols_rmatvec(np.arange(p), np.full(n, 1.0 / n))
    return A.mean(axis=0, dtype=np.float64)  # C order: numpy's float64 accumulation, not a float32 BLAS product
