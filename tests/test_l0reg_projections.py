"""Structured sparsity patterns (N:M, groups) as projections, and the solver under them.

F(w) = ½‖b − A w‖² + (nλ/2)‖w − w̄‖²  subject to  w in the pattern; checked against
enumeration of every maximal feasible support, plus properties of the projections.
"""
import functools
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import l0reg
from l0reg import NM, Groups, TopK, projection_mask, solve_on_support
from l0reg._design import Design
from l0reg._iht import iht
from l0reg._local_search import objective_from_residual
from l0reg.testing import design_matrix

REQUIRED_RATE = 0.95
GLOBAL_RTOL = 1e-6
UNEQUAL_LABELS = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
# (name, projection, p)
PATTERNS = [
    ("nm_2_4", NM(2, 4), 8),
    ("nm_1_4", NM(1, 4), 8),
    ("nm_2_4_p12", NM(2, 4), 12),
    ("nm_3_4_p12", NM(3, 4), 12),
    ("groups_4x3_k2", Groups(3, 2), 12),
    ("groups_unequal_k2", Groups(UNEQUAL_LABELS, 2), 10),
    ("groups_6x2_k3", Groups(2, 3), 12),
]
DESIGNS = ("gaussian", "toeplitz", "equicorrelated")
GRID = list(itertools.product(range(len(PATTERNS)), DESIGNS, (0.0, 0.05), ("zero", "random"), (0, 1)))


def _instance(pattern, design, lam, w_bar_kind, seed):
    _, projection, p = PATTERNS[pattern]
    rng = np.random.default_rng(1000 * pattern + seed + 17 * DESIGNS.index(design))
    n = 15 if seed == 0 else 40
    A = design_matrix(design, n, p, rng)
    w_true = rng.standard_normal(p) * (rng.random(p) < 0.5)
    b = A @ w_true + 0.5 * rng.standard_normal(n)
    w_bar = None if w_bar_kind == "zero" else rng.standard_normal(p)
    return A, b, lam, w_bar, projection


@functools.lru_cache(maxsize=None)
def _maximal_supports(pattern):
    """Every feasible support to which no coordinate can be added (by the pattern's own
    feasibility test on indicator vectors, independent of its projection)."""
    _, projection, p = PATTERNS[pattern]
    bound = projection.bind(p)
    feasible = set()
    for mask in itertools.product((0.0, 1.0), repeat=p):
        if bound.is_feasible(np.array(mask)):
            feasible.add(mask)
    maximal = []
    for mask in feasible:
        grown = (mask[:j] + (1.0,) + mask[j + 1:] for j in range(p) if not mask[j])
        if not any(g in feasible for g in grown):
            maximal.append(np.flatnonzero(mask))
    return maximal


def test_enumeration_counts():
    counts = {PATTERNS[i][0]: len(_maximal_supports(i)) for i in range(len(PATTERNS))}
    assert counts["nm_2_4"] == 36 and counts["nm_1_4"] == 16 and counts["nm_2_4_p12"] == 216
    assert counts["groups_4x3_k2"] == 6 and counts["groups_unequal_k2"] == 6 and counts["groups_6x2_k3"] == 20


@pytest.fixture(scope="module")
def grid_outcomes():
    outcomes = []
    for params in GRID:
        A, b, lam, w_bar, projection = _instance(*params)
        result = l0reg.solve(A, b, projection=projection, lam=lam, w_bar=w_bar)
        exact = min(solve_on_support(A, b, s, lam, w_bar)[1] for s in _maximal_supports(params[0]))
        outcomes.append(dict(params=params, result=result, exact=exact,
                             feasible=projection.bind(A.shape[1]).is_feasible(result.coef)))
    return outcomes


def test_solver_reaches_enumerated_optimum(grid_outcomes):
    misses = [o for o in grid_outcomes if o["result"].objective > o["exact"] * (1 + GLOBAL_RTOL)]
    rate = 1 - len(misses) / len(grid_outcomes)
    detail = "; ".join(f"{o['params']}: {o['result'].objective:.10g} vs {o['exact']:.10g}" for o in misses[:10])
    assert rate >= REQUIRED_RATE, f"optimum on {rate:.1%} of {len(grid_outcomes)} instances; misses: {detail}"


