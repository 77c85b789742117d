"""Curvature where the loss is at its minimum: the true (sampled-target) Fisher, and flat Fisher rows refused."""
import copy
import logging

import numpy as np
import pytest
import torch
from torch import nn

from chita_nn import losses
from chita_nn.core.fisher import empirical_fisher
from chita_nn.core.params import ParamLayout, select_parameters
from chita_nn.methods.oneshot import prune

FAST = dict(n_rows=32, samples_per_row=1, lam=1e-3)


def memorised_classifier(seed=0, n=64):
    """A linear classifier on 8 features that fits its 64 samples with a near-zero loss."""
    torch.manual_seed(seed)
    X = torch.randn(n, 8)
    y = (X[:, 0] > 0).long() + 2 * (X[:, 1] > 0).long()
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(400):
        opt.zero_grad()
        nn.functional.cross_entropy(model(X) * 8.0, y).backward()
        opt.step()
    with torch.no_grad():
        model[2].weight *= 8.0
        model[2].bias *= 8.0
    return model.eval(), X, y


def fisher_rows(model, data, loss, n_rows=64):
    params = select_parameters(model)
    return empirical_fisher(model, params, data, n_rows=n_rows, samples_per_row=1, loss_fn=loss).A


def fitted_regression(seed=0, n=64):
    """An MLP and targets it fits exactly: ``y = model(X)``."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3)).eval()
    X = torch.randn(n, 8)
    with torch.no_grad():
        return model, X, model(X)


def exactly_fitted_regression(seed=0, n=64):
    """An MLP with small-integer weights and inputs, and the targets it fits: every product and sum is exact in
    float32, so the residuals are exactly zero however a pass batches the samples (a float model's outputs
    differ in the last bits between a batch of 64 and sub-batches, depending on the BLAS kernel chosen)."""
    generator = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randint(-3, 4, param.shape, generator=generator).float())
        X = torch.randint(-3, 4, (n, 8), generator=generator).float()
        return model, X, model(X)


def test_gaussian_target_rows_carry_curvature_where_the_empirical_ones_vanish():
    model, X, y = fitted_regression()
    empirical = fisher_rows(model, (X, y), losses.mse())
    true = fisher_rows(model, (X, y), losses.mse(fisher="true"))
    assert np.abs(empirical).max() == 0.0
    assert np.linalg.norm(true) > 0.1
    with pytest.raises(ValueError, match="every Fisher row is zero"):
        prune(copy.deepcopy(model), (X, y), 0.5, method="chita", loss_fn=losses.mse(), **FAST)
    report = prune(copy.deepcopy(model), (X, y), 0.5, method="chita", loss_fn=losses.mse(fisher="true"), **FAST)
    assert not report.warnings and report.settings["loss"].endswith("true Fisher (Gaussian targets)")


def test_gaussian_target_rows_have_the_gauss_newton_second_moment():
    """``ℓ = ‖W x − y‖²/D``: E[g gᵀ] = (2/D) I ⊗ x xᵀ for the rows of ``W``."""
    torch.manual_seed(2)
    model = nn.Linear(3, 2, bias=False)
    x = torch.randn(1, 3)
    n = 20000
    data = (x.repeat(n, 1), model(x).detach().repeat(n, 1))
    A = fisher_rows(model, data, losses.mse(fisher="true", seed=4), n_rows=n).astype(np.float64)
    xx = np.outer(x[0].double().numpy(), x[0].double().numpy())
    expected = np.kron(np.eye(2), xx)  # (2/D) I with D = 2
    np.testing.assert_allclose(A.T @ A / n, expected, atol=0.03 * np.abs(expected).max())


def test_true_fisher_second_moment_is_the_fisher_information():
    """Softmax regression ``z = W x``: E_ŷ[g gᵀ] = (diag π − π πᵀ) ⊗ x xᵀ for the rows of ``W``."""
    torch.manual_seed(1)
    model = nn.Linear(3, 4, bias=False)
    x = torch.randn(1, 3)
    n = 20000
    data = (x.repeat(n, 1), torch.zeros(n, dtype=torch.long))
    A = fisher_rows(model, data, losses.cross_entropy(fisher="true", seed=3), n_rows=n).astype(np.float64)
    pi = torch.softmax(model(x), dim=1)[0].detach().double().numpy()
    expected = np.kron(np.diag(pi) - np.outer(pi, pi), np.outer(x[0].double().numpy(), x[0].double().numpy()))
    np.testing.assert_allclose(A.T @ A / n, expected, atol=0.02 * np.abs(expected).max())


def test_true_fisher_keeps_the_step_search_on_the_real_loss():
    model, X, y = memorised_classifier()
    loss = losses.cross_entropy(fisher="true")
    batch = (X[:8], y[:8])
    torch.testing.assert_close(loss(model, batch), losses.cross_entropy()(model, batch))
    assert "true Fisher" in loss.description
    report = prune(copy.deepcopy(model), (X, y), 0.5, method="chita", loss_fn=loss, **FAST)
    assert report.settings["loss"] == loss.description and not report.warnings


def test_causal_lm_true_fisher_rows_differ_from_the_empirical_ones():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=1, vocab_size=50)
    model = transformers.LlamaForCausalLM(config).eval()
    ids = torch.randint(0, 50, (8, 12))
    mask = torch.ones_like(ids)
    mask[0, -3:] = 0
    batches = [{"input_ids": ids[i:i + 4], "attention_mask": mask[i:i + 4]} for i in (0, 4)]
    true = fisher_rows(model, batches, losses.causal_lm(fisher="true"), n_rows=8)
    empirical = fisher_rows(model, batches, losses.causal_lm(), n_rows=8)
    assert np.isfinite(true).all() and np.linalg.norm(true) > 0
    assert not np.allclose(true, empirical)


def test_fisher_option_is_checked():
    with pytest.raises(ValueError, match="fisher must be one of"):
        losses.cross_entropy(fisher="sampled")


class _Plain(losses.Loss):
    """A distillation loss without its Fisher form: its rows are the (vanishing) loss gradients."""

    def __init__(self, kind):
        self.kind = kind
        super().__init__(self._value, f"plain distillation ({kind})")
        self.inner = None

    def bind(self, model):
        bound = _Plain(self.kind)
        bound.inner = losses.distillation(self.kind).bind(model)
        return bound

    def _value(self, model, batch):
        return self.inner._value(model, batch)


def test_zero_fisher_rows_are_an_error_and_the_model_is_unchanged():
    model, X, _ = memorised_classifier()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="every Fisher row is zero.*distillation"):
        prune(model, (X,), 0.5, method="chita", loss_fn=_Plain("mse"), **FAST)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key])


def test_negligible_fisher_rows_are_a_loud_warning(caplog):
    model, X, _ = memorised_classifier()
    with caplog.at_level(logging.WARNING, logger="chita_nn.methods.safeguard"):
        report = prune(copy.deepcopy(model), (X,), 0.5, method="chita", loss_fn=_Plain("cosine"), **FAST)
    assert any("Fisher rows are negligible" in w for w in report.warnings)
    assert "WARNING stage 1: the Fisher rows are negligible" in str(report)
    assert any("negligible" in r.getMessage() for r in caplog.records)
    quiet = prune(copy.deepcopy(model), (X,), 0.5, method="chita", loss_fn=losses.distillation("cosine"), **FAST)
    assert not quiet.warnings


def test_layout_of_memorised_classifier_is_what_the_tests_assume():
    model, _, _ = memorised_classifier()
    assert ParamLayout(select_parameters(model)).p == 8 * 16 + 16 * 4


def test_sampled_rows_turn_the_gradient_term_off():
    model, X, y = fitted_regression()
    report = prune(copy.deepcopy(model), (X, y), 0.5, method="chita", loss_fn=losses.mse(fisher="true"), **FAST)
    assert report.settings["gradient_term"] is False
    with pytest.raises(ValueError, match="gradient_term=True needs Fisher rows that are the loss's gradients"):
        prune(model, (X, y), 0.5, method="chita", loss_fn=losses.distillation("mse"), gradient_term=True, **FAST)


def test_global_solve_too_large_for_the_budget_is_refused_before_the_fisher():
    model, X, y = fitted_regression()
    with pytest.raises(MemoryError, match="max_bytes"):
        prune(model, (X, y), 0.5, method="chita", loss_fn=losses.mse(fisher="true"), max_bytes=10_000, **FAST)


def test_cli_loss_names_build_their_losses():
    from chita_nn.zoo.user import LOSSES, make_loss

    built = {name: make_loss(name) for name in LOSSES}
    assert all(isinstance(loss, losses.Loss) for loss in built.values())
    assert {name for name, loss in built.items() if not loss.rows_are_gradients} == {
        "cross-entropy-true-fisher", "causal-lm-true-fisher", "mse-true-fisher", "distillation-mse",
        "distillation-cosine"}


def test_block_mode_refuses_zero_fisher_rows_too():
    from chita_nn.methods.scale import block_prune

    model, X, y = exactly_fitted_regression()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="every Fisher row is zero"):
        block_prune(model, (X, y), 0.5, n_rows=32, loss_fn=losses.mse(), block_size="layer")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
