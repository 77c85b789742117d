"""Input validation for the functional solver API.

Every check raises a ``ValueError`` (or ``TypeError`` for wrong kinds of
objects) that names the offending argument, so that bad input never reaches a
Numba kernel.
"""
import numbers

import numpy as np

_FLOAT_DTYPES = (np.float32, np.float64)


def _plain_array(x, name):
    """``x`` as a base-class ndarray in native byte order: ``np.matrix`` is
    viewed as an ndarray, a non-native byte order is converted (a copy);
    masked arrays are refused (their mask would be dropped silently)."""
    if isinstance(x, np.ma.MaskedArray):
        raise TypeError(f"{name} is a masked array; fill or compress it first (e.g. {name}.filled())")
    arr = np.asarray(x)
    if arr.dtype.byteorder not in "=|" and arr.dtype.kind in "fiuc":
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def check_matrix(A, name="A", finite=True):
    """Return ``A`` as a 2-D float32/float64 ndarray without copying it.

    Integer, boolean and complex matrices are refused instead of being upcast
    silently: for the large matrices this library is meant for, a hidden copy
    would double the memory footprint. ``np.matrix`` is viewed as an ndarray
    and a non-native byte order converted (see ``_plain_array``).
    """
    if not isinstance(A, np.ndarray):
        if hasattr(A, "toarray") or hasattr(A, "tocsr"):
            raise TypeError(f"{name} must be a dense numpy array; sparse matrices are not supported")
        raise TypeError(f"{name} must be a numpy ndarray, got {type(A).__name__}")
    A = _plain_array(A, name)
    if A.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {A.shape}")
    if A.dtype not in _FLOAT_DTYPES:
        raise ValueError(
            f"{name} must have dtype float32 or float64, got {A.dtype}; convert it explicitly "
            f"(e.g. {name}.astype(np.float64)) if that is what you want"
        )
    if A.shape[0] == 0 or A.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {A.shape}")
    if not (A.flags.c_contiguous or A.flags.f_contiguous):
        raise ValueError(f"{name} must be C- or Fortran-contiguous; pass np.ascontiguousarray({name})")
    if finite and not all_finite(A):
        raise not_finite(name)
    return A


def not_finite(name):
    """The error for a matrix ``name`` holding a NaN or an infinity."""
    return ValueError(f"{name} contains NaN or infinity")


def all_finite(x):
    """Whether every entry of ``x`` is finite (blockwise: a large matrix is never duplicated by the check)."""
    flat = x.reshape(-1, order="A")
    step = 1 << 22
    for start in range(0, flat.size, step):
        if not np.isfinite(flat[start:start + step]).all():
            return False
    return True


def check_vector(v, length, dtype, name):
    """Return ``v`` as a finite 1-D array of ``dtype`` and the given length."""
    arr = _plain_array(v, name)
    if arr.dtype.kind not in "fiu" or arr.dtype == np.float16:
        if arr.dtype.kind == "c":
            raise ValueError(f"{name} must be real-valued, got complex dtype {arr.dtype}")
        if arr.dtype.kind != "f":
            raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.shape[0] != length:
        raise ValueError(f"{name} has length {arr.shape[0]}, expected {length}")
    arr = np.ascontiguousarray(arr, dtype=dtype)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinity")
    return arr


def check_k(k, n_features, name="k"):
    """Return ``k`` as an int in ``[0, n_features]``."""
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {k!r}")
    k = int(k)
    if k < 0 or k > n_features:
        raise ValueError(f"{name} must be in [0, n_features={n_features}], got {k}")
    return k


def check_indices(idx, n_features, name):
    """Return ``idx`` as sorted unique int64 indices in ``[0, n_features)``
    (float indices are refused rather than truncated)."""
    arr = _plain_array(idx, name)
    if arr.size == 0:
        return np.empty(0, dtype=np.int64)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must contain integer indices, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.min() < 0 or arr.max() >= n_features:
        raise ValueError(f"{name} indices must lie in [0, {n_features}), got {arr}")
    return np.unique(arr.astype(np.int64))


def check_nonnegative(x, name):
    """Return ``x`` as a finite float >= 0."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {x!r}")
    x = float(x)
    if not np.isfinite(x) or x < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {x}")
    return x


def check_positive_int(x, name):
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Integral) or x < 1:
        raise ValueError(f"{name} must be a positive integer, got {x!r}")
    return int(x)


def check_problem(A, b, k, lam, w_bar=None, w_init=None, finite=True):
    """Validate the arguments of :func:`l0reg.solve`.

    Returns ``(A, b, k, lam, w_bar, w_init)`` with ``b``, ``w_bar`` and
    ``w_init`` converted to the dtype of ``A`` (``A`` itself is never copied).
    ``finite=False`` leaves A's finiteness to the caller (checked in its own read of A).
    """
    A = check_matrix(A, "A", finite)
    n, p = A.shape
    b = check_vector(b, n, A.dtype, "b")
    k = check_k(k, p)
    lam = check_nonnegative(lam, "lam")
    w_bar = np.zeros(p, dtype=A.dtype) if w_bar is None else check_vector(w_bar, p, A.dtype, "w_bar")
    if w_init is not None:
        w_init = check_vector(w_init, p, A.dtype, "w_init")
    return A, b, k, lam, w_bar, w_init


def check_nonnegative_int(x, name):
    """Return ``x`` as an int >= 0 (booleans and floats are refused)."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Integral) or x < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {x!r}")
    return int(x)


def check_ks(ks, n_features, name="ks"):
    """Return ``ks`` as a strictly increasing list of ints in ``[0, n_features]``."""
    if isinstance(ks, (str, bytes)):
        raise ValueError(f"{name} must be a sequence of integers, got {ks!r}")
    arr = np.asarray(ks, dtype=object if isinstance(ks, (list, tuple)) else None)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of integers, got {ks!r}")
    values = [check_k(k, n_features, name) for k in arr.tolist()]
    if any(later <= earlier for earlier, later in zip(values, values[1:])):
        raise ValueError(f"{name} must be sorted in increasing order without duplicates, got {values}")
    return values


def check_sample_weight(sample_weight, n_samples, dtype, name="sample_weight"):
    """Return ``sample_weight`` as a 1-D array of ``dtype``: finite, >= 0, not all zero."""
    sw = check_vector(sample_weight, n_samples, dtype, name)
    if (sw < 0).any():
        raise ValueError(f"{name} must be non-negative")
    if not (sw > 0).any():
        raise ValueError(f"{name} must contain at least one non-zero weight")
    return sw