def test_solver_never_beats_enumeration(grid_outcomes):
    below = [o["params"] for o in grid_outcomes if o["result"].objective < o["exact"] * (1 - 1e-9)]
    assert not below, f"solve beat the enumeration of maximal feasible supports on {below}"


def test_solver_returns_feasible_points_and_monotone_history(grid_outcomes):
    assert all(o["feasible"] for o in grid_outcomes)
    for o in grid_outcomes:
        history = np.asarray(o["result"].history)
        assert (np.diff(history) <= 1e-9 * max(1.0, abs(history[0]))).all(), o["params"]


@pytest.mark.parametrize("projection", [NM(1, 4), NM(2, 8), Groups(10, 3), Groups(5, 4)], ids=repr)
@pytest.mark.parametrize("active_set", [True, False])
def test_larger_problems_stay_feasible(projection, active_set):
    rng = np.random.default_rng(5)
    A = np.asfortranarray(rng.standard_normal((60, 200)))
    b = A @ (rng.standard_normal(200) * (rng.random(200) < 0.2)) + 0.1 * rng.standard_normal(60)
    result = l0reg.solve(A, b, projection=projection, lam=1e-3, active_set=active_set, max_iter=50)
    bound = projection.bind(200)
    assert bound.is_feasible(result.coef)
    assert result.objective <= l0reg.objective(A, b, np.zeros(200), 1e-3) + 1e-9
    assert np.all(np.diff(result.history) <= 1e-9 * result.history[0])


def test_iht_history_never_increases_and_iterates_stay_feasible():
    rng = np.random.default_rng(3)
    A = rng.standard_normal((30, 24))
    b = rng.standard_normal(30)
    for projection in (NM(2, 4).bind(24), Groups(4, 2).bind(24)):
        design = Design(A)
        w = np.zeros(24)
        w[projection.support(A.T @ b)] = 0.01
        r = b - A @ w
        history = [objective_from_residual(r, w, np.zeros(24), 0.3)]
        w, r, value, _, _ = iht(design, projection, b, w, r, np.zeros(24), 0.3, max_iter=40, tol=0.0,
                                value=history[0], history=history)
        assert projection.is_feasible(w)
        assert np.all(np.diff(history) <= 0.0)
        assert value == pytest.approx(objective_from_residual(b - A @ w, w, np.zeros(24), 0.3), rel=1e-10)


# ---------------------------------------------------------------------------- projection properties
def _projected(projection, v):
    out = np.zeros_like(v)
    keep = projection.support(v)
    out[keep] = v[keep]
    return out


PROPERTY_PATTERNS = [(NM(2, 4), 16), (NM(1, 3), 12), (NM(3, 8), 24), (NM(4, 4), 8), (NM(0, 2), 6),
                     (Groups(4, 2), 16), (Groups(3, 1), 12), (Groups(np.arange(15) % 4, 3), 15)]
pattern_index = st.integers(0, len(PROPERTY_PATTERNS) - 1)
seeds = st.integers(0, 2 ** 32 - 1)


def _bound(index):
    projection, p = PROPERTY_PATTERNS[index]
    return projection.bind(p), p


@settings(max_examples=200, deadline=None)
@given(pattern_index, st.data())
def test_projection_is_feasible_idempotent_and_nearest(index, data):
    projection, p = _bound(index)
    v = np.array(data.draw(st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=p, max_size=p)))
    pv = _projected(projection, v)
    assert projection.is_feasible(pv)
    np.testing.assert_array_equal(_projected(projection, pv), pv)
    rng = np.random.default_rng(data.draw(seeds))
    for _ in range(5):
        u = _projected(projection, rng.standard_normal(p)) * rng.uniform(-3, 3, size=p)
        u[rng.random(p) < 0.3] = 0.0
        assert projection.is_feasible(u)
        assert np.linalg.norm(v - pv) <= np.linalg.norm(v - u) * (1 + 1e-12) + 1e-12


