"""Bad input to layer-wise pruning and load_pruned: a one-line error naming the argument or the file, and the
model untouched (its state dict bit for bit, key order included, and no prune hook added)."""
import inspect

import pytest
import torch
from torch import nn

import l0reg
from chita_nn import LayerwiseCHITA, load_pruned, magnitude_prune, prune, save_pruned
from chita_nn.methods.layerwise import METHODS, Budget, prune_layerwise
from chita_nn.methods.layerwise.options import solver_option_names

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def mlp(hidden=16, out=4, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, hidden), nn.ReLU(), nn.Linear(hidden, out))


def _snapshot(model):
    return ([(key, value.detach().clone()) for key, value in model.state_dict().items()],
            [list(module._forward_pre_hooks.values()) for module in model.modules()])


def _assert_untouched(model, snapshot):
    state, hooks = snapshot
    after = list(model.state_dict().items())
    assert [key for key, _ in after] == [key for key, _ in state]
    for (key, value), (_, now) in zip(state, after):
        assert value.dtype == now.dtype and torch.equal(value, now), key
    assert [list(module._forward_pre_hooks.values()) for module in model.modules()] == hooks


def _raises_one_line(error, match, call, model):
    snapshot = _snapshot(model) if isinstance(model, nn.Module) else None
    with pytest.raises(error, match=match) as info:
        call()
    assert "\n" not in str(info.value)
    if snapshot is not None:
        _assert_untouched(model, snapshot)


X = torch.randn(32, 8, generator=torch.Generator().manual_seed(1))
NAN = X.clone()
NAN[3, 2] = float("nan")
INF = X.clone()
INF[0, 0] = float("inf")
_VALID = r"(\w+, )*max_iter(, \w+)*"  # the names are checked by test_solver_option_names

# (kwargs over prune_layerwise(mlp(), X, 0.5), error, message)
LAYERWISE = {
    "solver_options unknown": (dict(solver_options={"bogus": 1}), ValueError,
                               rf"^solver_options: unknown option 'bogus'; options \(of l0reg.solve_gram\): {_VALID}$"),
    "solver_options list": (dict(solver_options=[1, 2]), TypeError,
                            "^solver_options must be a dict of l0reg.solve_gram options, got list$"),
    "solver_options str": (dict(solver_options="max_iter=3"), TypeError, "got str$"),
    "solver_options set per layer": (dict(solver_options={"k": 3}), ValueError,
                                     rf"^solver_options: 'k' is set for every layer .*; options: {_VALID}$"),
    "solver_options for wanda": (dict(method="wanda", solver_options={"max_iter": 3}), ValueError,
                                 "^solver_options apply to method='chita' only"),
    "int8 data": (dict(data=[torch.ones(4, 8, dtype=torch.int8)]), ValueError,
                  r"^data: the model cannot run on the inputs of the first batch: RuntimeError: .*dtype.* "
                  r"\(data's inputs are int8, the model's weights float32: pass float32 inputs\)$"),
    "float64 data": (dict(data=X.double()), ValueError, r"data's inputs are float64, .* pass float32 inputs"),
    "int64 data": (dict(data=X.long()), ValueError, r"data's inputs are int64, .* pass float32 inputs"),
    "wrong width": (dict(data=torch.randn(10, 7)), ValueError,
                    r"^data: the model cannot run on the inputs of the first batch: RuntimeError: .*shapes"),
    "dict to a tensor model": (dict(data=[{"x": X}]), ValueError, "^data: the model cannot run on the inputs"),
    "NaN in data": (dict(data=NAN), ValueError, "^data: the inputs of batch 0 contain NaN or infinite values$"),
    "inf in the third batch": (dict(data=[X, X, INF]), ValueError, "^data: the inputs of batch 2 contain NaN"),
    "no samples": (dict(data=[X[:0]]), ValueError, "^data is empty"),
    "model is a string": (dict(model="mlp"), TypeError, "^model must be a torch.nn.Module, got str$"),
    "numpy data": (dict(data=X.numpy()), TypeError, r"^data: batches must hold torch tensors, got a numpy array"),
    "gram_dtype a string": (dict(gram_dtype="float64"), ValueError,
                            "^gram_dtype must be a floating-point torch dtype .*, got 'float64'$"),
    "gram_dtype an integer dtype": (dict(gram_dtype=torch.int32), ValueError, "got torch.int32$"),  # was accepted
}


