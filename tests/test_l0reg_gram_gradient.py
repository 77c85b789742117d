"""IHT's gradients from cached Gram columns (small supports): ``Âᵀr = Âᵀb − Σ_{i∈S} (Âᵀâ_i) w_i`` equals the
product with A, columns are fetched only when few are missing or the support has settled, and IHT ends where it
ends with the products."""
import numpy as np
import pytest

from l0reg import TopK
from l0reg._design import Design
from l0reg._iht import _FETCH_MAX, _step_direction, iht, jacobi_scale
from l0reg._local_search import GramColumns, objective_from_residual


def _problem(seed, order, n=60, p=300, k=6):
    rng = np.random.default_rng(seed)
    A = np.asarray(rng.standard_normal((n, p)) * np.exp(rng.standard_normal(p)), order=order)
    w_bar = rng.standard_normal(p)
    b = A @ w_bar + 0.1 * rng.standard_normal(n)
    w = np.zeros(p)
    w[rng.choice(p, k, replace=False)] = rng.standard_normal(k)
    return Design(A, 4.0), b, w, w_bar, 0.3


@pytest.mark.parametrize("order", "CF")
@pytest.mark.parametrize("seed", range(3))
def test_gram_gradient_equals_the_product_with_a(seed, order):
    design, b, w, w_bar, nlam = _problem(seed, order)
    r = b - design.A @ w / 4.0
    inv_diag = jacobi_scale(design, nlam)[1]
    expected, _ = design.step_direction(r, w, w_bar, nlam, inv_diag)
    gram = GramColumns.of(design)
    g, q = _step_direction(design, gram, b, r, w, w_bar, nlam, inv_diag, settled=True)
    assert q is None and set(gram.cache) == set(np.flatnonzero(w))
    np.testing.assert_allclose(g, expected, rtol=1e-10, atol=1e-10 * np.abs(expected).max())


def test_columns_are_fetched_only_when_few_are_missing_or_the_support_settled():
    design, b, w, w_bar, nlam = _problem(0, "C")
    r = b - design.A @ w / 4.0
    inv_diag = jacobi_scale(design, nlam)[1]
    gram = GramColumns.of(design)
    support = np.flatnonzero(w)
    gram.prefetch(support[:support.size - _FETCH_MAX - 1])
    cached = set(gram.cache)
    g, _ = _step_direction(design, gram, b, r, w, w_bar, nlam, inv_diag, settled=False)
    assert set(gram.cache) == cached  # too many missing: the product with A instead
    np.testing.assert_allclose(g, design.step_direction(r, w, w_bar, nlam, inv_diag)[0], rtol=1e-12)
    gram.prefetch(support[:support.size - _FETCH_MAX])
    _step_direction(design, gram, b, r, w, w_bar, nlam, inv_diag, settled=False)
    assert set(gram.cache) == set(support)


@pytest.mark.parametrize("order", "CF")
@pytest.mark.parametrize("seed", range(4))
def test_iht_with_gram_columns_ends_where_it_ends_without(seed, order):
    design, b, _, w_bar, nlam = _problem(seed, order)
    projection = TopK(6).bind(design.p)
    results = []
    for gram in (None, GramColumns.of(design)):
        w0 = np.zeros(design.p)
        value = objective_from_residual(b, w0, w_bar, nlam)
        w, r, value, _, _ = iht(design, projection, b, w0, b.copy(), w_bar, nlam, max_iter=50, tol=1e-10,
                                value=value, history=[], gram=gram)
        np.testing.assert_allclose(r, b - design.A @ w / 4.0, atol=1e-8)
        results.append((np.flatnonzero(w), value))
    assert results[1][0].tolist() == results[0][0].tolist()
    assert results[1][1] == pytest.approx(results[0][1], rel=1e-9)
    assert GramColumns.of(design).cache  # the settled support's columns were fetched
