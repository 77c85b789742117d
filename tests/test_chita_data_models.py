"""Tests of chita_nn.zoo.datasets and chita_nn.zoo.models (real-data tests skip without the shared data folder)."""
import gzip
import struct

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from chita_nn.core.fisher import empirical_fisher
from chita_nn.core.params import select_parameters
from chita_nn.core.runtime import eval_mode, evaluate
from chita_nn.zoo.datasets import (
    DATA_DIR_ENV,
    load_cifar10,
    load_digits_data,
    load_mnist,
    resolve_data_dir,
    subset,
)
from chita_nn.zoo.models import (
    DigitsMLP,
    MLPNet,
    ResNet20,
    load_mlpnet,
    load_resnet20,
    train_digits_mlp,
)

MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
CIFAR_TRAIN_COUNTS = [2491, 2518, 2515, 2522, 2490, 2411, 2537, 2530, 2507, 2479]


pytestmark = pytest.mark.usefixtures("torch_single_thread")


@pytest.fixture(scope="module")
def data_dir():
    try:
        return resolve_data_dir()
    except FileNotFoundError as err:
        pytest.skip(f"shared data folder not available: {err}")


@pytest.fixture(scope="module")
def digits():
    return load_digits_data()


# --- data folder -------------------------------------------------------------------------------------------

def test_resolve_data_dir_argument_and_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    assert resolve_data_dir(tmp_path) == tmp_path
    assert resolve_data_dir(str(tmp_path)) == tmp_path
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    assert resolve_data_dir() == tmp_path
    other = tmp_path / "other"
    other.mkdir()
    assert resolve_data_dir(other) == other  # the argument wins over the environment


def test_resolve_data_dir_errors(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match=f"data_dir.*{DATA_DIR_ENV}"):
        resolve_data_dir()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_data_dir(tmp_path / "missing")


# --- loaders on small synthetic files ----------------------------------------------------------------------