@settings(max_examples=150, deadline=None)
@given(pattern_index, seeds, st.booleans())
def test_path_events_are_the_breakpoints(index, seed, sparse_start):
    projection, p = _bound(index)
    rng = np.random.default_rng(seed)
    w = _projected(projection, rng.standard_normal(p))
    if sparse_start:
        w[rng.random(p) < 0.5] = 0.0
    g = rng.standard_normal(p)
    support = projection.start_support(w, g)
    np.testing.assert_array_equal(support, projection.support_on_line(w, g, 1e-9))
    taus, leaving, entering = projection.path_events(w, g, support, 6)
    assert np.all(np.diff(taus) > 0) and np.all(taus > 0) and taus.size <= 6
    current = set(support.tolist())
    bounds = np.concatenate([[0.0], taus])
    for t in range(taus.size):
        middle = 0.5 * (bounds[t] + bounds[t + 1])
        assert set(projection.support_on_line(w, g, middle).tolist()) == current, "change between events"
        out, into = set(np.atleast_1d(leaving[t]).tolist()), set(np.atleast_1d(entering[t]).tolist())
        assert out <= current and not into & current
        current = (current - out) | into
        after = taus[t] * (1 + 1e-9) if t + 1 == taus.size else 0.5 * (taus[t] + taus[t + 1])
        assert set(projection.support_on_line(w, g, after).tolist()) == current, "no change at the event"
    if taus.size < 6:  # no breakpoint left: the support stays to infinity
        assert set(projection.support_on_line(w, g, 1e6 * max(1.0, bounds[-1])).tolist()) == current


def test_line_search_is_exact_on_group_pieces():
    """Along the path, the line search value is the best over the visited supports' quadratics."""
    from l0reg._linesearch import line_search
    rng = np.random.default_rng(11)
    A = rng.standard_normal((20, 12))
    b = rng.standard_normal(20)
    projection = Groups(3, 2).bind(12)
    w = _projected(projection, rng.standard_normal(12))
    g = -(A.T @ (b - A @ w))
    value, tau, support, r_new, _ = line_search(Design(A), projection, b - A @ w, w, g, np.zeros(12), 0.0,
                                             np.ones(12))
    w_new = np.zeros(12)
    w_new[support] = w[support] - tau * g[support]
    assert projection.is_feasible(w_new)
    np.testing.assert_allclose(r_new, b - A @ w_new, atol=1e-10)
    assert value <= 0.5 * np.sum((b - A @ w) ** 2) + 1e-12
    grid = np.linspace(0, 5 * max(tau, 1e-3), 400)
    sampled = [0.5 * np.sum((b - A @ _projected(projection, w - t * g)) ** 2) for t in grid]
    assert value <= min(sampled) + 1e-9


# ---------------------------------------------------------------------------- API
def test_projection_mask_and_multi_segment_layout():
    w = np.array([0.1, -3.0, 2.0, 0.5, 4.0, 0.0, -1.0, 1.5])
    np.testing.assert_array_equal(projection_mask(NM(2, 4), np.abs(w)),
                                  [False, True, True, False, True, False, False, True])
    np.testing.assert_array_equal(projection_mask(TopK(3), np.abs(w)), np.abs(w) >= 2.0)
    np.testing.assert_array_equal(projection_mask(Groups(4, 1), np.abs(w)), [False] * 4 + [True] * 4)
    # Two layers of 8 and 12 weights concatenated: the same NM on the whole vector.
    rng = np.random.default_rng(0)
    layers = [rng.standard_normal(8), rng.standard_normal(12)]
    whole = projection_mask(NM(2, 4), np.abs(np.concatenate(layers)))
    np.testing.assert_array_equal(whole, np.concatenate([projection_mask(NM(2, 4), np.abs(x)) for x in layers]))


