"""Every supported weight type: selection, Fisher rows equal to a one-row-at-a-time autograd loop (kernel or
fallback, m = 1 and m = 3), and masks that round-trip through write-back, forward and ``prune.remove``."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

from chita_nn.core.fisher import empirical_fisher
from chita_nn.core.grad_rows import _conv_rows, row_kernel
from chita_nn.core.params import DEFAULT_TARGETS, select_parameters
from chita_nn.core.writeback import write_weights
from test_chita_fisher import assert_rows_close, dense_copy, reference_rows

pytestmark = [pytest.mark.usefixtures("torch_single_thread"),
              pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel"),
              pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")]

N_ROWS = 4


class ConvNet1d(nn.Module):
    """Conv1d with 'same' padding of an even kernel, a grouped strided circular one, a depthwise dilated one."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv1d(3, 4, 4, padding="same")
        self.conv2 = nn.Conv1d(4, 6, 3, stride=2, padding=1, groups=2, padding_mode="circular")
        self.conv3 = nn.Conv1d(6, 6, 3, dilation=2, groups=6, padding="valid", bias=False)
        self.fc = nn.Linear(6 * 3, 5)

    def forward(self, x):
        x = torch.tanh(self.conv2(torch.tanh(self.conv1(x))))
        return self.fc(torch.tanh(self.conv3(x)).flatten(1))


class ConvNet2d(nn.Module):
    """MobileNet-like Conv2d: a plain one, a depthwise strided dilated one, a grouped (groups=2) 'same' one, a
    depthwise one with a channel multiplier and asymmetric stride/padding."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.depthwise = nn.Conv2d(8, 8, 3, stride=2, padding=2, dilation=2, groups=8)
        self.grouped = nn.Conv2d(8, 8, 3, padding="same", groups=2, bias=False)
        self.multiplier = nn.Conv2d(8, 16, (3, 2), stride=(1, 2), padding=(0, 1), groups=8)
        self.fc = nn.Linear(16 * 2 * 3, 5)

    def forward(self, x):
        for conv in (self.conv1, self.depthwise, self.grouped, self.multiplier):
            x = torch.tanh(conv(x))
        return self.fc(x.flatten(1))


class ConvNet3d(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv3d(2, 4, 3, padding=1, padding_mode="replicate")
        self.conv2 = nn.Conv3d(4, 4, (2, 3, 1), stride=(1, 2, 1), groups=2)
        self.fc = nn.Linear(4 * 4 * 2 * 4, 5)

    def forward(self, x):
        return self.fc(torch.tanh(self.conv2(torch.tanh(self.conv1(x)))).flatten(1))


class TinyGPT2(nn.Module):
    """GPT-2 (Conv1D layers, tied token embedding, broadcast position embedding); logits (B, vocab, T)."""

    def __init__(self):
        super().__init__()
        transformers = pytest.importorskip("transformers")
        config = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=16)
        self.lm = transformers.GPT2LMHeadModel(config)

    def forward(self, ids):
        return self.lm(ids).logits.transpose(1, 2)


class Attention(nn.Module):
    """A Linear on tokens, a TransformerEncoderLayer (sequence-first unless ``batch_first``), mean pooling."""

    def __init__(self, batch_first=True):
        super().__init__()
        self.proj = nn.Linear(6, 8)
        self.layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, batch_first=batch_first)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        h = self.proj(x)
        if self.layer.self_attn.batch_first:
            h = self.layer(h)
        else:
            h = self.layer(h.transpose(0, 1)).transpose(0, 1)
        return self.head(h.mean(1))


class Recurrent(nn.Module):
    """A bidirectional two-layer GRU, or an LSTM with projections run sequence-first; last step classified."""

    def __init__(self, kind="GRU"):
        super().__init__()
        if kind == "GRU":
            self.rnn = nn.GRU(6, 8, num_layers=2, bidirectional=True, batch_first=True)
            features = 16
        else:
            self.rnn = nn.LSTM(6, 8, proj_size=4)
            features = 4
        self.head = nn.Linear(features, 5)

    def forward(self, x):
        if self.rnn.batch_first:
            return self.head(self.rnn(x)[0][:, -1])
        return self.head(self.rnn(x.transpose(0, 1))[0][-1])


class Kernel(nn.Module):
    """A custom layer without a per-sample kernel: ``tanh(x K)`` with a plain ``nn.Parameter`` ``K``."""

    def __init__(self, d_in, d_out):
        super().__init__()
        self.kernel = nn.Parameter(torch.randn(d_in, d_out) / d_in ** 0.5)

    def forward(self, x):
        return torch.tanh(x @ self.kernel)


class CustomParam(nn.Module):
    """A Linear, a :class:`Kernel` block on tokens, mean pooling, a Linear head."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(6, 8)
        self.block = Kernel(8, 8)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        return self.head(self.block(self.proj(x)).mean(1))


