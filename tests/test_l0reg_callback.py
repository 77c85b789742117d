"""``l0reg.solve(..., callback=)``: called once per IHT step, counted from 1, on all columns and on a working
set; a non-callable is refused by name."""
import numpy as np
import pytest

import l0reg


def _problem(n, p, seed):
    rng = np.random.default_rng(seed)
    A = np.asfortranarray(rng.standard_normal((n, p)))
    w = np.zeros(p)
    w[rng.choice(p, 20, replace=False)] = rng.standard_normal(20)
    return A, A @ w + 0.1 * rng.standard_normal(n)


@pytest.mark.parametrize("active_set", [False, True])
def test_callback_counts_every_iht_step(active_set):
    A, b = _problem(80, 400, 0)
    steps = []
    result = l0reg.solve(A, b, 20, lam=0.01, swaps=False, active_set=active_set, callback=steps.append)
    assert result.n_iter > 1
    assert steps == list(range(1, result.n_iter + 1))
    plain = l0reg.solve(A, b, 20, lam=0.01, swaps=False, active_set=active_set)
    np.testing.assert_array_equal(plain.coef, result.coef)  # watching changes nothing


def test_callback_must_be_callable():
    A, b = _problem(30, 50, 1)
    with pytest.raises(ValueError, match="callback must be callable"):
        l0reg.solve(A, b, 5, callback=3)
