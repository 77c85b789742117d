"""chita_nn.prune on the models users bring: DataLoaders and dict batches, loss forms, N:M / channel patterns
that hold on every mask, and bad input that leaves the model unchanged."""
import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from chita_nn import CHITA, CHITAPlusPlus, Magnitude, losses, magnitude_prune, prune
from chita_nn.core.batches import Calibration
from chita_nn.core.fisher import empirical_fisher
from chita_nn.core.params import select_parameters

FAST = dict(n_rows=24, samples_per_row=2, line_search=(0.0, 1.0), loss_samples=64)  # CHITA and CHITA++
STAGES = dict(n_stages=2)  # CHITA++ only


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_unchanged(before, model):
    after = model.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert torch.allclose(value, after[key], rtol=0, atol=0, equal_nan=True), key


def _masks(model):
    return {name: buf for name, buf in model.named_buffers() if name.endswith("weight_mask")}


def _is_nm(mask, n, m):
    rows = mask.reshape(mask.shape[0], -1)
    return bool((rows.reshape(-1, m).sum(dim=1) <= n).all())


@pytest.fixture
def classifier():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8), nn.ReLU(), nn.Linear(8, 4))


@pytest.fixture
def data():
    generator = torch.Generator().manual_seed(1)
    X = torch.randn(128, 16, generator=generator)
    return X, (X[:, :4].sum(dim=1) > 0).long() + 2 * (X[:, 4] > 0).long()