@pytest.mark.parametrize("case", list(LAYERWISE))
def test_layerwise_bad_input(case):
    kwargs, error, match = LAYERWISE[case]
    kwargs = {"sparsity": 0.5, **kwargs}
    model, data = kwargs.pop("model", mlp()), kwargs.pop("data", X)
    _raises_one_line(error, match, lambda: prune_layerwise(model, data, **kwargs), model)


@pytest.mark.parametrize("case", [case for case in LAYERWISE if "data" in LAYERWISE[case][0]])
def test_layerwise_bad_data_through_prune(case):
    kwargs, error, match = LAYERWISE[case]
    model = mlp()
    _raises_one_line(error, match, lambda: prune(model, kwargs["data"], LayerwiseCHITA(sparsity=0.5)), model)


def test_solver_option_names():
    keywords = set(inspect.signature(l0reg.solve_gram).parameters) - {"H", "W_bar"}
    assert set(solver_option_names()) == keywords - {"C", "lam", "k", "budget", "projection"}
    assert {"start", "max_iter", "swaps"} <= set(solver_option_names())


def test_data_is_iterated_once():
    batches = iter([X[:16], X[16:]])  # a one-shot iterable: the check must not consume it
    report = prune_layerwise(mlp(), batches, 0.5, method="magnitude")
    assert report.settings["calibration_samples"] == 32


# --- the per-layer solvers (public: METHODS[name](W, H, budget)) ---------------------------------------------

W = torch.randn(4, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
H = X.double().T @ X.double() / len(X)

PER_LAYER = {
    "H of another width": (dict(H=H[:7, :7]), ValueError,
                           r"^H must be 8 x 8 \(p = the columns of W\), torch.float64 on cpu as W, got .*\(7, 7\)"),
    "H of another dtype": (dict(H=H.float()), ValueError, "got torch.float32 of shape"),
    "H a numpy array": (dict(H=H.numpy()), TypeError, "^H must be a torch tensor, got ndarray$"),
    "W integer": (dict(W=W.long()), ValueError, "^W must be a 2-D floating-point tensor .*, got torch.int64"),
    "W 1-D": (dict(W=W[0]), ValueError, r"^W must be a 2-D .* of shape \(8,\)$"),
    "budget a float": (dict(budget=0.5), TypeError, r"^budget must be a chita_nn.methods.layerwise.Budget"),
    "N:M not dividing p": (dict(budget=Budget(0.5, n=2, m=3)), ValueError, "^budget 2:3 needs W's columns"),
}
@pytest.mark.parametrize("method, case", [(method, case) for method in METHODS for case in PER_LAYER])
def test_per_layer_solver_bad_input(method, case):
    given, error, match = PER_LAYER[case]
    args = {"W": W, "H": H, "budget": Budget(0.5)} | given
    with pytest.raises(error, match=match):
        METHODS[method](args["W"], args["H"], args["budget"])


@pytest.mark.parametrize("kwargs, match", [
    (dict(sparsity=1.5), r"^Budget: sparsity must be a number in \[0, 1\], got 1.5$"),
    (dict(sparsity="0.5"), "got '0.5'$"),
    (dict(sparsity=0.5, per_row=1), "^Budget: per_row must be True or False, got 1$"),
    (dict(sparsity=0.5, n=3, m=2), "^Budget: an N:M budget needs integers 0 < n < m, got n=3, m=2$"),
    (dict(sparsity=0.5, n=2.0, m=4), "got n=2.0, m=4$"),
])
def test_budget_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Budget(**kwargs)


# --- load_pruned ---------------------------------------------------------------------------------------------

def _saved(path, model):
    magnitude_prune(model, 0.5)
    save_pruned(model, path)
    return path


def _notes(tmp_path):
    (tmp_path / "notes.txt").write_text("results of the run\n")
    return mlp(), tmp_path / "notes.txt", ValueError, r"notes\.txt: not a PyTorch file \(.*\)$"


def _truncated(tmp_path):
    path = _saved(tmp_path / "pruned.pt", mlp())
    path.write_bytes(path.read_bytes()[:300])
    return mlp(), path, ValueError, r"pruned\.pt: not a PyTorch file"


def _plain_state_dict(tmp_path):
    torch.save(mlp().state_dict(), tmp_path / "state.pt")
    return mlp(), tmp_path / "state.pt", ValueError, r"state\.pt: not a file of chita_nn\.save_pruned .*load_state_dict"


def _list(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pt")
    return mlp(), tmp_path / "list.pt", ValueError, r"list\.pt: not a file of chita_nn\.save_pruned"


def _wider_model(tmp_path):  # the case: an 8-32-4 MLP, pruned.pt of an 8-16-4 MLP
    return (mlp(hidden=32), _saved(tmp_path / "pruned.pt", mlp(hidden=16)), ValueError,
            r"pruned\.pt: 0\.bias has shape \(16,\) in the file but \(32,\) in the model .*the model is unchanged$")


def _fewer_outputs(tmp_path):  # the first layer fits: it used to be reparametrised before the second failed
    return (mlp(out=3), _saved(tmp_path / "pruned.pt", mlp(out=4)), ValueError,
            r"pruned\.pt: 2\.bias has shape \(4,\) in the file but \(3,\) in the model")


def _other_names(tmp_path):
    model = nn.Sequential()
    model.add_module("fc1", nn.Linear(8, 16))
    return (model, _saved(tmp_path / "pruned.pt", mlp()), ValueError,
            r"pruned\.pt: holds a mask for 0\.weight, which this model does not have")


def _extra_layer(tmp_path):
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4), nn.Linear(4, 4))
    return (model, _saved(tmp_path / "pruned.pt", mlp()), ValueError,
            r"pruned\.pt: does not fit the model \(missing 3\.bias, 3\.weight; saved from another architecture\?\)")


