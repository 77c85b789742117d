"""Tests of chita_nn's pruning layer: schedules, write-back and masks, CHITA vs MP, blocks, validation."""
import copy
import json
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune as tprune

import l0reg
from chita_nn.core import writeback
from chita_nn.core.fisher import empirical_fisher
from chita_nn.core.params import ParamLayout, select_parameters
from chita_nn.core.report import PruneReport
from chita_nn.core.runtime import evaluate
from chita_nn.methods import oneshot as pruning
from chita_nn.methods.blocks import gradient_weight, make_blocks, rhs
from chita_nn.methods.oneshot import magnitude_prune, prune
from chita_nn.methods.recipe_types import CHITA, CHITAPlusPlus, Magnitude
from chita_nn.methods.schedules import sparsity_schedule
from chita_nn.zoo.datasets import load_digits_data
from chita_nn.zoo.models import train_digits_mlp

FAST = dict(n_rows=100, samples_per_row=4, lam=1e-3)


@pytest.fixture(scope="module")
def digits():
    train, test = load_digits_data(seed=0)
    return train_digits_mlp(train, epochs=30, seed=0), train, test


@pytest.fixture
def model(digits):
    return copy.deepcopy(digits[0])


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_state(before, model):
    after = model.state_dict()
    assert list(before) == list(after)
    for key in before:
        assert torch.equal(before[key], after[key]), key


def kept(model):
    return sum(int(m.weight_mask.sum()) for m in model.modules() if hasattr(m, "weight_mask"))


# ---------------------------------------------------------------- schedules

@pytest.mark.parametrize("kind", ["exponential", "linear", "cubic"])
def test_schedule_ends_at_target_and_increases(kind):
    s = sparsity_schedule(0.98, 10, kind, start=0.1)
    assert s[-1] == 0.98 and len(s) == 10
    assert all(a < b for a, b in zip([0.1] + s, s))


def test_exponential_schedule_keeps_geometric_fraction():
    kept_fraction = 1 - np.array(sparsity_schedule(0.99, 4))
    ratios = kept_fraction[1:] / kept_fraction[:-1]
    assert np.allclose(ratios, ratios[0]) and np.isclose(kept_fraction[0], 0.01 ** 0.25)


@pytest.mark.parametrize("kwargs, name", [
    (dict(target=1.0, n_stages=3), "target"), (dict(target=0.5, n_stages=0), "n_stages"),
    (dict(target=0.5, n_stages=3, kind="log"), "kind"), (dict(target=0.5, n_stages=3, start=0.6), "target"),
    (dict(target=0.5, n_stages=2.5), "n_stages"), (dict(target=0.5, n_stages=3, start=-0.1), "start")])
def test_schedule_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        sparsity_schedule(**kwargs)


# ---------------------------------------------------------------- write-back, masks, save/load

def test_magnitude_prune_masks_are_standard_and_exact(model):
    p = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    w = ParamLayout(select_parameters(model)).gather()
    report = magnitude_prune(model, 0.9)
    k = math.floor(0.1 * p)
    assert kept(model) == k == report.nonzeros
    assert abs(report.sparsity - (1 - k / p)) < 1e-12
    threshold = np.sort(np.abs(w))[-k]
    for module in (model.fc1, model.fc2, model.fc3):
        assert hasattr(module, "weight_orig") and hasattr(module, "weight_mask")
        assert torch.all(module.weight_orig.abs()[module.weight_mask.bool()] >= threshold)
        tprune.remove(module, "weight")
        assert not hasattr(module, "weight_orig")
    assert sum(int((m.weight != 0).sum()) for m in (model.fc1, model.fc2, model.fc3)) == k


def test_plain_write_back_zeroes_weights(model):
    magnitude_prune(model, 0.5, mask=False)
    assert not any(hasattr(m, "weight_mask") for m in model.modules())
    p = sum(m.weight.numel() for m in (model.fc1, model.fc2, model.fc3))
    assert sum(int((m.weight != 0).sum()) for m in (model.fc1, model.fc2, model.fc3)) == p - p // 2


def test_repruning_updates_masks_in_place(model, digits):
    train = digits[1]
    prune(model, train, 0.5, method="chita", **FAST)
    report = prune(model, train, 0.8, method="chita++", n_stages=2, **FAST)
    p = report.numel
    assert kept(model) == math.floor(0.2 * p + 1e-9)
    for module in (model.fc1, model.fc2, model.fc3):
        assert not hasattr(module, "weight_orig_orig")
        assert sum(isinstance(h, tprune.BasePruningMethod) for h in module._forward_pre_hooks.values()) == 1
        assert torch.equal(module.weight, module.weight_orig * module.weight_mask)
    assert report.stages[0].sparsity > 0.5  # the schedule starts from the current sparsity


