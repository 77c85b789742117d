"""Smoke tests of the chita-nn command line."""
import json

from chita_nn.cli import main
from chita_nn.core.writeback import load_pruned
from chita_nn.zoo.models import DigitsMLP

SMALL = ["--n-rows", "100", "--samples-per-row", "4", "--stages", "2"]


def test_demo_prints_table(capsys):
    assert main(["demo", "--sparsities", "0.8", "--epochs", "10", *SMALL]) == 0
    out = capsys.readouterr().out
    assert "magnitude" in out and "chita++" in out and "0.80" in out


def test_prune_digits_saves_model_and_report(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["prune", "--model", "digits", "--sparsity", "0.9", "--method", "chita", "--out", str(out),
                 "--epochs", "10", *SMALL]) == 0
    text = capsys.readouterr().out
    assert "test accuracy" in text and "fc1.weight" in text
    report = json.loads((out / "report.json").read_text())
    assert abs(report["sparsity"] - 0.9) < 1e-3 and report["method"] == "chita"
    model = DigitsMLP()
    assert load_pruned(model, out / "pruned.pt")["method"] == "chita"
    assert hasattr(model.fc1, "weight_mask") and int(sum(m.weight_mask.sum() for m in
                                                        (model.fc1, model.fc2, model.fc3))) == report["nonzeros"]


def test_prune_excludes_parameters_and_takes_the_score(tmp_path):
    out = tmp_path / "run"
    assert main(["prune", "--model", "digits", "--sparsity", "0.8", "--method", "chita", "--out", str(out),
                 "--epochs", "5", "--block-size", "512", "--score", "magnitude", "--exclude", "fc3.*",
                 *SMALL]) == 0
    report = json.loads((out / "report.json").read_text())
    assert [layer["name"] for layer in report["layers"]] == ["fc1.weight", "fc2.weight"]
    assert report["settings"]["score"] == "magnitude"
    model = DigitsMLP()
    load_pruned(model, out / "pruned.pt")
    assert not hasattr(model.fc3, "weight_mask") and bool((model.fc3.weight != 0).all())


def test_bad_sparsity_is_a_clean_error(tmp_path, capsys):
    assert main(["prune", "--model", "digits", "--sparsity", "1.5", "--out", str(tmp_path), "--epochs", "1",
                 *SMALL]) == 2
    assert "sparsity" in capsys.readouterr().err