class TokenTagger(nn.Module):
    """A class per token: logits (B, classes, T) from (B, T, d) inputs."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 8)
        self.fc2 = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x))).transpose(1, 2)


class BagOfEmbeddings(nn.Module):
    """Token ids (B, T) → embeddings averaged over tokens → Linear; options go to the ``nn.Embedding``."""

    def __init__(self, bag=False, **options):
        super().__init__()
        self.embed = nn.EmbeddingBag(12, 8, mode="mean") if bag else nn.Embedding(12, 8, **options)
        self.fc = nn.Linear(8, 5)

    def forward(self, ids):
        h = self.embed(ids)
        return self.fc(torch.tanh(h if isinstance(self.embed, nn.EmbeddingBag) else h.mean(1)))


def _tokens_targets(n, tokens=7, vocab=12, classes=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n, tokens), generator=g), torch.randint(0, classes, (n,), generator=g)


def _inputs(shape, n, classes=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g), torch.randint(0, classes, (n,), generator=g)


def _token_loss(output, target):
    """Per-sample mean cross-entropy over all tokens of (B, vocab, T) logits."""
    return F.cross_entropy(output, target, reduction="none").mean(1)


def _gpt2_data(n):
    ids = _tokens_targets(n + 1, tokens=9, vocab=50)[0][:n]
    return ids[:, :-1], ids[:, 1:]


# name → (model factory, selection options, data(n), loss_fn, which parameters must take the fallback)
CASES = {
    "conv1d": (ConvNet1d, {}, lambda n: _inputs((3, 14), n), None, set()),
    "conv2d": (ConvNet2d, {}, lambda n: _inputs((3, 8, 8), n), None, set()),
    "conv3d": (ConvNet3d, {}, lambda n: _inputs((2, 5, 5, 4), n), None, set()),
    "gpt2": (TinyGPT2, {"targets": [*DEFAULT_TARGETS, "Embedding"], "ignore": ["*lm_head", "*wpe"]},
             _gpt2_data, _token_loss, {"lm.transformer.wte.weight"}),
    "attention": (Attention, {}, lambda n: _inputs((5, 6), n), None,
                  {"layer.self_attn.in_proj_weight", "layer.self_attn.out_proj.weight"}),
    "attention_seq_first": (lambda: Attention(batch_first=False), {}, lambda n: _inputs((5, 6), n), None,
                            {"layer.self_attn.in_proj_weight", "layer.self_attn.out_proj.weight",
                             "layer.linear1.weight", "layer.linear2.weight"}),
    "gru": (Recurrent, {"targets": ["GRU", "Linear"]}, lambda n: _inputs((5, 6), n), None,
            {f"rnn.weight_{kind}_l{layer}{suffix}" for kind in ("ih", "hh") for layer in (0, 1)
             for suffix in ("", "_reverse")}),
    "lstm": (lambda: Recurrent("LSTM"), {"targets": ["LSTM"]}, lambda n: _inputs((5, 6), n), None,
             {"rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.weight_hr_l0"}),
    # parameters named by a pattern, on modules of any type
    "gru_by_name": (Recurrent, {"targets": ["re:.*\\.weight_ih_l0"]}, lambda n: _inputs((5, 6), n), None,
                    {"rnn.weight_ih_l0"}),
    "lstm_by_name": (lambda: Recurrent("LSTM"), {"targets": ["rnn.weight_hh_l0", "re:.*_hr_l.", "head.weight"]},
                     lambda n: _inputs((5, 6), n), None, {"rnn.weight_hh_l0", "rnn.weight_hr_l0"}),
    "in_proj_by_name": (Attention, {"targets": ["layer.self_attn.in_proj_weight", "proj"]},
                        lambda n: _inputs((5, 6), n), None, {"layer.self_attn.in_proj_weight"}),
    "custom_param": (CustomParam, {"targets": ["block.kernel", "head"]}, lambda n: _inputs((5, 6), n), None,
                     {"block.kernel"}),
    "embedding": (lambda: BagOfEmbeddings(padding_idx=0), {"targets": ["Embedding", "Linear"]},
                  _tokens_targets, None, set()),
    "embedding_freq": (lambda: BagOfEmbeddings(scale_grad_by_freq=True), {"targets": ["Embedding"]},
                       _tokens_targets, None, set()),
    "embedding_max_norm": (lambda: BagOfEmbeddings(max_norm=1.0), {"targets": ["Embedding"]}, _tokens_targets,
                           None, {"embed.weight"}),
    "embedding_bag": (lambda: BagOfEmbeddings(bag=True), {"targets": ["EmbeddingBag"]}, _tokens_targets, None,
                      {"embed.weight"}),
}


def _make(case):
    torch.manual_seed(0)
    return CASES[case][0]()


def _fisher(model, params, case, X, y, m):
    return empirical_fisher(model, params, (X, y), n_rows=N_ROWS, samples_per_row=m, loss_fn=CASES[case][3],
                            batch_size=2 * m)


# --- selection ---------------------------------------------------------------------------------------------

def test_selection_of_each_type():
    names = lambda model, **options: [pp.name for pp in select_parameters(model, **options)]  # noqa: E731
    assert names(Attention()) == ["proj.weight", "layer.self_attn.in_proj_weight",
                                  "layer.self_attn.out_proj.weight", "layer.linear1.weight",
                                  "layer.linear2.weight", "head.weight"]
    separate = nn.MultiheadAttention(8, 2, kdim=4, vdim=6)
    assert names(separate) == ["q_proj_weight", "k_proj_weight", "v_proj_weight", "out_proj.weight"]
    assert names(Recurrent("LSTM")) == ["head.weight"]  # recurrent layers on request only
    assert names(Recurrent("LSTM"), targets=["LSTM"]) == ["rnn.weight_ih_l0", "rnn.weight_hh_l0",
                                                          "rnn.weight_hr_l0"]
    assert names(nn.GRUCell(3, 4), targets=[nn.GRUCell]) == ["weight_ih", "weight_hh"]
    assert names(BagOfEmbeddings()) == ["fc.weight"]  # embeddings on request only
    assert names(BagOfEmbeddings(), targets=["Embedding"]) == ["embed.weight"]
    assert names(ConvNet3d(), targets=["re:conv.*"]) == ["conv1.weight", "conv2.weight"]
    gru = Recurrent()
    prune.random_unstructured(gru.rnn, "weight_hh_l1", amount=0.5)  # reparametrised: same names, same order
    assert names(gru, targets=["GRU"]) == [f"rnn.weight_{kind}_l{layer}{suffix}" for layer in (0, 1)
                                           for suffix in ("", "_reverse") for kind in ("ih", "hh")]


def test_selection_by_parameter_name():
    """A pattern matching a full parameter name selects that tensor on any module (2+ dims, or 1-d by its exact
    name); a pattern matching a module name selects the module's prunable tensors among the target types."""
    def names(model, *targets, **options):
        return [pp.name for pp in select_parameters(model, targets=list(targets), **options)]

    gru = Recurrent()
    assert names(gru, "re:.*\\.weight_ih_l0") == ["rnn.weight_ih_l0"]
    assert names(gru, "rnn.weight_hh_l1_reverse", "head") == ["rnn.weight_hh_l1_reverse", "head.weight"]
    assert names(gru, "re:rnn\\.weight_.*") == [f"rnn.weight_{kind}_l{layer}{suffix}" for layer in (0, 1)
                                                 for suffix in ("", "_reverse") for kind in ("ih", "hh")]
    assert names(gru, "re:rnn\\.weight_.*", ignore=["*_reverse"]) == [
        "rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.weight_ih_l1", "rnn.weight_hh_l1"]
    attention = Attention()
    assert names(attention, "*.in_proj_weight") == ["layer.self_attn.in_proj_weight"]
    # biases and norm scales (1-d) only by their exact name; a module pattern never picks them
    assert names(attention, "*.weight") == ["proj.weight", "layer.self_attn.out_proj.weight",
                                            "layer.linear1.weight", "layer.linear2.weight", "head.weight"]
    assert names(attention, "head.bias", "layer.norm1.weight") == ["layer.norm1.weight", "head.bias"]
    assert names(attention, "head*") == names(attention, "head.*") == ["head.weight"]
    custom = CustomParam()
    assert names(custom, "block.kernel") == ["block.kernel"]
    # with types too, a pattern picks among the modules of those types
    assert names(custom, "Kernel", "block.kernel") == ["block.kernel"]
    assert names(custom, "Linear", "re:.*") == ["proj.weight", "head.weight"]
    prune.random_unstructured(custom.block, "kernel", amount=0.5)  # reparametrised: still its own name
    (pp,) = select_parameters(custom, targets=["block.kernel"])
    assert (pp.module, pp.param_name, pp.is_reparametrized) == (custom.block, "kernel", True)
    assert row_kernel(pp) is None