def test_save_load_round_trip(model, digits, tmp_path):
    report = prune(model, digits[1], 0.7, method="chita", **FAST)
    path = tmp_path / "pruned.pt"
    writeback.save_pruned(model, path, report)
    fresh = copy.deepcopy(digits[0])
    loaded = writeback.load_pruned(fresh, path)
    assert loaded["method"] == "chita" and loaded["sparsity"] == report.sparsity
    assert_same_state(state(model), fresh)
    x = digits[2].tensors[0][:50]
    assert torch.equal(model(x), fresh(x))


def test_write_back_failure_restores_model(model, digits, monkeypatch):
    before = state(model)
    calls = []
    real = tprune.custom_from_mask

    def flaky(module, name, mask):
        calls.append(name)
        if len(calls) == 2:
            raise RuntimeError("forced failure")
        return real(module, name, mask)

    monkeypatch.setattr(writeback.prune, "custom_from_mask", flaky)
    with pytest.raises(RuntimeError, match="forced"):
        prune(model, digits[1], 0.9, method="chita", **FAST)
    assert len(calls) == 2
    assert not any(writeback.is_reparametrized(m) for m in model.modules())
    assert_same_state(before, model)


# ---------------------------------------------------------------- CHITA vs MP, blocks, scope

@pytest.fixture(scope="module")
def results_90(digits):
    """Objective (at the dense centre, one shared A) and held-out loss for MP, CHITA and CHITA++ at 90%."""
    model, train, test = digits
    params = select_parameters(model)
    w_bar = ParamLayout(params).gather()
    fisher = empirical_fisher(model, params, train, n_rows=200, samples_per_row=4, seed=123)
    b = rhs(fisher.A, w_bar, gradient_weight(pruning.DEFAULTS["gradient_term"], 4))
    out = {}
    rows = dict(n_rows=200, samples_per_row=4)
    for method, recipe in (("magnitude", Magnitude(sparsity=0.9)), ("chita", CHITA(sparsity=0.9, **rows)),
                           ("chita++", CHITAPlusPlus(sparsity=0.9, n_stages=4, hold_stages=1, **rows))):
        pruned = copy.deepcopy(model)
        report = prune(pruned, train, recipe)
        w = ParamLayout(select_parameters(pruned)).gather()
        out[method] = dict(objective=l0reg.objective(fisher.A, b, w, lam=pruning.DEFAULTS["lam"], w_bar=w_bar),
                           report=report, **evaluate(pruned, test))
    return out


def test_chita_beats_magnitude_at_90(results_90):
    mp, chita = results_90["magnitude"], results_90["chita"]
    assert chita["objective"] < mp["objective"]
    assert chita["report"].objective_final < chita["report"].objective_start
    assert chita["loss"] < mp["loss"]


def test_gradient_term_is_the_first_order_term_of_the_loss_model(digits):
    """F(w) − F(w̄) = ½‖A d‖² + (n/m) gᵀd with g the mean gradient (= Aᵀe/n) and d = w − w̄."""
    model, train, _ = digits
    params = select_parameters(model)
    w_bar = ParamLayout(params).gather().astype(np.float64)
    A = empirical_fisher(model, params, train, n_rows=50, samples_per_row=8, seed=3).A.astype(np.float64)
    d = np.random.default_rng(0).standard_normal(w_bar.size) * 1e-2
    b = rhs(A, w_bar, gradient_weight(True, 8))
    change = l0reg.objective(A, b, w_bar + d) - l0reg.objective(A, b, w_bar)
    g = A.mean(axis=0)
    assert change == pytest.approx(0.5 * np.sum((A @ d) ** 2) + 50 / 8 * g @ d, rel=1e-9)
    assert rhs(A, w_bar, gradient_weight(False, 8)) == pytest.approx(A @ w_bar)


def test_hold_stages_stay_at_the_target(model, digits):
    report = prune(model, digits[1], 0.8, method="chita++", n_stages=4, hold_stages=2, **FAST)
    sparsities = [stage.sparsity for stage in report.stages]
    assert len(sparsities) == 4 and sparsities[0] < sparsities[1] == sparsities[2] == sparsities[3] == 0.8
    assert report.settings["hold_stages"] == 2 and report.nonzeros == kept(model)
    # default: n_stages // 5 with the gradient term, none without it (such a stage would keep w̄)
    assert prune(copy.deepcopy(model), digits[1], 0.9, n_stages=5, **FAST).settings["hold_stages"] == 1
    plain = prune(copy.deepcopy(model), digits[1], 0.9, n_stages=5, gradient_term=False, **FAST)
    assert plain.settings["hold_stages"] == 0 and len({stage.sparsity for stage in plain.stages}) == 5


