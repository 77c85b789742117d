"""Layer-wise (reconstruction) pruning: Gram hooks, sequential blocks, methods, budgets, atomicity, validation."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")

from chita_nn.methods.layerwise import (
    Budget,
    api,
    prune_layerwise,
    relative_error,
)
from chita_nn.methods.layerwise.chita import chita
from chita_nn.methods.layerwise.gram_hooks import GramCollector
from chita_nn.methods.layerwise.sparsegpt import sparsegpt
from chita_nn.methods.layerwise.wanda import wanda

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def tiny_llama(layers=2, seed=0):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                                      num_attention_heads=4, num_key_value_heads=2, vocab_size=100)
    return transformers.LlamaForCausalLM(config).eval()


def tiny_bert(seed=0):
    torch.manual_seed(seed)
    config = transformers.BertConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                     num_attention_heads=4, vocab_size=100, max_position_embeddings=64)
    return transformers.BertModel(config).eval()


def token_batches(seed=0, n_batches=2, batch=4, seq=16, pad=True):
    """Dict batches with the last tokens of two sequences padded (attention_mask 0)."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        ids = torch.randint(1, 100, (batch, seq), generator=generator)
        mask = torch.ones_like(ids)
        if pad:
            mask[:2, seq - 5:] = 0
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 8)).eval()


def weight(module):
    return module.weight.detach().double()


def manual_gram(model, module, batches):
    """``XᵀX / n`` of ``module``'s inputs over the real tokens, from an explicit forward of ``model``."""
    seen = []
    handle = module.register_forward_hook(lambda m, args, out: seen.append(args[0].detach()))
    rows = []
    with torch.no_grad():
        for batch in batches:
            seen.clear()
            model(**batch) if isinstance(batch, dict) else model(batch)
            x = seen[0].reshape(-1, seen[0].shape[-1]).double()
            if isinstance(batch, dict):
                x = x[batch["attention_mask"].reshape(-1).bool()]
            rows.append(x)
    handle.remove()
    X = torch.cat(rows)
    return X.T @ X / len(X)


def correlated_gram(p, n=200, seed=0):
    generator = torch.Generator().manual_seed(seed)
    X = torch.randn(n, p, generator=generator, dtype=torch.float64) @ (
        torch.eye(p, dtype=torch.float64) + 0.5 * torch.randn(p, p, generator=generator, dtype=torch.float64))
    return X.T @ X / n


# --------------------------------------------------------------------------- Gram matrices
def test_gram_equals_explicit_forward_without_padding_and_shared_inputs():
    model, batches = tiny_llama(), token_batches()
    attn, mlp_ = model.model.layers[1].self_attn, model.model.layers[1].mlp
    modules = {"q": attn.q_proj, "k": attn.k_proj, "v": attn.v_proj, "o": attn.o_proj,
               "gate": mlp_.gate_proj, "up": mlp_.up_proj, "down": mlp_.down_proj}
    with torch.no_grad(), GramCollector(modules) as collector:
        for batch in batches:
            collector.batch(batch["attention_mask"])
            model(**batch)
    for name, module in modules.items():
        torch.testing.assert_close(collector.gram(name), manual_gram(model, module, batches))
    assert collector.owner["k"] == collector.owner["v"] == "q" and collector.owner["up"] == "gate"
    assert collector.owner["o"] == "o" and collector.owner["down"] == "down"
    assert collector.counts["q"] == 2 * (4 * 16 - 2 * 5)


# --------------------------------------------------------------------------- sequential pruning
def test_sequential_blocks_use_pruned_inputs():
    """Block 1 is pruned from the inputs the pruned block 0 produces (checked by a manual second pass)."""
    dense, batches = tiny_llama(), token_batches()
    model = copy.deepcopy(dense)
    report = prune_layerwise(model, batches, 0.5, method="sparsegpt")
    assert report.settings["blocks"] == "model.layers (2)"
    # manual pass: block 0 pruned (as in `model`), block 1 dense
    check = copy.deepcopy(dense)
    check.model.layers[0].load_state_dict({k.replace("_orig", ""): v for k, v in
                                           model.model.layers[0].state_dict().items() if not k.endswith("_mask")})
    for name in ("self_attn.q_proj", "mlp.down_proj"):
        module = check.model.layers[1].get_submodule(name)
        H = manual_gram(check, module, batches)
        expected, _ = sparsegpt(weight(module), H, Budget(0.5))
        pruned = model.model.layers[1].get_submodule(name).weight.detach().double()
        torch.testing.assert_close(pruned, expected, rtol=1e-4, atol=1e-6)
        H_dense = manual_gram(dense, dense.model.layers[1].get_submodule(name), batches)
        assert not torch.allclose(H, H_dense)
        layer = next(l for l in report.layers if l.name == f"model.layers.1.{name}.weight")
        assert layer.reconstruction_error == pytest.approx(relative_error(weight(module), pruned, H), rel=1e-4)


