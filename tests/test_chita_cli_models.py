"""``chita-nn prune`` on a user's model given as module:callable, with dict batches and an N:M pattern."""
import textwrap

import pytest
import torch

from chita_nn.cli import main

FACTORY = textwrap.dedent('''
    import torch

    from test_chita_any_model import DictEncoder, _token_batches


    def make_model():
        torch.manual_seed(0)
        return DictEncoder()


    def make_data():
        return _token_batches(n_batches=4)


    def broken():
        raise RuntimeError("no model today")
''')


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "usermodels.py").write_text(FACTORY)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_prune_a_dict_model_given_as_module_callable(user_module, capsys):
    out = user_module / "run"
    code = main(["prune", "--model", "usermodels:make_model", "--data", "usermodels:make_data", "--loss",
                 "distillation-cosine", "--pattern", "2:4", "--method", "chita", "--n-rows", "16",
                 "--samples-per-row", "1", "--targets", "Linear", "--out", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    state = torch.load(out / "pruned.pt", weights_only=True)["state_dict"]
    masks = {k: v for k, v in state.items() if k.endswith("weight_mask")}
    assert set(masks) == {"proj.weight_mask", "out.weight_mask"}
    for mask in masks.values():
        assert bool((mask.reshape(-1, 4).sum(dim=1) == 2).all())
    assert (out / "report.json").exists()


@pytest.mark.parametrize("argv,message", [
    (["--model", "usermodels:make_model", "--sparsity", "0.5"], "needs --data"),
    (["--model", "usermodels:nothing", "--data", "usermodels:make_data", "--sparsity", "0.5"], "no attribute"),
    (["--model", "nomodule:make", "--data", "usermodels:make_data", "--sparsity", "0.5"], "cannot import"),
    (["--model", "usermodels:broken", "--data", "usermodels:make_data", "--sparsity", "0.5"], "no model today"),
    (["--model", "usermodels:make_model", "--data", "usermodels:make_data"], "--sparsity is required"),
    (["--model", "usermodels:make_model", "--data", "usermodels:make_data", "--pattern", "5:4"], "0 < N < M"),
    (["--model", "usermodels:make_model", "--data", "usermodels:make_data", "--pattern", "2:4",
      "--sparsity", "0.7"], "contradicts"),
    (["--model", "resnet", "--sparsity", "0.5"], "--model"),
])
def test_user_model_mistakes_are_one_line_errors(user_module, capsys, argv, message):
    code = main(["prune", *argv, "--loss", "distillation-mse", "--method", "chita", "--n-rows", "8",
                 "--samples-per-row", "1", "--out", str(user_module / "bad"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err
    assert not (user_module / "bad" / "pruned.pt").exists()
