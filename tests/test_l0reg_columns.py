"""l0reg.column_norms_sq and l0reg.column_means against numpy, on every layout and dtype, and their bad input."""
import numpy as np
import pytest

import l0reg


def _matrices(dtype):
    A = np.random.default_rng(0).standard_normal((300, 70)) * 10.0 + 3.0  # a mean far from 0: float32 sums drift
    A = A.astype(dtype)
    return {"C": np.ascontiguousarray(A), "F": np.asfortranarray(A), "strided": np.asfortranarray(A)[::2, 1::3]}


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("layout", ["C", "F", "strided"])
def test_column_statistics_match_numpy_in_float64(dtype, layout):
    A = _matrices(dtype)[layout]
    A64 = A.astype(np.float64)
    norms, means = l0reg.column_norms_sq(A), l0reg.column_means(A)
    assert norms.dtype == means.dtype == np.float64 and norms.shape == means.shape == (A.shape[1],)
    np.testing.assert_allclose(norms, (A64 ** 2).sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(means, A64.mean(axis=0), rtol=1e-12)


def test_column_statistics_leave_A_alone_and_propagate_nan():
    A = np.asfortranarray(np.random.default_rng(1).standard_normal((40, 6)).astype(np.float32))
    A[3, 2] = np.nan
    before = A.copy()
    norms, means = l0reg.column_norms_sq(A), l0reg.column_means(A)
    np.testing.assert_array_equal(A, before)
    assert np.isnan(norms[2]) and np.isnan(means[2])
    assert np.isfinite(np.delete(norms, 2)).all() and np.isfinite(np.delete(means, 2)).all()


def test_edge_shapes():
    assert l0reg.column_norms_sq(np.zeros((0, 4), order="F")).tolist() == [0.0] * 4
    assert l0reg.column_norms_sq(np.zeros((5, 0))).shape == (0,)
    assert l0reg.column_means(np.zeros((5, 0), order="F")).shape == (0,)
    np.testing.assert_allclose(l0reg.column_means(np.array([[1.0, -2.0]])), [1.0, -2.0])


@pytest.mark.parametrize("A, error, match", [
    ([[1.0, 2.0]], TypeError, "A must be a numpy ndarray, got list"),
    (np.ones(3), ValueError, r"A must be 2-D \(n, p\), got shape \(3,\)"),
    (np.ones((3, 2), dtype=np.int64), ValueError, "A must have dtype float16, float32 or float64, got int64"),
    (np.ones((3, 2), dtype=np.complex128), ValueError, "got complex128"),
    (np.ones((3, 2), dtype=bool), ValueError, "got bool"),
    (np.ma.masked_array(np.ones((3, 2))), TypeError, "A is a masked array"),
])
def test_bad_input(A, error, match):
    for function in (l0reg.column_norms_sq, l0reg.column_means):
        with pytest.raises(error, match=match):
            function(A)


def test_means_of_no_rows_are_refused():
    with pytest.raises(ValueError, match="A has no rows"):
        l0reg.column_means(np.zeros((0, 3), dtype=np.float32))
