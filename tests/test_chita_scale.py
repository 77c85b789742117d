"""Tests of memory-bounded block-mode CHITA: equality with the in-memory solves, float16 store, memory refusal,
parallel block solves, and the ImageNet architectures."""
import copy

import numpy as np
import pytest
import torch

import l0reg
from chita_nn.core.fisher import empirical_fisher
from chita_nn.core.params import ParamLayout, select_parameters
from chita_nn.methods.blocks import gradient_weight, rhs
from chita_nn.methods.oneshot import DEFAULTS, prune
from chita_nn.methods.scale import block_prune
from chita_nn.zoo.imagenet_models import MobileNetV1, resnet50

ROWS = dict(n_rows=50, samples_per_row=4, seed=1)


def weights(model):
    return ParamLayout(select_parameters(model)).gather()


@pytest.mark.parametrize("block_size", [None, 1000])
def test_block_mode_equals_in_memory_solve(digits_mlp, tmp_path, block_size):
    """One block (block_size=None) is the global CHITA solve; with blocks it is prune(block_size=...)."""
    model, train = digits_mlp
    expected, got = copy.deepcopy(model), copy.deepcopy(model)
    # without the gradient term the problem is well separated, so both paths give the same support
    prune(expected, train, 0.8, method="chita", line_search=False, block_size=block_size, gradient_term=False,
          **ROWS)
    report = block_prune(got, train, 0.8, block_size=block_size, store_dtype="float32", store_dir=tmp_path,
                         chunk_rows=16, gradient_term=False, line_search=False, **ROWS)
    w_expected, w_got = weights(expected), weights(got)
    assert np.array_equal(w_expected != 0, w_got != 0)
    # float32 rows batched differently round differently; the refit amplifies that by its condition number
    assert np.abs(w_got - w_expected).max() < 1e-4, np.abs(w_got - w_expected).max()
    assert torch.equal(got.fc1.weight_mask, expected.fc1.weight_mask)
    assert report.prune.nonzeros == int(np.floor(0.2 * w_got.size + 1e-9))
    assert set(report.phases) == {"plan", "gradients", "solve", "safeguard", "write-back"}
    assert list(tmp_path.iterdir()) == []  # block files removed


def test_block_mode_gradient_term_solves_the_same_problem(digits_mlp):
    """With b = A w̄ − e/m both paths reach the same objective (their float rounding differs, and so may a few
    near-tied support entries)."""
    model, train = digits_mlp
    expected, got = copy.deepcopy(model), copy.deepcopy(model)
    prune(expected, train, 0.8, method="chita", line_search=False, gradient_term=True, **ROWS)
    block_prune(got, train, 0.8, store_dtype="float32", chunk_rows=16, gradient_term=True, line_search=False,
                **ROWS)
    params = select_parameters(model)
    w_bar = ParamLayout(params).gather().astype(np.float64)
    A = empirical_fisher(model, params, train, n_rows=ROWS["n_rows"], samples_per_row=ROWS["samples_per_row"],
                         seed=ROWS["seed"]).A
    b = rhs(A, w_bar, gradient_weight(True, ROWS["samples_per_row"]))
    lam = DEFAULTS["lam"]
    values = [l0reg.objective(A, b, weights(m), lam=lam, w_bar=w_bar) for m in (expected, got)]
    start = l0reg.objective(A, b, w_bar * (weights(expected) != 0), lam=lam, w_bar=w_bar)
    assert values[1] == pytest.approx(values[0], rel=1e-3) and max(values) < 0.5 * start
    assert np.mean((weights(expected) != 0) == (weights(got) != 0)) > 0.99


def test_float16_store_is_close_to_float32(digits_mlp):
    model, train = digits_mlp
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    block_prune(a, train, 0.8, block_size=1000, store_dtype="float32", **ROWS)
    report = block_prune(b, train, 0.8, block_size=1000, store_dtype="float16", **ROWS)
    wa, wb = weights(a), weights(b)
    assert np.mean((wa != 0) == (wb != 0)) > 0.99
    assert report.plan.store_bytes < 50 * wa.size * 4 * 0.6  # half of float32, plus the row scales


def test_memory_refusal_is_clear_and_allocates_nothing(digits_mlp, tmp_path):
    model, train = digits_mlp
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(MemoryError, match="max_bytes.*block_size"):
        block_prune(model, train, 0.8, max_bytes=10_000, store_dir=tmp_path, **ROWS)
    assert list(tmp_path.iterdir()) == []
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.slow
def test_parallel_block_solves_equal_serial(digits_mlp):
    model, train = digits_mlp
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    block_prune(a, train, 0.8, block_size=1500, store_dtype="float32", **ROWS)
    report = block_prune(b, train, 0.8, block_size=1500, store_dtype="float32", workers=2, **ROWS)
    assert np.array_equal(weights(a), weights(b))
    assert report.workers_peak_rss > 0


@pytest.mark.slow
def test_imagenet_architectures_match_published_sizes():
    assert sum(p.numel() for p in MobileNetV1().parameters()) == 4_231_976
    model = resnet50()
    assert sum(p.numel() for p in model.parameters()) == 25_557_032  # torchvision's resnet50
    with torch.no_grad():
        assert model.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 1000)


def test_resnet18_and_mobilenet_v3_small_match_torchvision_sizes():
    from chita_nn.zoo.imagenet_models import mobilenet_v3_small, resnet18

    assert sum(p.numel() for p in resnet18().parameters()) == 11_689_512
    model = mobilenet_v3_small()
    assert sum(p.numel() for p in model.parameters()) == 2_542_856
    with torch.no_grad():
        assert model.eval()(torch.zeros(2, 3, 32, 32)).shape == (2, 1000)
        assert resnet18(num_classes=10).eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
