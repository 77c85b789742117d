"""The ADMM penalty path of the Gram form (``l0reg.admm_supports``, ``l0reg._gram_admm``): feasible supports for
every constraint, the same on numpy and torch, and a start ``solve_gram`` never ends above."""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import l0reg
from l0reg import _gram_admm
from l0reg._gram_admm import admm_masks, select


def layer(r, p, seed=0, n=None):
    rng = np.random.default_rng(seed)
    n = 3 * p if n is None else n
    X = rng.standard_normal((n, p)) @ (np.eye(p) + rng.standard_normal((p, p)) / np.sqrt(p))
    X *= rng.lognormal(0.0, 1.0, size=p)
    return X.T @ X / n, rng.standard_normal((r, p))


def total_objective(H, W_bar, W, lam):
    D = W - W_bar
    return float(np.einsum("ij,ij->", D, 0.5 * (D @ H + lam * D)))


@given(r=st.integers(1, 6), p=st.integers(1, 24), data=st.data())
@settings(max_examples=60, deadline=None)
def test_select_keeps_exactly_the_budget(r, p, data):
    seed = data.draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    # few distinct values: many ties, which go to the lowest index
    score = rng.integers(0, 3, size=(r, p)).astype(np.float64)
    k = data.draw(st.integers(0, p))
    ks = rng.integers(0, p + 1, size=r)
    total = data.draw(st.integers(0, r * p))
    m = data.draw(st.integers(1, 5))
    n = data.draw(st.integers(0, m))
    assert (select(score, k, 0, 0, None).sum(axis=1) == k).all()
    assert (select(score, ks, 0, 0, None).sum(axis=1) == ks).all()
    assert select(score, None, 0, 0, total).sum() == total
    nm = select(score, None, n, m, None)
    for lo in range(0, p, m):
        assert (nm[:, lo:lo + m].sum(axis=1) == min(n, min(lo + m, p) - lo)).all()
    # the kept entries are the largest: nothing outside beats anything inside, in every row
    mask = select(score, k, 0, 0, None)
    for i in range(r):
        if 0 < k < p:
            assert score[i][mask[i]].min() >= score[i][~mask[i]].max()
            first_out = np.flatnonzero(~mask[i] & (score[i] == score[i][mask[i]].min()))
            first_in = np.flatnonzero(mask[i] & (score[i] == score[i][mask[i]].min()))
            assert first_out.size == 0 or first_in.max() < first_out.min()  # ties to the lowest index


@pytest.mark.parametrize("constraint", [dict(k=7), dict(k=np.array([0, 3, 7, 20])), dict(k=40, budget="layer"),
                                        dict(projection="2:4"), dict(projection=(1, 3))])
def test_admm_supports_satisfy_the_constraint_exactly(constraint):
    H, W = layer(4, 20)
    mask = l0reg.admm_supports(H, W, lam=0.01, **constraint)
    assert mask.dtype == bool and mask.shape == W.shape
    if "projection" in constraint:
        n, m = (2, 4) if constraint["projection"] == "2:4" else constraint["projection"]
        for lo in range(0, 20, m):
            assert (mask[:, lo:lo + m].sum(axis=1) == min(n, min(lo + m, 20) - lo)).all()
    elif constraint.get("budget") == "layer":
        assert mask.sum() == 40
    else:
        assert (mask.sum(axis=1) == constraint["k"]).all()


def test_admm_start_is_refitted_and_never_worse_than_the_result():
    H, W = layer(6, 16, seed=3)
    lam = 0.05
    mask = l0reg.admm_supports(H, W, lam=lam, k=5)
    from_mask = l0reg.solve_gram(H, W, k=5, lam=lam, start=mask)
    from_string = l0reg.solve_gram(H, W, k=5, lam=lam, start="admm")
    np.testing.assert_array_equal(from_mask.coef, from_string.coef)
    assert (from_string.objective <= from_string.objective_start + 1e-12).all()
    # the start reported is the refit of the ADMM supports
    refit = l0reg.solve_gram(H, W, k=5, lam=lam, start=mask, max_iter=1, swaps=False, rounds=1)
    assert np.all(refit.objective_start == from_mask.objective_start)


