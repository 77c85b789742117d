"""The Gram solver's kernels written out to compile faster: the quickselect of the top-k supports and the exact
refit's least-squares fallback (outside Numba) give what ``np.partition`` and ``np.linalg.lstsq`` gave."""
import numpy as np
import pytest

from l0reg._gram_refit import exact_refit_rows
from l0reg._gram_supports import kth_largest, topk_into


@pytest.mark.parametrize("ties", [False, True])
def test_kth_largest_is_the_sorted_entry(ties):
    rng = np.random.default_rng(3)
    for _ in range(500):
        p = int(rng.integers(1, 50))
        score = rng.integers(0, 4, p).astype(float) if ties else rng.standard_normal(p)
        for k in (1, int(rng.integers(1, p + 1)), p):
            assert kth_largest(score, k) == np.sort(score)[::-1][k - 1]


def test_kth_largest_leaves_its_input_alone():
    score = np.array([3.0, 1.0, 2.0, 5.0, 4.0])
    assert kth_largest(score, 2) == 4.0
    np.testing.assert_array_equal(score, [3.0, 1.0, 2.0, 5.0, 4.0])


def test_topk_keeps_the_largest_with_ties_to_the_lowest_index():
    score = np.array([1.0, 3.0, 2.0, 3.0, 2.0, 0.5])
    mask = np.zeros(6, dtype=bool)
    topk_into(score, 3, mask)
    np.testing.assert_array_equal(mask, [False, True, True, True, False, False])


def test_rank_deficient_rows_get_the_minimum_norm_refit():
    """λ = 0 and supports larger than rank H: the Cholesky refit fails on those rows, which get the
    minimum-norm least-squares solution (pinv); the other rows keep their Cholesky refit."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3, 8))
    H = X.T @ X  # rank 3
    Wbar = rng.standard_normal((3, 8))
    masks = np.zeros((3, 8), dtype=bool)
    masks[0, :6] = True  # 6 > rank: singular
    masks[1, [1, 4]] = True  # 2 <= rank: positive definite
    out = exact_refit_rows(H, Wbar @ H, Wbar, 0.0, masks)
    for t in range(3):
        S = np.flatnonzero(masks[t])
        expected = np.linalg.pinv(H[np.ix_(S, S)]) @ (Wbar[t] @ H)[S] if S.size else []
        np.testing.assert_allclose(out[t, S], expected, rtol=1e-8, atol=1e-10)
        assert (out[t, ~masks[t]] == 0).all()
