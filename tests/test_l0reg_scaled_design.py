"""``scaled_design``: A's finiteness, scale and column norms from one read equal the three reads apart (the
scale exactly, the norms to rounding), on every layout and dtype, and for entries whose squares overflow or
underflow."""
import numpy as np
import pytest

import l0reg
from l0reg._design import Design, matrix_scale, scaled_design


def _expected(A):
    design = Design(A, matrix_scale(A))
    return design.scale, design.col_sq()


@pytest.mark.parametrize("order", "CF")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("magnitude", [1.0, 1e-30, 1e30, 1e-250, 1e250, 0.0])
def test_one_read_equals_three(order, dtype, magnitude):
    if dtype == np.float32 and not 1e-30 <= magnitude <= 1e30:
        pytest.skip("beyond float32's range")
    rng = np.random.default_rng(0)
    A = np.asarray(rng.standard_normal((37, 53)) * magnitude, dtype=dtype, order=order)
    design = scaled_design(A)
    scale, col_sq = _expected(A)
    assert design.scale == scale and design.fortran == (order == "F")
    np.testing.assert_allclose(design.col_sq(), col_sq, rtol=1e-13)


@pytest.mark.parametrize("order", "CF")
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_entry_gives_none(order, bad):
    A = np.asarray(np.random.default_rng(1).standard_normal((20, 30)), order=order)
    A[7, 11] = bad
    assert scaled_design(A) is None
    with pytest.raises(ValueError, match="A contains NaN or infinity"):
        l0reg.solve(A, np.ones(20), 3)


def test_large_a_on_numba_threads():
    A = np.random.default_rng(2).standard_normal((1200, 7000))  # beyond the parallel threshold
    design = scaled_design(A)
    scale, col_sq = _expected(A)
    assert design.scale == scale
    np.testing.assert_allclose(design.col_sq(), col_sq, rtol=1e-13)