def test_unmatched_target_is_named():
    """The error says which pattern found nothing, and why."""
    model = CustomParam()
    cases = {"foo": "'foo' matched no module or parameter name",
             "*.bias": "'\\*.bias' matched only parameters of fewer than 2 dims",
             "block": "'block' matched modules .* of type \\['Kernel'\\]",
             "proj.weight": "'proj.weight' matched only ignored parameters"}
    for target, message in cases.items():
        with pytest.raises(ValueError, match="no prunable parameters selected .*" + message):
            select_parameters(model, targets=[target], ignore=["proj"])


def test_kernels_only_where_hooks_see_every_sample():
    """Tied weights and layers inside a ``batch_first=False`` module take the fallback; the rest a kernel."""
    for case, (_, options, _, _, fallback) in CASES.items():
        if case == "gpt2":
            pytest.importorskip("transformers")
        params = select_parameters(_make(case), **options)
        assert {pp.name for pp in params if row_kernel(pp) is None} == fallback, case


# --- Fisher rows vs. plain autograd ------------------------------------------------------------------------

@pytest.mark.parametrize("m", [1, 3])
@pytest.mark.parametrize("case", CASES)
def test_fisher_rows_match_autograd(case, m):
    model = _make(case)
    _, options, data, _, _ = CASES[case]
    params = select_parameters(model, **options)
    X, y = data(N_ROWS * m)
    fs = _fisher(model, params, case, X, y, m)
    assert_rows_close(fs.A, reference_rows(model, params, X, y, m))