def test_k_is_implied_by_the_projection():
    rng = np.random.default_rng(1)
    A, b = rng.standard_normal((20, 8)), rng.standard_normal(20)
    assert np.count_nonzero(l0reg.solve(A, b, 4, projection=NM(2, 4)).coef) <= 4
    with pytest.raises(ValueError, match=r"k=3 but NM\(n=2, m=4\) keeps 4 of 8"):
        l0reg.solve(A, b, 3, projection=NM(2, 4))
    with pytest.raises(ValueError, match="give k or a projection"):
        l0reg.solve(A, b)
    assert NM(2, 4).bind(8).size == 4 and Groups(UNEQUAL_LABELS, 2).bind(10).size == 7


def test_swaps_skip_projections_without_swap_moves():
    class NoSwaps(NM):
        n_swap_moves = 0

    rng = np.random.default_rng(2)
    A, b = rng.standard_normal((20, 8)), rng.standard_normal(20)
    result = l0reg.solve(A, b, projection=NoSwaps(2, 4))
    assert NM(2, 4).bind(8).is_feasible(result.coef)
    with pytest.raises(ValueError, match="has no swap move"):
        l0reg.solve(A, b, projection=NoSwaps(2, 4), swaps=True)


@pytest.mark.parametrize("make, match", [
    (lambda: NM(3, 2), "n must be at most m"),
    (lambda: NM(-1, 4), "n must be a non-negative integer"),
    (lambda: NM(2, 0), "m must be a positive integer"),
    (lambda: NM(2.0, 4), "n must be a non-negative integer"),
    (lambda: NM(2, "4"), "m must be a positive integer"),
    (lambda: NM(2, 4).bind(10), r"multiple of m=4, got 10 coordinates"),
    (lambda: NM(2, 4).size, "not bound"),
    (lambda: NM(2, 4).bind(8).is_feasible(np.zeros(6)), "length 8"),
    (lambda: NM(2, 4).bind(8).restrict(np.array([0, 1, 2, 3, 4])), "whole groups"),
    (lambda: Groups(3, 5).bind(12), r"k_groups must be at most the number of groups \(4\)"),
    (lambda: Groups(0, 1), "groups must be a positive integer"),
    (lambda: Groups(3, -1), "k_groups must be a non-negative integer"),
    (lambda: Groups(5, 1).bind(12), "multiple of 5"),
    (lambda: Groups(np.arange(5), 1).bind(12), "one label per coordinate"),
    (lambda: Groups(np.linspace(0, 1, 12), 1).bind(12), "integer labels"),
    (lambda: Groups(3, 2).bind(12).restrict(np.array([0, 1])), "whole groups"),
])
def test_bad_input(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_restrict_and_expand_on_whole_groups():
    nm = NM(2, 4).bind(16)
    np.testing.assert_array_equal(nm.expand(np.array([1, 9])), [0, 1, 2, 3, 8, 9, 10, 11])
    assert nm.restrict(nm.expand(np.array([1, 9]))).size == 4
    groups = Groups(np.array([2, 0, 2, 1, 0, 1]), 2).bind(6)
    np.testing.assert_array_equal(groups.expand(np.array([0])), [0, 2])
    sub = groups.restrict(np.array([0, 2, 3, 5]))
    assert sub.k_groups == 2 and sub.size == 4
    assert TopK(5).restrict(np.arange(3)).size == 3


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-3, 3), min_size=1, max_size=40), st.integers(0, 45), st.booleans())
def test_largest_ranked_and_as_a_set(values, m, with_exclude):
    """The m largest (ties by lowest index, excluded entries never), ranked or as a sorted set: the same set."""
    from l0reg.projection import largest
    score = np.array(values, dtype=float)
    exclude = (np.arange(score.size) % 3 == 0) if with_exclude else None
    allowed = np.flatnonzero(~exclude) if with_exclude else np.arange(score.size)
    expected = sorted(allowed, key=lambda j: (-score[j], j))[:m]  # stable ranking by hand
    np.testing.assert_array_equal(largest(score, m, exclude), expected)
    np.testing.assert_array_equal(largest(score, m, exclude, ranked=False), np.sort(expected).astype(int))