def _write_idx(path, magic, array):
    header = struct.pack(f">{1 + array.ndim}I", magic, *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def fake_data(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "mnist").mkdir()
    images = rng.integers(0, 256, size=(7, 28, 28))
    _write_idx(tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz", 2051, images)
    _write_idx(tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz", 2049, np.arange(7) % 10)
    _write_idx(tmp_path / "mnist" / "train-images-idx3-ubyte.gz", 2049, images)  # wrong magic
    _write_idx(tmp_path / "mnist" / "train-labels-idx1-ubyte.gz", 2049, np.arange(7) % 10)
    (tmp_path / "cifar10").mkdir()
    cifar = rng.integers(0, 256, size=(5, 3072)).astype(np.uint8)
    np.savez(tmp_path / "cifar10" / "test_batch.npz", data=cifar, labels=np.arange(5, dtype=np.uint8))
    return tmp_path, images, cifar


def test_load_mnist_synthetic(fake_data):
    folder, images, _ = fake_data
    ds = load_mnist("test", data_dir=folder)
    X, y = ds.tensors
    assert X.shape == (7, 1, 28, 28) and X.dtype == torch.float32 and y.dtype == torch.int64
    expected = (images / 255.0 - 0.1307) / 0.3081
    np.testing.assert_allclose(X[:, 0].numpy(), expected, rtol=1e-5, atol=1e-5)
    assert y.tolist() == list(range(7))
    assert len(load_mnist("test", data_dir=folder, limit=3)) == 3
    with pytest.raises(ValueError, match="magic"):
        load_mnist("train", data_dir=folder)
    with pytest.raises(ValueError, match="split"):
        load_mnist("validation", data_dir=folder)
    with pytest.raises(ValueError, match="limit"):
        load_mnist("test", data_dir=folder, limit=0)


def test_load_cifar10_synthetic(fake_data):
    folder, _, cifar = fake_data
    X, y = load_cifar10("test", data_dir=folder, limit=4).tensors
    assert X.shape == (4, 3, 32, 32) and X.dtype == torch.float32 and y.tolist() == [0, 1, 2, 3]
    expected = (cifar[:4].reshape(4, 3, 32, 32) / 255.0 - 0.5) / 0.5
    np.testing.assert_allclose(X.numpy(), expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="split"):
        load_cifar10("val", data_dir=folder)


def test_subset():
    ds = TensorDataset(torch.arange(20.0).reshape(10, 2), torch.arange(10))
    sub = subset(ds, 4, seed=1)
    X, y = sub.tensors
    assert len(sub) == 4 and len(set(y.tolist())) == 4
    assert torch.equal(X[:, 0], 2.0 * y)  # rows stay paired
    assert torch.equal(subset(ds, 4, seed=1).tensors[1], y)
    assert len(subset(ds, 10)) == 10
    with pytest.raises(ValueError, match="larger"):
        subset(ds, 11)


def test_load_digits_data(digits):
    train, test = digits
    assert len(train) + len(test) == 1797 and len(test) == 450
    X, y = train.tensors
    assert X.shape[1] == 64 and X.dtype == torch.float32 and y.dtype == torch.int64
    assert X.mean(0).abs().max() < 1e-5


# --- models ------------------------------------------------------------------------------------------------

def test_mlpnet_structure():
    model = MLPNet()
    assert [name for name, _ in model.named_parameters()] == ["fc1.weight", "fc2.weight", "fc3.weight"]
    assert sum(p.numel() for p in model.parameters()) == 32360
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_resnet20_structure():
    model = ResNet20()
    assert sum(p.numel() for p in model.parameters()) == 272474
    keys = set(model.state_dict())
    assert {"layer2.0.downsample.0.weight", "layer3.0.downsample.1.running_var", "fc.bias"} <= keys
    assert not any(k.startswith(("layer1.0.downsample", "layer2.1.downsample")) for k in keys)
    assert model.layer3[0].conv1.weight.shape == (64, 32, 3, 3)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_digits_mlp_structure():
    model = DigitsMLP()
    weights = [p for name, p in model.named_parameters() if name.endswith("weight")]
    assert [w.shape for w in weights] == [(64, 64), (32, 64), (10, 32)]
    assert sum(w.numel() for w in weights) == 6464
    assert model(torch.zeros(5, 64)).shape == (5, 10)


def test_evaluate_and_mode_restore():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 3))
    model.train()
    model[1].eval()  # mixed modes must survive
    X, y = torch.randn(25, 4), torch.randint(0, 3, (25,))
    result = evaluate(model, TensorDataset(X, y), batch_size=7)
    assert [m.training for m in model.modules()] == [True, True, False, True, True]
    with torch.no_grad(), eval_mode(model):
        logits = model(X)
    assert result["accuracy"] == pytest.approx((logits.argmax(1) == y).float().mean().item())
    assert result["loss"] == pytest.approx(nn.functional.cross_entropy(logits, y).item(), rel=1e-5)


def test_train_digits_mlp(digits):
    train, test = digits
    model = train_digits_mlp(train, epochs=60, seed=0)
    assert not model.training
    assert evaluate(model, test)["accuracy"] >= 0.95
    rng_state = torch.get_rng_state()
    again = train_digits_mlp(train, epochs=2, seed=3)
    assert torch.equal(torch.get_rng_state(), rng_state)  # global RNG untouched
    assert all(torch.equal(a, b) for a, b in zip(again.parameters(),
                                                 train_digits_mlp(train, epochs=2, seed=3).parameters()))


# --- real data (skipped without the data folder) -------------------------------------------------------------

@pytest.mark.data
def test_mnist_real(data_dir):
    X, y = load_mnist("test", data_dir=data_dir).tensors
    assert X.shape == (10000, 1, 28, 28)
    assert torch.bincount(y, minlength=10).tolist() == MNIST_TEST_COUNTS
    X_train, y_train = load_mnist("train", data_dir=data_dir).tensors
    assert X_train.shape == (60000, 1, 28, 28) and y_train.min() == 0 and y_train.max() == 9
    assert abs(X_train.mean().item()) < 0.01 and abs(X_train.std().item() - 1) < 0.01  # normalisation fits


@pytest.mark.data
def test_mlpnet_checkpoint_accuracy(data_dir):
    model = load_mlpnet(data_dir)
    assert not model.training
    result = evaluate(model, load_mnist("test", data_dir=data_dir))
    assert round(result["accuracy"] * 10000) == 9397


@pytest.mark.data
def test_cifar10_train_counts(data_dir):
    X, y = load_cifar10("train", data_dir=data_dir).tensors
    assert X.shape == (25000, 3, 32, 32)
    assert torch.bincount(y, minlength=10).tolist() == CIFAR_TRAIN_COUNTS


@pytest.mark.data
def test_resnet20_checkpoint_first_2000(data_dir):
    model = load_resnet20(data_dir)
    result = evaluate(model, load_cifar10("test", data_dir=data_dir, limit=2000), batch_size=500)
    assert round(result["accuracy"] * 2000) == 1821


@pytest.mark.data
@pytest.mark.slow
def test_resnet20_checkpoint_full_test_set(data_dir):
    result = evaluate(load_resnet20(data_dir), load_cifar10("test", data_dir=data_dir), batch_size=500)
    assert round(result["accuracy"] * 10000) == 9143


def _mean_loss_gradient(model, params, X, y):
    with eval_mode(model):
        loss = nn.functional.cross_entropy(model(X), y)
        grads = torch.autograd.grad(loss, [pp.tensor() for pp in params])
    return torch.cat([g.reshape(-1) for g in grads]).numpy()


@pytest.mark.data
def test_fisher_on_checkpoints(data_dir):
    """Mean of the Fisher rows = gradient of the mean loss; checkpoints' selected weights as in the paper."""
    model = load_mlpnet(data_dir)
    data = load_mnist("test", data_dir=data_dir, limit=64)
    params = select_parameters(model)
    fs = empirical_fisher(model, params, data, n_rows=64)
    assert fs.A.shape == (64, 32360)
    assert fs.loss == pytest.approx(evaluate(model, data)["loss"], rel=1e-5)
    np.testing.assert_allclose(fs.grad, _mean_loss_gradient(model, params, *data.tensors), rtol=1e-4, atol=1e-6)

    model = load_resnet20(data_dir).double()
    X, y = load_cifar10("test", data_dir=data_dir, limit=4).tensors
    params = select_parameters(model)
    assert sum(pp.numel for pp in params) == 270896  # 21 convs (incl. 2 shortcuts) + fc weight
    fs = empirical_fisher(model, params, (X.double(), y), n_rows=2, samples_per_row=2, dtype=np.float64)
    np.testing.assert_allclose(fs.grad, _mean_loss_gradient(model, params, X.double(), y), rtol=1e-10, atol=1e-13)