def _pruned_model_dense_file(tmp_path):  # a reparametrised model, a file without masks
    model = mlp()
    magnitude_prune(model, 0.3)
    torch.save({"state_dict": mlp().state_dict(), "report": None}, tmp_path / "dense.pt")
    return (model, tmp_path / "dense.pt", ValueError,
            r"dense\.pt: does not fit the model \(missing 0\.weight_mask, 0\.weight_orig, 2\.weight_mask \.\.\.; "
            r"not in the model 0\.weight, 2\.weight;")


def _not_a_model(tmp_path):
    return "mlp", _saved(tmp_path / "pruned.pt", mlp()), TypeError, "^model must be a torch.nn.Module, got str$"


def _missing(tmp_path):
    return mlp(), tmp_path / "nope.pt", FileNotFoundError, "nope.pt"


def _path_not_a_path(tmp_path):
    return mlp(), 123, TypeError, "^path must be a file path .*, got int$"


@pytest.mark.parametrize("case", [_notes, _truncated, _plain_state_dict, _list, _wider_model, _fewer_outputs,
                                  _other_names, _extra_layer, _pruned_model_dense_file, _not_a_model, _missing,
                                  _path_not_a_path])
def test_load_pruned_bad_file(tmp_path, case):
    model, path, error, match = case(tmp_path)
    _raises_one_line(error, match, lambda: load_pruned(model, path), model)


def test_save_pruned_names_a_model_that_is_not_one(tmp_path):
    with pytest.raises(TypeError, match="^model must be a torch.nn.Module, got str$"):
        save_pruned("mlp", tmp_path / "pruned.pt")
    assert not (tmp_path / "pruned.pt").exists()


class _FailsToLoadOnce(nn.Linear):
    failed = False

    def _load_from_state_dict(self, *args, **kwargs):
        if not self.failed:
            self.failed = True
            raise RuntimeError("disk on fire")
        super()._load_from_state_dict(*args, **kwargs)


def test_load_pruned_restores_the_model_when_loading_fails_after_the_checks(tmp_path):
    path = _saved(tmp_path / "pruned.pt", mlp())
    model = mlp()
    model[2] = _FailsToLoadOnce(16, 4)
    snapshot = _snapshot(model)
    with pytest.raises(RuntimeError, match="disk on fire"):
        load_pruned(model, path)
    _assert_untouched(model, snapshot)


def test_load_pruned_into_a_pruned_model_of_the_same_shape(tmp_path):
    source = mlp(seed=1)
    path = _saved(tmp_path / "pruned.pt", source)
    model = mlp(seed=2)
    magnitude_prune(model, 0.3)
    load_pruned(model, path)
    assert all(torch.equal(value, source.state_dict()[key]) for key, value in model.state_dict().items())
    assert torch.equal(model(X), source(X))