def test_depthwise_and_grouped_conv2d_use_the_kernel():
    """Depthwise (groups = in_channels, with and without a channel multiplier) and grouped Conv2d take the
    grouped-convolution kernel, not the fallback (their rows are compared to autograd by the case "conv2d")."""
    params = select_parameters(_make("conv2d"))
    assert [pp.module.groups for pp in params[:4]] == [1, 8, 2, 8]
    assert all(row_kernel(pp) is _conv_rows for pp in params[:4])


def test_linear_kernel_on_tokens_matches_autograd():
    """Linear on (B, T, d) inputs with a loss over all tokens: the kernel sums δ_tᵀ x_t over the tokens."""
    model = TokenTagger()
    params = select_parameters(model)
    assert all(row_kernel(pp) is not None for pp in params)
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(N_ROWS * 3, 7, 6, generator=g), torch.randint(0, 5, (N_ROWS * 3, 7), generator=g)
    fs = empirical_fisher(model, params, (X, y), n_rows=N_ROWS, samples_per_row=3, loss_fn=_token_loss)
    assert_rows_close(fs.A, reference_rows(model, params, X, y, 3))


def test_sparse_embedding_gives_dense_rows():
    """``sparse=True`` changes only how autograd stores the gradient: the kernel's rows are those of the dense."""
    X, y = _tokens_targets(N_ROWS * 3)
    rows = []
    for sparse in (False, True):
        model = _make("embedding")
        model.embed.sparse = sparse
        rows.append(_fisher(model, select_parameters(model, targets=["Embedding"]), "embedding", X, y, 3).A)
    assert (rows[0] == rows[1]).all() and (rows[0] != 0).any()