def test_model_without_blocks_is_pruned_layer_by_layer():
    dense = mlp()
    X = torch.randn(64, 16, generator=torch.Generator().manual_seed(1))
    model = copy.deepcopy(dense)
    prune_layerwise(model, (X, torch.zeros(64)), 0.5, method="sparsegpt")
    check = copy.deepcopy(dense)
    check[0].weight.data.copy_(model[0].weight)
    H = manual_gram(check, check[2], [X])
    expected, _ = sparsegpt(weight(dense[2]), H, Budget(0.5))
    torch.testing.assert_close(model[2].weight.detach().double(), expected, rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------- budgets and patterns
@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt", "chita"])
def test_row_layer_and_nm_budgets_hold(method):
    batches = token_batches()
    model = tiny_llama()
    prune_layerwise(model, batches, 0.6, method=method)
    for module in model.modules():
        if hasattr(module, "weight_mask"):
            p = module.weight_mask.shape[1]
            assert (module.weight_mask.sum(dim=1) == p - round(0.6 * p)).all()
            assert ((module.weight != 0) <= module.weight_mask.bool()).all()
    model = tiny_llama()
    report = prune_layerwise(model, batches, 0.6, method=method, per_row=False)
    for layer in report.layers:
        assert layer.numel - layer.nonzeros == round(0.6 * layer.numel)
    model = tiny_llama()
    report = prune_layerwise(model, batches, method=method, pattern="2:4")
    masks = [m.weight_mask for m in model.modules() if hasattr(m, "weight_mask")]
    assert len(masks) == 14 and report.sparsity == 0.5
    for mask in masks:
        assert (mask.reshape(mask.shape[0], -1, 4).sum(dim=2) == 2).all()


def test_lm_head_stays_dense_and_gpt2_conv1d_rows_are_output_columns():
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=100, n_positions=32)
    model = transformers.GPT2LMHeadModel(config).eval()
    report = prune_layerwise(model, token_batches(), method="wanda", pattern="2:4")
    assert report.settings["blocks"] == "transformer.h (2)"
    assert not any("lm_head" in layer.name for layer in report.layers)
    mask = model.transformer.h[0].attn.c_attn.weight_mask  # Conv1D: (in, out)
    assert (mask.T.reshape(mask.shape[1], -1, 4).sum(dim=2) == 2).all()


def test_owl_budgets_average_to_the_target():
    model = tiny_llama(layers=4)
    report = prune_layerwise(model, token_batches(), 0.6, method="wanda", budgets="owl", owl_threshold=3.0,
                             owl_lambda=0.05)
    sparsities = report.settings["owl_sparsities"]
    assert np.mean(sparsities) == pytest.approx(0.6) and max(sparsities) - min(sparsities) == pytest.approx(0.1)
    assert report.sparsity == pytest.approx(0.6, abs=5e-3)  # per-row rounding of 32-wide rows


def test_bert_padding_excluded_and_blocks_found():
    model, batches = tiny_bert(), token_batches()
    report = prune_layerwise(model, batches, 0.5, method="wanda", ignore=["pooler.*"])
    assert report.settings["blocks"] == "encoder.layer (2)" and len(report.layers) == 12
    assert all(0 < layer.reconstruction_error < 1 for layer in report.layers)


