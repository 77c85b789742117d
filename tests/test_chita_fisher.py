"""Tests of chita_nn.core.params and chita_nn.core.fisher: rows must equal a plain one-row-at-a-time autograd loop."""
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune
from torch.utils.data import TensorDataset

from chita_nn.core.fisher import FisherSample, empirical_fisher, fisher_nbytes
from chita_nn.core.params import ParamLayout, PrunableParam, select_parameters
from chita_nn.core.runtime import eval_mode
from chita_nn.zoo.models import MLPNet

ALL_TYPES = (nn.Linear, nn.Conv2d, nn.Bilinear)


pytestmark = pytest.mark.usefixtures("torch_single_thread")


class TokenMLP(nn.Module):
    """A Linear applied to (N, tokens, features) inputs (extra dims), then an MLP head."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(6, 8)
        self.fc1 = nn.Linear(32, 16)
        self.fc2 = nn.Linear(16, 5, bias=False)

    def forward(self, x):
        h = torch.tanh(self.embed(x)).flatten(1)
        return self.fc2(F.relu(self.fc1(h), inplace=True))  # in-place op on a hooked output


class SmallCNN(nn.Module):
    def __init__(self, groups=1):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=2, dilation=2, bias=False, groups=groups)
        self.bn2 = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6 * 4 * 4, 5)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.fc(F.max_pool2d(x, 2).flatten(1))


class BilinearNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 5)
        self.bil = nn.Bilinear(5, 5, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        h = torch.tanh(self.fc(x))
        return self.head(self.bil(h, h))


def _randomise_bn(model):
    """Non-trivial BatchNorm statistics, so that eval mode differs from train mode."""
    g = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=g))
            module.running_var.copy_(torch.rand(module.num_features, generator=g) + 0.5)


def _data(shape, n, classes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, *shape, generator=g), torch.randint(0, classes, (n,), generator=g))


def reference_rows(model, params, X, y, m):
    """Row r = ∇ of the mean cross-entropy over samples r*m .. r*m+m-1, one autograd call per row."""
    weights = dict(model.named_parameters())
    tensors = [weights[pp.name] for pp in params]
    rows = []
    with eval_mode(model):
        for r in range(len(X) // m):
            loss = F.cross_entropy(model(X[r * m:(r + 1) * m]), y[r * m:(r + 1) * m])
            rows.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, tensors)]).numpy())
    return np.stack(rows)


def dense_copy(pruned, dense):
    """Load into ``dense`` the effective weights (orig * mask) of the pruned model."""
    state = pruned.state_dict()
    dense.load_state_dict({key.removesuffix("_orig"): value * state[key.removesuffix("_orig") + "_mask"]
                           if key.endswith("_orig") else value
                           for key, value in state.items() if not key.endswith("_mask")})
    return dense


def assert_rows_close(A, ref):
    assert A.shape == ref.shape
    error = np.linalg.norm(A.astype(np.float64) - ref) / np.linalg.norm(ref)
    assert error < 1e-5, f"relative Frobenius error {error:.2e}"


# --- params ------------------------------------------------------------------------------------------------

def test_select_parameters_order_and_patterns():
    model = SmallCNN()
    params = select_parameters(model)
    assert [pp.name for pp in params] == ["conv1.weight", "conv2.weight", "fc.weight"]
    pp = params[0]
    assert isinstance(pp, PrunableParam)
    assert (pp.module_name, pp.param_name, pp.module) == ("conv1", "weight", model.conv1)
    assert pp.shape == (4, 3, 3, 3) and pp.numel == 108 and not pp.is_reparametrized
    assert [pp.name for pp in select_parameters(model, targets=["conv*"])] == ["conv1.weight", "conv2.weight"]
    assert [pp.name for pp in select_parameters(model, ignore=["fc.*", "conv1.*"])] == ["conv2.weight"]
    assert [pp.name for pp in select_parameters(model, targets=(nn.Linear,), param_name="bias")] == ["fc.bias"]
    assert [pp.name for pp in select_parameters(nn.Linear(2, 3))] == ["weight"]


def test_select_parameters_errors():
    model = SmallCNN()
    with pytest.raises(ValueError, match="no prunable parameters"):
        select_parameters(model, targets=["nothing*"])
    with pytest.raises(ValueError, match="no prunable parameters"):
        select_parameters(MLPNet(), param_name="bias")  # layers without bias
    with pytest.raises(ValueError, match="targets is empty"):
        select_parameters(model, targets=())
    for bad in ((int,), [3], None):
        with pytest.raises(TypeError if bad != None else ValueError, match="targets"):
            select_parameters(model, targets=bad)


def test_prunable_param_reparametrized():
    model = SmallCNN()
    prune.random_unstructured(model.conv2, "weight", amount=0.5)
    pp = select_parameters(model, targets=["conv2.*"])[0]
    assert pp.is_reparametrized and pp.parameter is model.conv2.weight_orig
    assert pp.shape == (6, 4, 3, 3) and pp.numel == 216
    assert torch.equal(pp.tensor(), model.conv2.weight_orig * model.conv2.weight_mask)


def test_param_layout_gather_split_roundtrip():
    model = SmallCNN()
    prune.l1_unstructured(model.fc, "weight", amount=0.3)
    layout = ParamLayout(select_parameters(model))
    assert layout.p == 108 + 216 + 480
    assert layout.offsets == [(0, 108), (108, 324), (324, 804)]
    vec = layout.gather()
    assert vec.dtype == np.float64 and vec.shape == (804,)
    np.testing.assert_array_equal(vec[:108], model.conv1.weight.detach().numpy().ravel())
    assert np.count_nonzero(vec[324:]) == 480 - round(0.3 * 480)  # effective (masked) fc weights
    parts = layout.split(vec)
    assert [t.shape for t in parts] == [pp.shape for pp in layout.params]
    assert all(t.dtype == torch.float32 for t in parts)
    assert torch.equal(parts[2], model.fc.weight.detach())
    assert [(pp.name, sl) for pp, sl in layout.slices()][1] == ("conv2.weight", slice(108, 324))
    with pytest.raises(ValueError, match="shape"):
        layout.split(vec[:-1])
    with pytest.raises(ValueError, match="empty"):
        ParamLayout([])


# --- Fisher rows vs. plain autograd ------------------------------------------------------------------------

@pytest.mark.parametrize("m", [1, 4])
def test_fisher_mlp_matches_autograd(m):
    torch.manual_seed(0)
    model = TokenMLP()
    data = _data((4, 6), 40, 5)
    params = select_parameters(model)
    fs = empirical_fisher(model, params, data, n_rows=9, samples_per_row=m, batch_size=10)
    X, y = data.tensors
    n = 9 * m
    assert isinstance(fs, FisherSample)
    assert fs.A.shape == (9, 8 * 6 + 32 * 16 + 16 * 5) and fs.A.dtype == np.float32 and fs.A.flags.f_contiguous
    assert_rows_close(fs.A, reference_rows(model, params, X[:n], y[:n], m))
    assert (fs.n_samples, fs.samples_per_row, fs.n_rows) == (n, m, 9)
    np.testing.assert_allclose(fs.grad, fs.A.mean(axis=0, dtype=np.float64))
    with torch.no_grad():
        assert fs.loss == pytest.approx(F.cross_entropy(model(X[:n]), y[:n]).item(), rel=1e-5)


@pytest.mark.parametrize("m", [1, 4])
def test_fisher_cnn_matches_autograd(m):
    torch.manual_seed(0)
    model = SmallCNN()
    _randomise_bn(model)
    model.train()  # must be switched to eval while collecting
    data = _data((3, 16, 16), 24, 5)
    params = select_parameters(model)
    fs = empirical_fisher(model, params, data, n_rows=24 // m, samples_per_row=m, batch_size=9)
    X, y = data.tensors
    assert_rows_close(fs.A, reference_rows(model, params, X, y, m))
    assert model.training


def test_fisher_fallback_bilinear_and_grouped_conv(caplog):
    torch.manual_seed(0)
    model = BilinearNet()
    params = select_parameters(model, targets=ALL_TYPES)
    assert [pp.name for pp in params] == ["fc.weight", "bil.weight", "head.weight"]
    data = _data((6,), 12, 3)
    with caplog.at_level("INFO", logger="chita_nn.core.fisher"):
        fs = empirical_fisher(model, params, data, n_rows=6, samples_per_row=2, batch_size=4)
    assert "fallback" in caplog.text and "bil.weight" in caplog.text
    assert_rows_close(fs.A, reference_rows(model, params, *data.tensors, 2))

    cnn = SmallCNN(groups=2)
    _randomise_bn(cnn)
    params = select_parameters(cnn)
    data = _data((3, 16, 16), 8, 5)
    fs = empirical_fisher(cnn, params, data, n_rows=4, samples_per_row=2)
    assert_rows_close(fs.A, reference_rows(cnn, params, *data.tensors, 2))


def test_fisher_pruned_modules():
    torch.manual_seed(0)
    model = SmallCNN(groups=2)  # conv2 (grouped) goes through the fallback, the others through hooks
    _randomise_bn(model)
    for module in (model.conv1, model.conv2, model.fc):
        prune.random_unstructured(module, "weight", amount=0.4)
    effective, effective_fc = model.conv2.weight, model.fc.weight
    params = select_parameters(model)
    data = _data((3, 16, 16), 10, 5)
    fs = empirical_fisher(model, params, data, n_rows=5, samples_per_row=2, batch_size=4)
    dense = dense_copy(model, SmallCNN(groups=2))
    assert_rows_close(fs.A, reference_rows(dense, select_parameters(dense), *data.tensors, 2))
    assert np.count_nonzero(fs.A[:, :108] * (model.conv1.weight_mask.numpy().ravel() == 0)) > 0  # masked entries too
    assert model.conv2.weight is effective and model.fc.weight is effective_fc and not model.conv2._forward_hooks
    assert len(model.conv2._forward_pre_hooks) == 1  # only the pruning hook is left


def test_fisher_random_subset_and_options():
    torch.manual_seed(0)
    model = TokenMLP()
    data = _data((4, 6), 30, 5)
    params = select_parameters(model)
    layout = ParamLayout(params)
    full = reference_rows(model, params, *data.tensors, 1)
    fs = empirical_fisher(model, layout, data, n_rows=8, seed=3)
    matches = [int(np.argmin(np.linalg.norm(full - row, axis=1))) for row in fs.A]
    assert len(set(matches)) == 8 and matches != list(range(8))
    assert_rows_close(fs.A, full[matches])
    np.testing.assert_array_equal(fs.A, empirical_fisher(model, params, data, n_rows=8, seed=3).A)

    X, y = data.tensors
    half = empirical_fisher(model, params, (X, y), n_rows=5, dtype=np.float16, order="C")
    assert half.A.dtype == np.float16 and half.A.flags.c_contiguous
    np.testing.assert_allclose(half.A, full[:5], rtol=1e-2, atol=1e-3)
    out = np.full((5, layout.p), np.nan, dtype=np.float64)
    assert empirical_fisher(model, params, data, n_rows=5, dtype=np.float64, out=out).A is out
    assert_rows_close(out, full[:5])
    with pytest.raises(ValueError, match="out"):
        empirical_fisher(model, params, data, n_rows=5, out=np.zeros((5, layout.p), np.float32)[:, :-1])
    with pytest.raises(ValueError, match="out"):
        empirical_fisher(model, params, data, n_rows=5, dtype=np.float64, out=np.zeros((5, layout.p), np.float32))


# --- errors and state restoration --------------------------------------------------------------------------

def test_fisher_argument_errors():
    model = TokenMLP()
    params = select_parameters(model)
    data = _data((4, 6), 10, 5)
    with pytest.raises(ValueError, match="data is empty"):
        empirical_fisher(model, params, TensorDataset(torch.empty(0, 4, 6), torch.empty(0, dtype=torch.long)),
                         n_rows=1)
    with pytest.raises(ValueError, match="data has 10 samples"):
        empirical_fisher(model, params, data, n_rows=6, samples_per_row=2)
    with pytest.raises(ValueError, match="n_rows"):
        empirical_fisher(model, params, data, n_rows=0)
    with pytest.raises(ValueError, match="samples_per_row"):
        empirical_fisher(model, params, data, n_rows=2, samples_per_row=-1)
    with pytest.raises(ValueError, match="data: a batch must hold tensors"):
        empirical_fisher(model, params, [1, 2, 3], n_rows=1)
    with pytest.raises(TypeError, match="data must be"):
        empirical_fisher(model, params, 3, n_rows=1)
    with pytest.raises(ValueError, match="per-sample losses"):
        empirical_fisher(model, params, data, n_rows=2, loss_fn=lambda out, y: out)  # (B, C), not (B,)
    with pytest.raises(ValueError, match="non-finite"):
        empirical_fisher(model, params, data, n_rows=2, loss_fn=lambda out, y: out.sum(dim=-1) * float("nan"))


def test_fisher_memory_error_before_allocation(monkeypatch):
    model = MLPNet()
    params = select_parameters(model)
    data = _data((1, 28, 28), 1000, 10)
    calls = []
    model.register_forward_pre_hook(lambda *args: calls.append(1))

    def no_allocation(*args, **kwargs):
        raise AssertionError("np.empty must not be called")

    monkeypatch.setattr(np, "empty", no_allocation)
    start = time.perf_counter()
    needed = fisher_nbytes(1000, 32360, np.float32)
    assert needed == 1000 * 32360 * 4
    with pytest.raises(MemoryError) as info:
        empirical_fisher(model, params, data, n_rows=1000, max_bytes=10 ** 6)
    message = str(info.value)
    assert f"{needed:,}" in message and "1,000,000" in message
    assert "n_rows" in message and "float16" in message and "block" in message
    assert not calls and time.perf_counter() - start < 1.0


def _snapshot(model):
    return ([m.training for m in model.modules()],
            [p.requires_grad for p in model.parameters()],
            [None if p.grad is None else p.grad.clone() for p in model.parameters()])


def _assert_state(model, snapshot):
    training, requires_grad, grads = _snapshot(model)
    assert training == snapshot[0] and requires_grad == snapshot[1]
    for now, before in zip(grads, snapshot[2]):
        assert (now is None and before is None) or torch.equal(now, before)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_fisher_restores_model_state_after_success_and_error():
    torch.manual_seed(0)
    model = SmallCNN(groups=2)
    model.train()
    model.bn2.eval()
    model.conv1.weight.requires_grad_(False)
    model.bn1.bias.requires_grad_(False)
    model.fc.weight.grad = torch.full_like(model.fc.weight, 3.0)
    snapshot = _snapshot(model)
    params = select_parameters(model)
    data = _data((3, 16, 16), 12, 5)

    empirical_fisher(model, params, data, n_rows=12, batch_size=4)
    _assert_state(model, snapshot)

    batches = []

    def failing_loss(output, target):
        batches.append(len(output))
        if len(batches) == 3:  # the first call checks the loss on one row
            raise RuntimeError("loss failed mid-collection")
        return F.cross_entropy(output, target, reduction="none")

    with torch.no_grad(), pytest.raises(RuntimeError, match="mid-collection"):
        empirical_fisher(model, params, data, n_rows=12, batch_size=4, loss_fn=failing_loss)
    assert batches == [1, 4, 4]
    _assert_state(model, snapshot)


def test_fisher_works_under_no_grad():
    torch.manual_seed(0)
    model = TokenMLP()
    data = _data((4, 6), 6, 5)
    params = select_parameters(model)
    with torch.no_grad():
        fs = empirical_fisher(model, params, data, n_rows=6)
    assert_rows_close(fs.A, reference_rows(model, params, *data.tensors, 1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fisher_on_cuda():
    torch.manual_seed(0)
    model = SmallCNN()
    _randomise_bn(model)
    data = _data((3, 16, 16), 8, 5)
    ref = reference_rows(model, select_parameters(model), *data.tensors, 2)
    model.cuda()
    fs = empirical_fisher(model, select_parameters(model), data, n_rows=4, samples_per_row=2)
    assert isinstance(fs.A, np.ndarray)
    assert np.linalg.norm(fs.A - ref) / np.linalg.norm(ref) < 1e-4  # TF32 / different kernels on the GPU