def test_broadcast_input_is_refused():
    """GPT-2's position embedding sees (1, T) ids, not the batch: its kernel refuses rather than mixing rows."""
    model = _make("gpt2")
    params = select_parameters(model, targets=["Embedding"], ignore=["*wte"])
    X, y = _gpt2_data(N_ROWS)
    with pytest.raises(ValueError, match="batch first"):
        _fisher(model, params, "gpt2", X, y, 1)


# --- masks -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", [case for case in CASES if case != "embedding_max_norm"])
def test_masks_round_trip(case):
    """Masks on every type: forward uses the masked weights, the rows are those of the dense equivalent,
    ``prune.remove`` keeps the masked values."""
    model = _make(case)
    _, options, data, _, _ = CASES[case]
    if case == "gpt2":  # the tied token embedding would be masked for the lookup only, not for lm_head
        options = {**options, "ignore": [*options["ignore"], "*wte"]}
    params = select_parameters(model, **options)
    g = torch.Generator().manual_seed(1)
    masks = [(torch.rand(pp.shape, generator=g) > 0.4).float() for pp in params]
    values = [pp.tensor().detach().clone() for pp in params]
    write_weights(params, values, masks)
    X, y = data(N_ROWS * 3)
    dense = dense_copy(model, _make(case))
    for pp, value, keep in zip(params, values, masks):
        assert pp.is_reparametrized and torch.equal(pp.tensor(), value * keep)
    with torch.no_grad():
        model.eval()
        dense.eval()
        out = model(X)
        torch.testing.assert_close(out, dense(X))
    params = select_parameters(model, **options)
    fs = _fisher(model, params, case, X, y, 3)
    assert_rows_close(fs.A, reference_rows(dense, select_parameters(dense, **options), X, y, 3))
    for pp in params:
        prune.remove(pp.module, pp.param_name)
        assert isinstance(getattr(pp.module, pp.param_name), nn.Parameter)
    with torch.no_grad():
        torch.testing.assert_close(model(X), out)


# --- end to end --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["chita", "magnitude"])
@pytest.mark.parametrize("case", ["gru_by_name", "lstm_by_name", "in_proj_by_name", "custom_param"])
def test_prune_parameters_named_by_pattern(case, method):
    """``prune`` on tensors selected by name (recurrent, attention, custom): half of them zero, masks
    installed as ``<name>_mask``, ``prune.remove`` keeps the pruned values."""
    from chita_nn import CHITA, Magnitude
    from chita_nn.methods.oneshot import prune as prune_model

    model = _make(case)
    _, options, data, _, _ = CASES[case]
    X, y = data(16)
    others = {name: p.detach().clone() for name, p in model.named_parameters()}
    recipe = (CHITA(sparsity=0.5, targets=options["targets"], n_rows=8, samples_per_row=2, line_search=False)
              if method == "chita" else Magnitude(sparsity=0.5, targets=options["targets"]))
    report = prune_model(model, (X, y), recipe)
    params = select_parameters(model, **options)
    assert [layer.name for layer in report.layers] == [pp.name for pp in params]
    kept = sum(int(pp.tensor().count_nonzero()) for pp in params)
    assert kept == sum(pp.numel for pp in params) // 2
    with torch.no_grad():
        out = model(X)
    for pp in params:
        assert pp.is_reparametrized and hasattr(pp.module, pp.param_name + "_mask")
        prune.remove(pp.module, pp.param_name)
        assert isinstance(getattr(pp.module, pp.param_name), nn.Parameter)
    unselected = {name: p for name, p in model.named_parameters() if name not in {pp.name for pp in params}}
    assert all(torch.equal(p, others[name]) for name, p in unselected.items())
    with torch.no_grad():
        torch.testing.assert_close(model(X), out)
