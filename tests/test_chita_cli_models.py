"""``chita-nn prune`` on a user's model given as module:callable, with dict batches and an N:M pattern."""
import textwrap

import pytest
import torch

from chita_nn.cli import main

FACTORY = textwrap.dedent('''
    import torch
    from torch import nn


    class DictEncoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(30, 16)
            self.proj = nn.Linear(16, 16)
            self.out = nn.Linear(16, 8)

        def forward(self, features):
            h = self.embed(features["input_ids"]) * features["attention_mask"].unsqueeze(-1)
            return {"sentence_embedding": self.out(torch.tanh(self.proj(h)).mean(dim=1))}


    def make_model():
        torch.manual_seed(0)
        return DictEncoder()


    def make_data():
        g = torch.Generator().manual_seed(0)
        return [{"input_ids": torch.randint(0, 30, (8, 6), generator=g),
                 "attention_mask": torch.ones(8, 6, dtype=torch.long)} for _ in range(4)]


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
