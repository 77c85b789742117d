"""Awkward inputs: converted when numpy can do so losslessly, refused with an error naming the argument."""
import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

import l0reg
from l0reg import L0RidgeCV, L0RidgeRegressor


@pytest.fixture
def problem(rng):
    return rng.standard_normal((12, 6)), rng.standard_normal(12), rng.standard_normal(6)


def test_non_native_byte_order_is_converted(problem):
    A, b, w_bar = problem
    expected = l0reg.solve(A, b, 2, lam=0.1, w_bar=w_bar)
    swapped = [x.astype(x.dtype.newbyteorder(">" if np.little_endian else "<")) for x in (A, b, w_bar)]
    result = l0reg.solve(*swapped[:2], 2, lam=0.1, w_bar=swapped[2])
    np.testing.assert_array_equal(result.coef, expected.coef)
    assert l0reg.objective(*swapped[:2], result.coef, 0.1, swapped[2]) == expected.objective


def test_np_matrix_is_an_ndarray(problem):
    A, b, _ = problem
    result = l0reg.solve(np.asmatrix(A), np.asmatrix(b), 2)
    np.testing.assert_array_equal(result.coef, l0reg.solve(A, b, 2).coef)


@pytest.mark.parametrize("name", ["A", "b", "w_bar", "w_init"])
def test_masked_arrays_are_refused(problem, name):
    A, b, w_bar = problem
    args = dict(A=A, b=b, w_bar=w_bar, w_init=w_bar)
    args[name] = np.ma.masked_array(args[name])
    with pytest.raises(TypeError, match=rf"^{name} is a masked array"):
        l0reg.solve(args.pop("A"), args.pop("b"), 2, **args)


def test_objective_names_w(problem):
    A, b, w_bar = problem
    w = np.zeros(6)
    w[2] = np.nan
    with pytest.raises(ValueError, match=r"^w contains NaN"):
        l0reg.objective(A, b, w)
    with pytest.raises(ValueError, match=r"^w has length"):
        l0reg.objective(A, b, np.zeros(5))


@pytest.mark.parametrize("support", [[0.0, 2.0], np.array([1.7]), [0.5, 1]])
def test_solve_on_support_refuses_float_indices(problem, support):
    A, b, _ = problem
    with pytest.raises(ValueError, match=r"^support must contain integer indices"):
        l0reg.solve_on_support(A, b, support)


def test_solve_on_support_accepts_integer_indices(problem):
    A, b, _ = problem
    w, _ = l0reg.solve_on_support(A, b, np.array([3, 1], dtype=np.uint8))
    assert set(np.flatnonzero(w)) == {1, 3}
    with pytest.raises(ValueError, match=r"^support indices must lie in \[0, 6\)"):
        l0reg.solve_on_support(A, b, [6])


BAD_DATA = {
    "X strings": ("X", lambda X, y: (X.astype(str), y)),
    "X bytes": ("X", lambda X, y: (X.astype("S8"), y)),
    "X object with text": ("X", lambda X, y: (np.where(X > 0, "a", X).astype(object), y)),
    "y strings": ("y", lambda X, y: (X, y.astype(str))),
    "y object with text": ("y", lambda X, y: (X, np.array(["u"] * len(y), dtype=object))),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
@pytest.mark.parametrize("Estimator", [L0RidgeRegressor, L0RidgeCV])
def test_estimators_refuse_non_numeric_data(problem, Estimator, case):
    name, change = BAD_DATA[case]
    X, y = change(*problem[:2])
    with pytest.raises((TypeError, ValueError), match=rf"^{name} (has string dtype|must contain numbers only)"):
        (Estimator(cv=2) if Estimator is L0RidgeCV else Estimator(k=2)).fit(X, y)


def test_estimators_accept_numeric_objects(problem):
    X, y, _ = problem
    expected = L0RidgeRegressor(k=2).fit(X, y).coef_
    np.testing.assert_array_equal(L0RidgeRegressor(k=2).fit(X.astype(object), y.astype(object)).coef_, expected)


def test_cv_clips_ks_to_the_number_of_features(problem):
    X, y, _ = problem
    model = L0RidgeCV(ks=[1, 4, 9, 12], cv=2).fit(X, y)
    np.testing.assert_array_equal(model.cv_results_["ks"], [1, 4, 6])


@parametrize_with_checks([L0RidgeCV(ks=[1, 2, 3])])
def test_cv_with_explicit_ks_is_sklearn_compatible(estimator, check):
    check(estimator)
