"""Bad input raises ValueError naming the offending argument (before any Numba kernel runs)."""
import numpy as np
import pytest

import l0reg
from l0reg.estimator import L0RidgeRegressor
from l0reg.path import L0RidgeCV, l0_path

N, P = 8, 5


def _arg(name):
    """Regex matching ``name`` as a whole word (so "b" does not match inside "must be")."""
    return rf"(?<![\w.]){name}(?!\w)"


def _with_nan(x, value=np.nan):
    x = np.array(x, dtype=np.float64)
    x.flat[1] = value
    return x


@pytest.fixture
def problem(rng):
    return rng.standard_normal((N, P)), rng.standard_normal(N), rng.standard_normal(P)


SOLVE_CASES = {
    # name: (argument named in the message, function of (A, b, w) -> kwargs for solve)
    "A nan": ("A", lambda A, b, w: dict(A=_with_nan(A))),
    "A inf": ("A", lambda A, b, w: dict(A=_with_nan(A, np.inf))),
    "A -inf": ("A", lambda A, b, w: dict(A=_with_nan(A, -np.inf))),
    "A int": ("A", lambda A, b, w: dict(A=np.ones((N, P), dtype=np.int64))),
    "A bool": ("A", lambda A, b, w: dict(A=np.ones((N, P), dtype=bool))),
    "A complex": ("A", lambda A, b, w: dict(A=A.astype(np.complex128))),
    "A float16": ("A", lambda A, b, w: dict(A=A.astype(np.float16))),
    "A 3-D": ("A", lambda A, b, w: dict(A=A[:, :, None])),
    "A 1-D": ("A", lambda A, b, w: dict(A=A[:, 0])),
    "A no rows": ("A", lambda A, b, w: dict(A=np.empty((0, P)), b=np.empty(0))),
    "A no columns": ("A", lambda A, b, w: dict(A=np.empty((N, 0)), k=0, w_bar=None)),
    "b nan": ("b", lambda A, b, w: dict(b=_with_nan(b))),
    "b inf": ("b", lambda A, b, w: dict(b=_with_nan(b, np.inf))),
    "b short": ("b", lambda A, b, w: dict(b=b[:-1])),
    "b long": ("b", lambda A, b, w: dict(b=np.append(b, 1.0))),
    "b 2-D": ("b", lambda A, b, w: dict(b=np.column_stack([b, b]))),
    "b complex": ("b", lambda A, b, w: dict(b=b + 1j)),
    "b empty": ("b", lambda A, b, w: dict(b=np.empty(0))),
    "w_bar nan": ("w_bar", lambda A, b, w: dict(w_bar=_with_nan(w))),
    "w_bar inf": ("w_bar", lambda A, b, w: dict(w_bar=_with_nan(w, np.inf))),
    "w_bar short": ("w_bar", lambda A, b, w: dict(w_bar=w[:-1])),
    "w_bar long": ("w_bar", lambda A, b, w: dict(w_bar=np.append(w, 1.0))),
    "w_init nan": ("w_init", lambda A, b, w: dict(w_init=_with_nan(w))),
    "w_init short": ("w_init", lambda A, b, w: dict(w_init=w[:-1])),
    "w_init long": ("w_init", lambda A, b, w: dict(w_init=np.append(w, 1.0))),
    "k negative": ("k", lambda A, b, w: dict(k=-1)),
    "k above p": ("k", lambda A, b, w: dict(k=P + 1)),
    "k float": ("k", lambda A, b, w: dict(k=2.0)),
    "k fractional": ("k", lambda A, b, w: dict(k=2.5)),
    "k bool": ("k", lambda A, b, w: dict(k=True)),
    "k string": ("k", lambda A, b, w: dict(k="2")),
    "k None": ("k", lambda A, b, w: dict(k=None)),
    "lam negative": ("lam", lambda A, b, w: dict(lam=-0.1)),
    "lam nan": ("lam", lambda A, b, w: dict(lam=np.nan)),
    "lam inf": ("lam", lambda A, b, w: dict(lam=np.inf)),
    "lam string": ("lam", lambda A, b, w: dict(lam="0.1")),
    "max_iter zero": ("max_iter", lambda A, b, w: dict(max_iter=0)),
    "max_iter float": ("max_iter", lambda A, b, w: dict(max_iter=10.5)),
    "tol negative": ("tol", lambda A, b, w: dict(tol=-1e-3)),
    "tol nan": ("tol", lambda A, b, w: dict(tol=np.nan)),
    "active_set": ("active_set", lambda A, b, w: dict(active_set="sometimes")),
    "swaps": ("swaps", lambda A, b, w: dict(swaps="many")),
}


@pytest.mark.parametrize("case", list(SOLVE_CASES))
def test_solve_rejects_bad_input(problem, case):
    name, change = SOLVE_CASES[case]
    A, b, w = problem
    kwargs = dict(A=A, b=b, k=2, lam=0.1, w_bar=w)
    kwargs.update(change(A, b, w))
    A, b, k = kwargs.pop("A"), kwargs.pop("b"), kwargs.pop("k")
    with pytest.raises(ValueError, match=_arg(name)):
        l0reg.solve(A, b, k, **kwargs)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, bool, np.complex64, np.complex128])
def test_solve_refuses_to_upcast_a_matrix(dtype):
    # A silent copy of a large matrix is refused rather than made.
    with pytest.raises(ValueError, match=_arg("A")):
        l0reg.solve(np.ones((N, P), dtype=dtype), np.ones(N), 2)