def test_admm_supports_against_enumeration():
    """80 small rows (p = 10, k = 4: 210 supports each): the path alone ends on the optimal support of 47 (a
    random support would hit about 0.4); refitted and polished by solve_gram, 79."""
    alone = polished = rows = 0
    for seed in range(20):
        H, W = layer(4, 10, seed=seed)
        lam = 0.01
        mask = l0reg.admm_supports(H, W, lam=lam, k=4)
        result = l0reg.solve_gram(H, W, k=4, lam=lam, start=mask)
        for i in range(W.shape[0]):
            best = min(total_objective(H, W[i:i + 1], _refit(H, W[i], lam, support)[None], lam)
                       for support in itertools.combinations(range(10), 4))
            optimal = _refit(H, W[i], lam, np.flatnonzero(mask[i]))
            rows += 1
            alone += total_objective(H, W[i:i + 1], optimal[None], lam) <= best * (1 + 1e-9) + 1e-12
            polished += result.objective[i] <= best * (1 + 1e-9) + 1e-12
    assert alone >= 0.5 * rows and polished >= 0.95 * rows, (alone, polished, rows)


def _refit(H, w_bar, lam, support):
    S = list(support)
    K = H[np.ix_(S, S)] + lam * np.eye(len(S))
    w = np.zeros_like(w_bar)
    w[S] = np.linalg.solve(K, (H @ w_bar + lam * w_bar)[S])
    return w


def test_layer_budget_moves_nonzeros_between_rows():
    """One selection over the whole layer: rows that matter more get more of the budget."""
    H, W = layer(4, 30, seed=1)
    W[0] *= 10.0
    mask = l0reg.admm_supports(H, W, lam=0.01, k=40, budget="layer")
    assert mask.sum() == 40 and mask[0].sum() > 10


def test_eigendecomposition_shared_gives_the_same_supports():
    H, W = layer(5, 24, seed=2)
    eig = l0reg.gram_eigh(H, 0.02)
    np.testing.assert_array_equal(l0reg.admm_supports(H, W, lam=0.02, k=6, eig=eig),
                                  l0reg.admm_supports(H, W, lam=0.02, k=6))
    with pytest.raises(ValueError, match="eig must be gram_eigh"):
        l0reg.admm_supports(H, W, lam=0.03, k=6, eig=eig)


@pytest.mark.parametrize("rows", [4, 40])
def test_formed_inverse_and_eigenbasis_steps_agree(rows, monkeypatch):
    """The W step through the formed inverse (chosen when 3r ≥ p) and through two products with Q: the same
    path in float64 (same supports, same number of steps)."""
    assert _gram_admm._explicit_inverse(8, 24) and not _gram_admm._explicit_inverse(7, 24)
    H, W = layer(rows, 24, seed=5)
    runs = []
    for explicit in (True, False):
        monkeypatch.setattr(_gram_admm, "_explicit_inverse", lambda r, p, explicit=explicit: explicit)
        runs.append(admm_masks(H, W, lam=0.02, ks=8, dtype=np.float64))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]


def test_torch_tensors_give_the_numpy_supports():
    torch = pytest.importorskip("torch")
    H, W = layer(6, 32, seed=4)
    for constraint in (dict(k=9), dict(k=60, budget="layer"), dict(projection="2:4")):
        expected = l0reg.admm_supports(H, W, lam=0.01, **constraint)
        got = l0reg.admm_supports(torch.from_numpy(H), torch.from_numpy(W), lam=0.01, **constraint)
        assert isinstance(got, torch.Tensor) and got.dtype == torch.bool
        # float32 steps: the same supports up to an entry or two on near-ties
        assert (got.numpy() != expected).sum() <= 2
        assert got.sum() == expected.sum()


@pytest.mark.parametrize("change, match", [
    (dict(H=np.full((4, 4), np.nan)), "H contains NaN"),
    (dict(H=np.eye(3)), r"W_bar must have shape \(rows, 3\)"),
    (dict(H=np.ones((4, 3))), "H must be square"),
    (dict(lam=-1.0), "lam"),
    (dict(k=9), "k"),
    (dict(k=None), "k is required"),
    (dict(max_iter=0), "max_iter"),
    (dict(C=np.ones((3, 4))), "C must have the shape of W_bar"),
])
def test_bad_input_is_named(change, match):
    H, W = layer(2, 4)
    args = dict(H=H, W_bar=W, k=2, lam=0.0) | change
    with pytest.raises((ValueError, TypeError), match=match):
        l0reg.admm_supports(args.pop("H"), args.pop("W_bar"), **args)
