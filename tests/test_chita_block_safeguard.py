"""Block-mode CHITA's safeguard (step search + magnitude fallback), its data / loss / pattern arguments and its
memory plan (ResNet18 / MobileNetV3-small against magnitude pruning: benchmarks/block_safeguard.py, minutes)."""
import copy
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_chita_scale import ROWS, weights
from torch.utils.data import DataLoader

from chita_nn.methods import _scale_worker
from chita_nn.methods.oneshot import magnitude_prune
from chita_nn.methods.scale import (
    _peak_rss_reset,
    block_prune,
    peak_rss_bytes,
    rss_bytes,
)


def smallest_weights(task):
    """A deliberately bad block solver: keeps the k_B smallest |w̄_j| of the block."""
    w_bar = task["w_bar"]
    keep = np.zeros(w_bar.size, dtype=bool)
    keep[np.argsort(np.abs(w_bar), kind="stable")[:task["k"]]] = True
    return {"w": w_bar * keep, "keep": keep, "seconds": 0.0, "objectives": np.zeros(3)}


def test_bad_solution_falls_back_to_magnitude(digits_mlp, monkeypatch, caplog):
    model, train = digits_mlp
    got, expected = copy.deepcopy(model), copy.deepcopy(model)
    monkeypatch.setattr(_scale_worker, "solve_block", smallest_weights)
    with caplog.at_level(logging.WARNING, logger="chita_nn.methods.safeguard"):
        report = block_prune(got, train, 0.8, block_size=1000, **ROWS).prune
    magnitude_prune(expected, 0.8)
    assert report.fallbacks == 1 and report.stages[0].kept == "magnitude" and np.isnan(report.stages[0].step)
    assert "every stage (1) kept the magnitude solution" in report.fallback_summary
    assert "WARNING" in str(report)
    assert any(r.name == "chita_nn.methods.safeguard" and r.levelno == logging.WARNING for r in caplog.records)
    assert np.array_equal(weights(got), weights(expected))
    assert torch.equal(got.fc1.weight_mask, expected.fc1.weight_mask)


def test_step_search_keeps_a_good_solution(digits_mlp):
    model, train = digits_mlp
    report = block_prune(copy.deepcopy(model), train, 0.8, block_size=1000, **ROWS).prune
    stage = report.stages[0]
    assert report.fallbacks == 0 and stage.kept.startswith("α=") and report.fallback_summary == ""
    assert stage.objective < stage.objective_start  # block-diagonal objectives, summed over the blocks
    assert np.isfinite(stage.train_loss) and 0 < stage.overlap <= 1


def test_dataloader_and_loss_fn_as_prune_takes_them(digits_mlp):
    """A DataLoader holding the data as one batch draws the same rows as (X, y); loss_fn is used."""
    model, train = digits_mlp
    calls = []

    def loss_fn(output, target):
        calls.append(len(target))
        return F.cross_entropy(output, target, reduction="none")

    a, b = copy.deepcopy(model), copy.deepcopy(model)
    block_prune(a, train, 0.8, block_size=1000, line_search=False, **ROWS)
    loader = DataLoader(train, batch_size=len(train))
    report = block_prune(b, loader, 0.8, block_size=1000, line_search=False, loss_fn=loss_fn, **ROWS).prune
    assert calls
    assert np.array_equal(weights(a), weights(b))
    # batches of 100 samples (rows never straddle two) and a batch-mean loss: one forward per row
    c = copy.deepcopy(model)
    report = block_prune(c, DataLoader(train, batch_size=100), 0.8, block_size=1000,
                         loss_fn=lambda out, y: F.cross_entropy(out, y), **ROWS).prune
    assert report.nonzeros == int(np.floor(0.2 * report.numel + 1e-9))


@pytest.mark.parametrize("pattern", ["2:4", "channel"])
def test_pattern_holds_on_every_mask(digits_mlp, pattern):
    model, train = digits_mlp
    got = copy.deepcopy(model)
    sparsity = None if pattern == "2:4" else 0.5
    report = block_prune(got, train, sparsity, pattern=pattern, block_size=None if pattern == "channel" else 250,
                         **ROWS).prune
    assert report.settings["pattern"] == pattern and report.sparsity == pytest.approx(0.5, abs=0.02)
    for name in ("fc1", "fc2", "fc3"):
        mask = getattr(got, name).weight_mask
        if pattern == "2:4":
            assert (mask.reshape(-1, 4).sum(dim=1) <= 2).all()
        else:
            assert torch.all((mask.sum(dim=1) == 0) | (mask.sum(dim=1) == mask.shape[1]))


def test_bad_arguments_name_the_argument_and_leave_the_model(digits_mlp):
    model, train = digits_mlp
    before = copy.deepcopy(model.state_dict())
    for kwargs, match in [(dict(lam=-1.0), "lam"), (dict(line_search=[2.0]), "line_search"),
                          (dict(pattern="3:2"), "pattern"), (dict(pattern="channel", block_size=100), "block_size"),
                          (dict(n_rows=10_000), "n_rows"), (dict(loss_samples=0), "loss_samples")]:
        with pytest.raises(ValueError, match=match):
            block_prune(model, train, 0.8, **{**ROWS, **kwargs})
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def _peak_reset_works():
    """Whether this kernel lets a process reset its peak RSS (VmHWM), which the phases rely on."""
    block = np.ones(32 * 2 ** 20 // 8)  # 32 MiB, freed at once
    del block
    _peak_rss_reset()
    return peak_rss_bytes() < rss_bytes() + 16 * 2 ** 20


def test_memory_plan_within_20_percent_of_measured_peak(digits_mlp):
    """The plan's ``process_bytes`` against the measured peak RSS increase (VmHWM per phase minus the RSS at
    the call's start) on a solve-dominated run: a 300k-weight MLP, 192 rows, one block."""
    from chita_nn.zoo.models import DigitsMLP

    if not _peak_reset_works():
        pytest.skip("the peak RSS counter cannot be reset here (/proc/self/clear_refs)")
    _, train = digits_mlp
    torch.manual_seed(0)
    block_prune(DigitsMLP(hidden=(64, 64)), train, 0.5, n_rows=8)  # compiles the kernels: not part of the peak
    torch.manual_seed(0)
    model = DigitsMLP(hidden=(512, 512))
    report = block_prune(model, train, 0.5, n_rows=192, line_search=False, seed=0,
                         solver_options={"max_iter": 20})  # 6 s instead of 4 minutes; the same memory
    predicted, measured = report.plan.process_bytes, report.peak_rss_increase
    assert measured > 100 * 2 ** 20  # well above the allocator's noise
    assert abs(predicted - measured) <= 0.2 * measured, (predicted / 2 ** 30, measured / 2 ** 30)

