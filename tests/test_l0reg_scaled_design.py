"""``scaled_design``: A's finiteness, a power-of-two scale and the column norms from one read of A. The norms
equal those the design computes from Â (exactly: the scale is a power of two), on every layout and dtype; where
squares overflow or underflow it falls back to ``matrix_scale``."""
import numpy as np
import pytest

import l0reg
from l0reg._design import Design, matrix_scale, scaled_design


@pytest.mark.parametrize("order", "CF")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("magnitude", [1.0, 1e-30, 1e30, 1e-100])
def test_one_read_gives_the_norms_of_the_scaled_design(order, dtype, magnitude):
    if dtype == np.float32 and not 1e-30 <= magnitude <= 1e30:
        pytest.skip("beyond float32's range")
    rng = np.random.default_rng(0)
    A = np.asarray(rng.standard_normal((37, 53)) * magnitude, dtype=dtype, order=order)
    A[:, 5] = 0.0  # a zero column
    design = scaled_design(A)
    assert design.fortran == (order == "F")
    assert 0.25 <= design.col_sq().max() < 1.0 and np.abs(A).max() / design.scale <= 1.0
    assert np.frexp(design.scale)[0] == 0.5  # a power of two
    np.testing.assert_array_equal(design.col_sq(), Design(A, design.scale).col_sq())


@pytest.mark.parametrize("order", "CF")
@pytest.mark.parametrize("magnitude", [1e-250, 1e250])
def test_squares_beyond_float64_fall_back_to_matrix_scale(order, magnitude):
    A = np.asarray(np.random.default_rng(1).standard_normal((20, 30)) * magnitude, order=order)
    design = scaled_design(A)
    assert design.scale == matrix_scale(A)
    np.testing.assert_array_equal(design.col_sq(), Design(A, matrix_scale(A)).col_sq())
    assert np.all(design.col_sq() > 0)


@pytest.mark.parametrize("order", "CF")
def test_a_column_whose_squares_underflow_keeps_its_norm(order):
    rng = np.random.default_rng(2)
    A = np.asarray(rng.standard_normal((20, 30)) * 1e-100, order=order)
    A[:, 3] = rng.standard_normal(20) * 1e-170  # squares underflow in A, not in Â
    design = scaled_design(A)
    assert design.col_sq()[3] > 0
    np.testing.assert_array_equal(design.col_sq(), Design(A, matrix_scale(A)).col_sq())


@pytest.mark.parametrize("order", "CF")
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_entry_gives_none(order, bad):
    A = np.asarray(np.random.default_rng(3).standard_normal((20, 30)), order=order)
    A[7, 11] = bad
    assert scaled_design(A) is None
    with pytest.raises(ValueError, match="A contains NaN or infinity"):
        l0reg.solve(A, np.ones(20), 3)


def test_large_a_on_numba_threads():
    A = np.random.default_rng(4).standard_normal((1200, 7000))  # beyond the parallel threshold
    design = scaled_design(A)
    np.testing.assert_allclose(design.col_sq(), Design(A, design.scale).col_sq(), rtol=1e-15)