def test_chita_plus_plus_at_least_as_good_as_chita(results_90):
    assert results_90["chita++"]["loss"] <= results_90["chita"]["loss"]
    assert results_90["chita++"]["accuracy"] >= results_90["chita"]["accuracy"]


def test_single_block_equals_global_solve(digits):
    model, train, _ = digits
    results = []
    for block_size in (None, 10 ** 6, "layer"):
        pruned = copy.deepcopy(model)
        prune(pruned, train, 0.8, method="chita", targets=["fc2.weight"], block_size=block_size, **FAST)
        results.append(pruned.fc2.weight.detach().clone())
    assert torch.allclose(results[0], results[1]) and torch.allclose(results[0], results[2])


def test_make_blocks_chunks_layers():
    blocks = make_blocks([(0, 10), (10, 13)], block_size=4)
    assert blocks == [(0, 3, 0), (3, 7, 0), (7, 10, 0), (10, 13, 1)]
    with pytest.raises(ValueError, match="block_size"):
        make_blocks([(0, 10)], block_size=0)


@pytest.mark.parametrize("method, block_size", [("magnitude", None), ("chita", None), ("chita", 500)])
def test_layerwise_scope_gives_per_layer_sparsity(digits, method, block_size):
    model = copy.deepcopy(digits[0])
    kwargs = {} if method == "magnitude" else dict(block_size=block_size, **FAST)
    report = prune(model, digits[1], 0.75, method=method, scope="layerwise", **kwargs)
    for layer, module in zip(report.layers, (model.fc1, model.fc2, model.fc3)):
        assert layer.nonzeros == int(module.weight_mask.sum()) == math.floor(0.25 * module.weight.numel())


def test_block_mode_budgets_sum_to_k(digits):
    model = copy.deepcopy(digits[0])
    report = prune(model, digits[1], 0.9, method="chita", block_size=300, **FAST)
    assert report.nonzeros == kept(model) == math.floor(0.1 * report.numel + 1e-9)


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize("kwargs, message", [
    (dict(sparsity=1.0), "sparsity"), (dict(sparsity=-0.1), "sparsity"), (dict(sparsity=float("nan")), "sparsity"),
    (dict(method="obs"), "method"), (dict(targets=["nothing*"]), "no prunable parameters"),
    (dict(n_rows=10 ** 6), "lower n_rows"), (dict(scope="local"), "scope"), (dict(schedule="log"), "schedule"),
    (dict(lam=-1.0), "lam"), (dict(block_size=0), "block_size"), (dict(n_stages=3, hold_stages=3), "hold_stages"),
    (dict(hold_stages=-1), "hold_stages")])
def test_bad_arguments_leave_model_untouched(model, digits, kwargs, message):
    before = state(model)
    args = dict(sparsity=0.9, **FAST) | kwargs
    with pytest.raises(ValueError, match=message):
        prune(model, digits[1], **args)
    assert_same_state(before, model)


def test_empty_data_rejected(model):
    before = state(model)
    empty = torch.utils.data.TensorDataset(torch.empty(0, 64), torch.empty(0, dtype=torch.long))
    with pytest.raises(ValueError, match="data is empty"):
        prune(model, empty, 0.5)
    with pytest.raises(ValueError, match="data: a batch must hold tensors"):
        prune(model, [1, 2, 3], 0.5)
    assert_same_state(before, model)


def test_meta_device_rejected(digits):
    meta = copy.deepcopy(digits[0]).to("meta")
    for method in ("magnitude", "chita++"):
        with pytest.raises(ValueError, match="unsupported device"):
            prune(meta, digits[1], 0.5, method=method)


# ---------------------------------------------------------------- batchnorm, report

def test_recompute_batchnorm_restores_modes():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 2))
    net.eval()
    X = torch.randn(64, 3, 8, 8) * 3 + 1
    seen = writeback.recompute_batchnorm(net, (X, torch.zeros(64, dtype=torch.long)), batch_size=16)
    bn = net[1]
    assert seen == 64 and not net.training and not bn.training and bn.momentum == 0.1
    feats = net[0](X).transpose(0, 1).reshape(4, -1)
    assert torch.allclose(bn.running_mean, feats.mean(1), atol=1e-4)


def test_report_serialises(model, digits, tmp_path):
    report = prune(model, digits[1], 0.8, method="chita++", n_stages=2, **FAST)
    assert isinstance(report, PruneReport) and len(report.stages) == 2
    text = str(report)
    assert "fc1.weight" in text and "chita++" in text
    report.to_json(tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["nonzeros"] == report.nonzeros and len(data["layers"]) == 3 and data["layers"][0]["shape"] == [64, 64]
    assert data["time_total"] >= data["time_solve"] >= 0