def test_objective_rejects_bad_input(problem):
    A, b, w = problem
    with pytest.raises(ValueError, match=_arg("b")):
        l0reg.objective(A, b[:-1], w)
    with pytest.raises(ValueError, match=_arg("A")):
        l0reg.objective(_with_nan(A), b, w)


@pytest.mark.parametrize("ks", [[3, 2], [1, 1], [-1, 2], [2, P + 1], [1.0, 2.0], [1, 2.5], [True], [], "12",
                                [[1, 2]]])
def test_path_rejects_bad_ks(problem, ks):
    A, b, _ = problem
    with pytest.raises(ValueError, match=_arg("ks")):
        l0_path(A, b, ks)


def test_path_rejects_bad_arrays(problem):
    A, b, w = problem
    with pytest.raises(ValueError, match=_arg("A")):
        l0_path(A.astype(np.int64), b, [1, 2])
    with pytest.raises(ValueError, match=_arg("b")):
        l0_path(A, b[:-1], [1, 2])
    with pytest.raises(ValueError, match=_arg("w_bar")):
        l0_path(A, b, [1, 2], w_bar=w[:-1])


ESTIMATOR_PARAM_CASES = [
    ("k", dict(k=-1)),
    ("k", dict(k=2.5)),
    ("k", dict(k=3.0)),
    ("k", dict(k=True)),
    ("k", dict(k="3")),
    ("lam", dict(lam=-1.0)),
    ("lam", dict(lam=np.nan)),
    ("lam", dict(lam=np.inf)),
    ("w_bar", dict(w_bar=np.ones(P - 1))),
    ("w_bar", dict(w_bar=np.ones(P + 1))),
    ("w_bar", dict(w_bar=_with_nan(np.ones(P)))),
    ("w_bar", dict(w_bar=_with_nan(np.ones(P), np.inf))),
    ("w_bar", dict(w_bar=np.ones((P, 2)))),
    ("max_iter", dict(max_iter=0)),
    ("tol", dict(tol=-1.0)),
    ("active_set", dict(active_set="never")),
    ("swaps", dict(swaps="none")),
]


@pytest.mark.parametrize("name, params", ESTIMATOR_PARAM_CASES)
@pytest.mark.parametrize("Estimator", [L0RidgeRegressor, L0RidgeCV])
def test_estimators_reject_bad_parameters(problem, Estimator, name, params):
    X, y, _ = problem
    if Estimator is L0RidgeCV:
        if name == "k":
            params = dict(ks=[params["k"]])
            name = "ks"
        params["cv"] = 2
    with pytest.raises(ValueError, match=_arg(name)):
        Estimator(**params).fit(X, y)


@pytest.mark.parametrize("sample_weight", [np.ones(N - 1), np.ones(N + 1), -np.ones(N), np.zeros(N),
                                           _with_nan(np.ones(N)), _with_nan(np.ones(N), np.inf),
                                           np.ones((N, 2))], ids=["short", "long", "negative", "zeros",
                                                                  "nan", "inf", "2-D"])
def test_regressor_rejects_bad_sample_weight(problem, sample_weight):
    X, y, _ = problem
    with pytest.raises(ValueError, match=_arg("sample_weight")):
        L0RidgeRegressor(k=2).fit(X, y, sample_weight=sample_weight)


# The data checks below come from scikit-learn's validate_data, whose messages
# name the argument for non-finite values and otherwise use its own wording.
DATA_CASES = {
    "X nan": (r"Input X contains NaN", lambda X, y: (_with_nan(X), y)),
    "X inf": (r"Input X contains infinity", lambda X, y: (_with_nan(X, np.inf), y)),
    "y nan": (r"Input y contains NaN", lambda X, y: (X, _with_nan(y))),
    "y inf": (r"Input y contains infinity", lambda X, y: (X, _with_nan(y, np.inf))),
    "y short": (r"inconsistent numbers of samples", lambda X, y: (X, y[:-1])),
    "X empty": (r"0 sample\(s\)", lambda X, y: (X[:0], y[:0])),
    "X no features": (r"0 feature\(s\)", lambda X, y: (X[:, :0], y)),
    "X complex": (r"Complex data not supported", lambda X, y: (X + 1j, y)),
    "X 3-D": (r"dim 3", lambda X, y: (X[:, :, None], y)),
    "y 2-D": (r"y should be a 1d array", lambda X, y: (X, np.column_stack([y, y]))),
}


@pytest.mark.parametrize("case", list(DATA_CASES))
@pytest.mark.parametrize("Estimator", [L0RidgeRegressor, L0RidgeCV])
def test_estimators_reject_bad_data(problem, Estimator, case):
    message, change = DATA_CASES[case]
    X, y = change(*problem[:2])
    with pytest.raises(ValueError, match=message):
        Estimator(cv=2).fit(X, y) if Estimator is L0RidgeCV else Estimator(k=2).fit(X, y)


def test_predict_rejects_wrong_number_of_features(problem):
    X, y, _ = problem
    model = L0RidgeRegressor(k=2).fit(X, y)
    with pytest.raises(ValueError, match="features"):
        model.predict(X[:, :-1])
    with pytest.raises(ValueError, match=r"Input X contains NaN"):
        model.predict(_with_nan(X))