# --------------------------------------------------------------------------- methods on one layer
def test_sparsegpt_single_pruned_column_is_the_obs_update():
    p, r = 12, 5
    H = correlated_gram(p)
    W = torch.randn(r, p, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    Hinv = torch.linalg.inv(H)
    for j in (0, 5):
        keep = torch.ones(r, p, dtype=torch.bool)
        keep[:, j] = False
        got, _ = sparsegpt(W, H, Budget(0.0), dampening=0.0, keep=keep, block_size=4)
        F = torch.arange(j, p)  # the sweep has fixed the columns before j
        HFinv = torch.linalg.inv(H[F][:, F]) if j else Hinv
        expected = W.clone()
        expected[:, F] -= (W[:, j] / HFinv[0, 0])[:, None] * HFinv[0][None, :]
        torch.testing.assert_close(got, expected)
        if j == 0:  # the classical OBS formula −w_j/[H⁻¹]_jj · H⁻¹[:, j]
            torch.testing.assert_close(got - W, -(W[:, :1] / Hinv[0, 0]) * Hinv[0][None, :])


def test_sparsegpt_lazy_blocks_do_not_change_the_result():
    """Lazy batch updates are exact: with a fixed mask, or N:M masks chosen group by group, the block size
    does not matter (unstructured masks are chosen per block, so they may)."""
    H, W = correlated_gram(16), torch.randn(6, 16, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    keep = torch.rand(6, 16, generator=torch.Generator().manual_seed(5)) > 0.5
    for budget, fixed in ((Budget(0.5, n=2, m=4), None), (Budget(0.5), keep)):
        results = [sparsegpt(W, H, budget, block_size=b, keep=fixed) for b in (4, 8, 16)]
        for W_b, keep_b in results[1:]:
            torch.testing.assert_close(W_b, results[0][0])
            assert torch.equal(keep_b, results[0][1])


@pytest.mark.parametrize("budget", [Budget(0.5), Budget(0.5, n=2, m=4), Budget(0.7, per_row=False)])
def test_chita_layer_error_at_most_sparsegpt_and_wanda(budget):
    H, W = correlated_gram(16), torch.randn(6, 16, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    errors = {name: relative_error(W, fn(W, H, budget)[0], H) for name, fn in
              (("chita", chita), ("sparsegpt", sparsegpt), ("wanda", wanda))}
    assert errors["chita"] <= min(errors["sparsegpt"], errors["wanda"]) + 1e-12
    W_c, keep = chita(W, H, budget)
    assert int(keep.sum()) == (6 * budget.keep_per_row(16) if budget.per_row else 6 * 16 - round(0.7 * 6 * 16))
    assert not (W_c[~keep] != 0).any()


def test_chita_on_a_model_beats_sparsegpt_and_wanda_on_block_zero():
    batches = token_batches(n_batches=1)
    reports = {m: prune_layerwise(tiny_llama(layers=1), batches, 0.5, method=m,
                                  solver_options={"max_iter": 20} if m == "chita" else None)
               for m in ("chita", "sparsegpt", "wanda")}
    for i, layer in enumerate(reports["chita"].layers):
        best = min(reports["sparsegpt"].layers[i].reconstruction_error, reports["wanda"].layers[i].reconstruction_error)
        assert layer.reconstruction_error <= best + 1e-9
    assert reports["chita"].sparsity == 0.5


def test_a_start_given_in_solver_options_skips_the_penalty_path(monkeypatch):
    import l0reg

    H, W = correlated_gram(16), torch.randn(6, 16, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    calls = []
    original = l0reg.admm_supports
    monkeypatch.setattr(l0reg, "admm_supports", lambda *a, **k: calls.append(1) or original(*a, **k))
    chita(W, H, Budget(0.5))
    assert len(calls) == 1
    W_given, keep = chita(W, H, Budget(0.5), solver_options={"start": None})
    assert len(calls) == 1 and (keep.sum(dim=1) == 8).all()
    assert relative_error(W, W_given, H) <= relative_error(W, sparsegpt(W, H, Budget(0.5))[0], H) + 1e-12


def test_layers_reading_one_input_share_one_eigendecomposition(monkeypatch):
    """q/k/v and gate/up read the same input: one eigendecomposition for each group, one for o and one for down,
    per block (as the Cholesky factor)."""
    from chita_nn.methods.layerwise import api

    calls = []
    original = api._FACTORIZATIONS["eig"]
    monkeypatch.setitem(api._FACTORIZATIONS, "eig", lambda H, d: calls.append(H.shape) or original(H, d))
    prune_layerwise(tiny_llama(layers=2), token_batches(n_batches=1), 0.5, method="chita")
    assert len(calls) == 4 * 2
    prune_layerwise(tiny_llama(layers=2), token_batches(n_batches=1), 0.5, method="chita",
                    solver_options={"start": None})
    assert len(calls) == 4 * 2  # a given start: no penalty path, so no eigendecomposition


# --------------------------------------------------------------------------- atomicity and validation
def test_model_unchanged_when_a_failure_is_injected_midway(monkeypatch):
    model, batches = tiny_llama(), token_batches()
    already = copy.deepcopy(model)
    prune_layerwise(already, batches, 0.3, method="magnitude")  # a reparametrised model too
    for target in (model, already):
        state = {k: v.clone() for k, v in target.state_dict().items()}
        calls = []

        def failing(W, H, budget, calls=calls, **options):
            calls.append(1)
            if len(calls) == 10:  # block 0 written, block 1 half done
                raise RuntimeError("injected")
            return api.magnitude(W, H, budget)

        monkeypatch.setitem(api.METHODS, "magnitude", failing)
        with pytest.raises(RuntimeError, match="injected"):
            prune_layerwise(target, batches, 0.5, method="magnitude")
        after = target.state_dict()
        assert after.keys() == state.keys()
        for key, value in state.items():
            assert torch.equal(after[key], value), key
        q = target.model.layers[0].self_attn.q_proj
        expected = state.get("model.layers.0.self_attn.q_proj.weight_orig", state.get(
            "model.layers.0.self_attn.q_proj.weight")) * state.get("model.layers.0.self_attn.q_proj.weight_mask", 1)
        assert torch.equal(q.weight, expected)


def test_pruning_a_pruned_model_again_updates_its_masks():
    model, batches = tiny_llama(), token_batches()
    prune_layerwise(model, batches, 0.3, method="wanda")
    prune_layerwise(model, batches, 0.6, method="sparsegpt")
    q = model.model.layers[0].self_attn.q_proj
    assert (q.weight_mask.sum(dim=1) == 32 - round(0.6 * 32)).all() and not hasattr(q, "weight_orig_orig")
    assert torch.equal(q.weight, q.weight_orig * q.weight_mask)


@pytest.mark.parametrize("kwargs, match", [
    (dict(sparsity=None, pattern="3:2"), "pattern"),
    (dict(sparsity=0.6, pattern="2:4"), "sparsity"),
    (dict(sparsity=1.5), "sparsity"),
    (dict(sparsity=0.5, method="obc"), "method"),
    (dict(sparsity=0.5, budgets="global"), "budgets"),
    (dict(sparsity=0.5, dampening=-1.0), "dampening"),
    (dict(sparsity=None, pattern="2:4", budgets="owl"), "budgets='owl'"),
])
def test_bad_arguments_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        prune_layerwise(mlp(), torch.randn(8, 16), **kwargs)


def test_width_not_multiple_of_m_and_empty_data():
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4))
    with pytest.raises(ValueError, match=r"pattern='4:8'.*0\.weight has 6 inputs"):
        prune_layerwise(model, torch.randn(8, 6), pattern="4:8")
    with pytest.raises(ValueError, match="data is empty"):
        prune_layerwise(mlp(), torch.randn(0, 16), 0.5)
    with pytest.raises(ValueError, match="no prunable parameters selected"):
        prune_layerwise(mlp(), torch.randn(8, 16), 0.5, targets=["nothing*"])


def test_corrected_target_solves_the_dense_output_fit():
    from chita_nn.methods.layerwise.damping import corrected_target, dampened, ridge

    generator = torch.Generator().manual_seed(0)
    X_d = torch.randn(200, 6, generator=generator, dtype=torch.float64)
    X_p = X_d + 0.1 * torch.randn(200, 6, generator=generator, dtype=torch.float64)
    W_bar = torch.randn(3, 6, generator=generator, dtype=torch.float64)
    H, G = X_p.T @ X_p / 200, X_p.T @ X_d / 200
    W = corrected_target(W_bar, H, G, 0.0)
    expected = torch.linalg.lstsq(X_p, X_d @ W_bar.T).solution.T  # min ‖X_d W̄ᵀ − X_p Wᵀ‖
    torch.testing.assert_close(W, expected)
    torch.testing.assert_close(corrected_target(W_bar, H, H, 0.01), W_bar)  # same inputs: W* = W̄
    lam = ridge(H, 0.01)
    damped = corrected_target(W_bar, H, G, 0.01)
    torch.testing.assert_close(dampened(H, 0.01) @ damped.T, (G + lam * torch.eye(6, dtype=H.dtype)) @ W_bar.T)


def test_error_correction_collects_the_cross_gram_of_dense_and_pruned_inputs():
    torch.manual_seed(0)
    layer = nn.Linear(5, 3)
    x_dense, x_pruned = torch.randn(7, 5), torch.randn(7, 5)
    with GramCollector({"l": layer}, cross=True) as collector:
        collector.batch()
        collector.reference(lambda: layer(x_dense))
        layer(x_pruned)
    torch.testing.assert_close(collector.cross_gram("l"), (x_pruned.T @ x_dense).double() / 7)
    torch.testing.assert_close(collector.gram("l"), (x_pruned.T @ x_pruned).double() / 7)
