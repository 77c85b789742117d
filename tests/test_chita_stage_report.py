"""StageReport: does the combinatorial solve matter (refit baseline, overlap, kept candidate)."""
import copy
import json
import logging

import numpy as np
import pytest

from chita_nn.methods import oneshot
from chita_nn.methods.oneshot import prune
from chita_nn.zoo.datasets import load_digits_data
from chita_nn.zoo.models import train_digits_mlp

FAST = dict(n_rows=100, samples_per_row=4, lam=1e-3)


@pytest.fixture(scope="module")
def digits():
    train, _ = load_digits_data(seed=0)
    return train_digits_mlp(train, epochs=30, seed=0), train


@pytest.mark.parametrize("block_size", [None, 300])
def test_stages_report_refit_baseline_overlap_and_kept_candidate(digits, block_size, tmp_path):
    model = copy.deepcopy(digits[0])
    report = prune(model, digits[1], 0.9, method="chita++", n_stages=3, hold_stages=1, block_size=block_size,
                   **FAST)
    for stage in report.stages:
        assert np.isfinite(stage.objective_refit)
        assert 0.0 <= stage.overlap <= 1.0
        assert stage.kept == "magnitude" if np.isnan(stage.step) else stage.kept == f"α={stage.step:g}"
        if block_size is None:  # one problem: the solver never ends above its refitted start
            assert stage.objective <= stage.objective_refit * (1 + 1e-6)
    text = str(report)
    assert "obj(refit)" in text and "overlap" in text and report.stages[0].kept in text
    report.to_json(tmp_path / "r.json")
    stage = json.loads((tmp_path / "r.json").read_text())["stages"][0]
    assert {"objective_refit", "overlap", "kept"} <= set(stage)


def test_block_mode_refit_is_the_block_solvers_start(digits, monkeypatch):
    """Batched blocks: the reported refit is F at the blocks' refitted start supports."""
    seen = {}
    real = oneshot.solve_blocks

    def spy(*args, **kwargs):
        seen["solution"] = real(*args, **kwargs)
        return seen["solution"]

    monkeypatch.setattr(oneshot, "solve_blocks", spy)
    report = prune(copy.deepcopy(digits[0]), digits[1], 0.9, method="chita", block_size=300, **FAST)
    solution = seen["solution"]
    assert solution.w_start is not None and np.count_nonzero(solution.w_start) <= report.stages[0].k
    assert report.stages[0].objective_refit > 0


def test_run_that_only_kept_magnitude_warns_once(digits, monkeypatch, caplog):
    real = oneshot.solve_blocks

    def worst(A, w_bar, blocks, budgets, **kwargs):  # the smallest weights: the step search rejects them
        solution = real(A, w_bar, blocks, budgets, **kwargs)
        k = int(solution.keep.sum())
        solution.keep[:] = False
        solution.keep[np.argsort(np.abs(w_bar))[:k]] = True
        return solution

    monkeypatch.setattr(oneshot, "solve_blocks", worst)
    with caplog.at_level(logging.WARNING, logger="chita_nn.methods.safeguard"):
        report = prune(copy.deepcopy(digits[0]), digits[1], 0.9, method="chita++", n_stages=2, hold_stages=0,
                       **FAST)
    assert all(stage.kept == "magnitude" for stage in report.stages)
    messages = [r.getMessage() for r in caplog.records if "magnitude" in r.getMessage()]
    assert len(messages) == 1 and "every stage (2) kept the magnitude solution" in messages[0]
    assert report.fallbacks == 2 and "result is magnitude pruning" in report.fallback_summary
    assert "WARNING magnitude fallback" in str(report) and report.to_dict()["fallbacks"] == 2


def test_single_block_solution_carries_its_objective():
    """The global solve's F at ``w`` comes back with it (the report does not recompute it), equal to
    ``l0reg.objective``; block solutions leave it to the caller (nan)."""
    import l0reg
    from chita_nn.methods.blocks import rhs, solve_blocks

    from chita_nn.methods.blocks import BATCH_MAX_COLUMNS
    p = BATCH_MAX_COLUMNS + 100  # solved by l0reg.solve, not batched
    rng = np.random.default_rng(0)
    A = np.asfortranarray(rng.standard_normal((30, p)).astype(np.float32))
    w = rng.standard_normal(p)
    solution = solve_blocks(A, w, [(0, p, 0)], [400], gradient=0.5, lam=1e-3)
    expected = l0reg.objective(A, rhs(A, w, 0.5), solution.w, lam=1e-3, w_bar=w)
    assert solution.objective == pytest.approx(expected, rel=1e-12)
    assert np.isnan(solve_blocks(A, w, [(0, 100, 0), (100, 200, 0)], [20, 20], lam=1e-3).objective)


def test_block_mode_splits_the_gradient_term_by_fisher_trace(digits, monkeypatch):
    """Each block's ``γ_B = γ‖A_B‖²/‖A‖²``: the block steps add up to one Newton step (they sum to γ)."""
    model, train = digits
    seen = []
    solve = oneshot.solve_blocks

    def spy(A, w, blocks, budgets, *, gradient, **kwargs):
        seen.append((np.asarray(gradient, dtype=float), A.copy(), list(blocks)))
        return solve(A, w, blocks, budgets, gradient=gradient, **kwargs)

    monkeypatch.setattr(oneshot, "solve_blocks", spy)
    prune(copy.deepcopy(model), train, 0.5, method="chita", block_size=500, gradient_term=True,
          samples_per_row=4, n_rows=16)
    gammas, A, blocks = seen[0]
    norms = np.array([(A[:, s:e].astype(np.float64) ** 2).sum() for s, e, _ in blocks])
    assert len(blocks) > 2 and gammas.shape == (len(blocks),)
    np.testing.assert_allclose(gammas, 0.25 * norms / norms.sum(), rtol=1e-6)  # γ = 1/m, m = 4