class DictEncoder(nn.Module):
    """A sentence-transformer-like model: forward takes one dict, returns a dict with an embedding."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(30, 16)
        self.proj = nn.Linear(16, 16)
        self.out = nn.Linear(16, 8)

    def forward(self, features):
        h = self.embed(features["input_ids"]) * features["attention_mask"].unsqueeze(-1)
        h = torch.tanh(self.proj(h)).mean(dim=1)
        return {"sentence_embedding": self.out(h)}


class KeywordLM(nn.Module):
    """A Hugging Face-like causal LM: keyword inputs, an output object with ``logits``."""

    def __init__(self, vocab=20):
        super().__init__()
        self.embed = nn.Embedding(vocab, 16)
        self.mlp = nn.Linear(16, 16)
        self.lm_head = nn.Linear(16, vocab)

    def forward(self, input_ids, attention_mask=None):
        return {"logits": self.lm_head(torch.relu(self.mlp(self.embed(input_ids))))}


def _token_batches(n_batches=6, batch=8, length=7, vocab=30, seed=0):
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        ids = torch.randint(0, vocab, (batch, length), generator=generator)
        mask = torch.ones(batch, length, dtype=torch.long)
        mask[:, -2:] = (torch.rand(batch, 2, generator=generator) > 0.5).long()
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


# --- data and loss forms ------------------------------------------------------------------------------------

def test_dataloader_gives_the_rows_of_the_tensors(classifier, data):
    params = select_parameters(classifier)
    direct = empirical_fisher(classifier, params, data, n_rows=16, samples_per_row=2)
    loader = DataLoader(TensorDataset(*data), batch_size=8)
    through_loader = empirical_fisher(classifier, params, loader, n_rows=16, samples_per_row=2)
    np.testing.assert_allclose(through_loader.A, direct.A, rtol=1e-5, atol=1e-7)


def test_scalar_loss_rows_are_minibatch_gradients(classifier, data):
    X, y = data
    target = torch.randn(len(X), 4)
    params = select_parameters(classifier)
    fisher = empirical_fisher(classifier, params, (X, target), n_rows=5, samples_per_row=4, loss_fn=F.mse_loss)
    assert not fisher.per_sample
    for r in range(5):
        classifier.zero_grad()
        F.mse_loss(classifier(X[4 * r:4 * r + 4]), target[4 * r:4 * r + 4]).backward()
        expected = torch.cat([pp.parameter.grad.reshape(-1) for pp in params]).numpy()
        np.testing.assert_allclose(fisher.A[r], expected, rtol=1e-4, atol=1e-6)


def test_dict_model_with_distillation_prunes(classifier):
    torch.manual_seed(0)
    model = DictEncoder()
    batches = _token_batches()
    dense = {k: v.clone() for k, v in model.state_dict().items()}
    report = prune(model, batches, CHITA(sparsity=0.5, loss_fn=losses.distillation("cosine"), targets=["Linear"],
                                         n_rows=24, samples_per_row=2, line_search=(0.0, 0.5, 1.0), loss_samples=48))
    assert report.settings["loss"].startswith("distillation")
    for name, mask in _masks(model).items():
        assert mask.float().mean().item() == pytest.approx(0.5, abs=0.02) or name
    assert sum(int((m == 0).sum()) for m in _masks(model).values()) > 0
    assert not torch.equal(dense["proj.weight"], model.proj.weight)


def test_distillation_rows_are_not_zero_at_the_dense_model():
    torch.manual_seed(0)
    model = DictEncoder()
    loss = losses.distillation("mse").bind(model)
    params = select_parameters(model, targets=["Linear"])
    fisher = empirical_fisher(model, params, Calibration(_token_batches()), n_rows=8, samples_per_row=1,
                              loss_fn=loss)
    assert np.abs(fisher.A).sum() > 0  # the Gauss-Newton sketch, not the (zero) loss gradient


def test_causal_lm_loss_and_keyword_model():
    torch.manual_seed(0)
    model = KeywordLM(vocab=30)
    batches = _token_batches(vocab=30)
    value = losses.causal_lm()(model, batches[0])
    assert value.shape == (8,) and torch.isfinite(value).all()
    report = prune(model, batches, CHITA(sparsity=0.5, loss_fn=losses.causal_lm(), **FAST))
    assert "lm_head.weight_mask" not in dict(model.named_buffers())  # lm_head ignored by default
    assert report.layers[0].name == "mlp.weight"


def _per_sample_ce(net, batch, scale=1.0):
    return scale * F.cross_entropy(net(batch[0]), batch[1], reduction="none")


@losses.closure
def _decorated(net, batch):
    return _per_sample_ce(net, batch)


@pytest.mark.parametrize("declared", [
    losses.closure(lambda m, b: F.cross_entropy(m(b[0]), b[1], reduction="none")),
    losses.closure(_per_sample_ce),
    losses.closure(functools.partial(_per_sample_ce, scale=1.0)),
    _decorated,
    losses.output_target(lambda model, target: F.cross_entropy(model, target, reduction="none")),
], ids=["lambda", "def", "partial", "decorator", "output_target"])
def test_declared_loss_forms_give_the_default_rows(classifier, data, declared):
    params = select_parameters(classifier)
    default = empirical_fisher(classifier, params, data, n_rows=8, samples_per_row=2)
    fisher = empirical_fisher(classifier, params, data, n_rows=8, samples_per_row=2, loss_fn=declared)
    assert fisher.per_sample
    np.testing.assert_allclose(fisher.A, default.A, rtol=1e-5, atol=1e-7)


def test_a_declared_lambda_closure_prunes(classifier, data):
    loss = losses.closure(lambda m, b: F.cross_entropy(m(b[0]), b[1], reduction="none"))
    report = prune(classifier, data, CHITA(sparsity=0.5, loss_fn=loss, **FAST))
    assert report.settings["loss"] == "<lambda>" and report.sparsity == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("fn", [3, losses.mse()], ids=["int", "Loss"])
def test_declaring_what_is_not_a_function(fn):
    with pytest.raises(TypeError, match=r"^closure\(fn\): fn must be a function, got (int|a Loss)"):
        losses.closure(fn)
    with pytest.raises(TypeError, match=r"^output_target\(fn\): fn must be a function"):
        losses.output_target(fn)


def test_float_targets_need_a_loss(classifier, data):
    X, _ = data
    before = _state(classifier)
    with pytest.raises(ValueError, match="loss_fn.*float32"):
        prune(classifier, (X, torch.randn(len(X))), CHITA(sparsity=0.5, **FAST))
    _assert_unchanged(before, classifier)


# --- patterns -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("recipe,options", [
    (Magnitude, {}), (CHITA, FAST), (CHITAPlusPlus, {**FAST, **STAGES}), (CHITA, {**FAST, "block_size": 64}),
    (CHITA, {**FAST, "scope": "layerwise", "block_size": "layer"})],
    ids=["magnitude", "chita", "chita++", "chita-blocks", "chita-layer-blocks"])
@pytest.mark.parametrize("pattern,n,m", [("2:4", 2, 4), ("4:8", 4, 8)])
def test_nm_pattern_holds_on_every_mask(classifier, data, recipe, options, pattern, n, m):
    prune(classifier, data, recipe(pattern=pattern, **options))
    masks = _masks(classifier)
    assert len(masks) == 3
    for name, mask in masks.items():
        assert _is_nm(mask, n, m), name
        assert mask.float().mean().item() == pytest.approx(n / m), name


def test_nm_pattern_holds_when_the_magnitude_fallback_wins(classifier, data):
    # A huge ridge makes the solver's step useless: the step search keeps magnitude at some stages.
    prune(classifier, data, CHITAPlusPlus(pattern="2:4", **{**FAST, **STAGES, "lam": 1e6}))
    for name, mask in _masks(classifier).items():
        assert _is_nm(mask, 2, 4), name


def test_channel_pattern_keeps_whole_rows(classifier, data):
    prune(classifier, data, CHITA(sparsity=0.5, pattern="channel", **FAST))
    for name, mask in _masks(classifier).items():
        rows = mask.reshape(mask.shape[0], -1)
        assert bool((rows.all(dim=1) | ~rows.any(dim=1)).all()), name
        assert rows.all(dim=1).float().mean().item() == pytest.approx(0.5, abs=0.15), name


def test_magnitude_nm_picks_the_largest_of_each_group():
    layer = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.1, -3.0, 2.0, 0.5]]))
    magnitude_prune(layer, pattern="2:4")
    assert layer.weight_mask.tolist() == [[0.0, 1.0, 1.0, 0.0]]


# --- bad input: a clear error naming the argument, the model unchanged ---------------------------------------

@pytest.mark.parametrize("kwargs,error,message", [
    (dict(pattern="3:2"), ValueError, "0 < N < M"),
    (dict(pattern="2-4"), ValueError, "pattern must be one of"),
    (dict(pattern="2:4", sparsity=0.7), ValueError, "contradicts pattern"),
    (dict(pattern="2:3"), ValueError, "multiple of 3"),
    (dict(loss_fn=lambda out, y: out), ValueError, "loss_fn must return per-sample"),
    (dict(loss_fn=lambda out, y: out.sum(dim=1) * float("nan")), ValueError, "non-finite"),
    (dict(loss_fn=3), TypeError, "loss_fn must be callable"),
    (dict(seed="x"), ValueError, "seed"),
    (dict(loss_samples=0), ValueError, "loss_samples"),
    (dict(line_search=(-1.0,)), ValueError, "line_search"),
    (dict(targets=["nothing"]), ValueError, "no prunable parameters"),
    (dict(data=(torch.randn(64, 16, dtype=torch.float64), torch.zeros(64, dtype=torch.long))), ValueError,
     "cannot run on a batch"),
    (dict(data=(torch.randn(64, 15), torch.zeros(64, dtype=torch.long))), ValueError, "cannot run on a batch"),
    (dict(data=(torch.randn(64, 16), torch.full((64,), 9))), ValueError, r"class indices in \[0, 4\)"),
    (dict(data=(torch.randn(64, 16), torch.zeros(64, 1, dtype=torch.long))), ValueError, "targets of shape"),
    (dict(data=(torch.randn(64, 16), torch.full((64,), -100))), ValueError, "ignore index"),
    (dict(model="not a model"), TypeError, "model must be a torch.nn.Module"),
    # a closure not declared: the error says which form was assumed and how to declare the other
    (dict(loss_fn=lambda m, b: F.cross_entropy(m(b[0]), b[1], reduction="none")), ValueError,
     r"^data: .*TypeError: 'Tensor' object is not callable \(loss_fn was called as fn\(output, target\); "
     r"if it takes \(model, batch\), pass chita_nn\.losses\.closure\(fn\)\)$"),
    (dict(loss_fn=lambda model, target: F.cross_entropy(model, target, reduction="none")), ValueError,
     r"\(loss_fn was called as fn\(model, batch\), as its first parameter is named model; if it takes "
     r"\(output, target\), pass chita_nn\.losses\.output_target\(fn\)\)$"),
    (dict(loss_fn=losses.closure(lambda m, b: m(b[0]))), ValueError,
     r"^loss_fn must return per-sample .* \(loss_fn was called as fn\(model, batch\), declared by losses\.closure\)$"),
    (dict(loss_fn=lambda out, y: F.cross_entropy(out, y[1:], reduction="none")), ValueError,
     r"Expected input batch_size .* \(loss_fn was called as fn\(output, target\);"),
    (dict(data=(torch.ones(64, 16, dtype=torch.int8), torch.zeros(64, dtype=torch.long))), ValueError,
     r"^data: .*dtype.* \(data's inputs are int8, the model's weights float32: pass float32 inputs\)$"),
])
def test_bad_input_leaves_model_unchanged(classifier, data, kwargs, error, message):
    before = _state(classifier)
    args = {**FAST, "sparsity": None if "pattern" in kwargs else 0.5} | kwargs
    model, data = args.pop("model", classifier), args.pop("data", data)
    with pytest.raises(error, match=message):
        prune(model, data, CHITA(**args))
    _assert_unchanged(before, classifier)


def test_evaluate_refuses_regression_targets(classifier, data):
    from chita_nn import evaluate

    with pytest.raises(ValueError, match="integer labels"):
        evaluate(classifier, (data[0], torch.randn(len(data[0]))))


def test_empty_dataloader_and_nan_weights(classifier, data):
    before = _state(classifier)
    with pytest.raises(ValueError, match="data is empty"):
        prune(classifier, DataLoader(TensorDataset(data[0][:0], data[1][:0]), batch_size=4),
              CHITAPlusPlus(sparsity=0.5, **FAST, **STAGES))
    _assert_unchanged(before, classifier)
    with torch.no_grad():
        classifier[0].weight[0, 0] = float("nan")
    before = _state(classifier)
    with pytest.raises(ValueError, match="non-finite weights"):
        prune(classifier, data, CHITAPlusPlus(sparsity=0.5, **FAST, **STAGES))
    _assert_unchanged(before, classifier)


def test_failed_batchnorm_reestimation_rolls_back(data):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 4))
    before = _state(model)
    wrong = (torch.randn(64, 5), torch.zeros(64, dtype=torch.long))  # wrong feature count
    with pytest.raises(RuntimeError):
        prune(model, data, CHITA(sparsity=0.5, recompute_batchnorm=wrong, **FAST))
    _assert_unchanged(before, model)
    assert not _masks(model)
