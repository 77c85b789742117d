"""Export of pruned models: dense (loadable by the unmodified class), compact (bit mask + values), safetensors;
pruned.pt no longer doubled by float masks; ``chita-nn export`` and its mistakes."""
import pytest
import torch

import chita_nn
from chita_nn.cli import main
from chita_nn.core.export import STATE_FORMATS, dense_state_dict, export, load_export, load_state
from chita_nn.core.writeback import load_pruned, save_pruned
from chita_nn.methods.oneshot import magnitude_prune
from chita_nn.zoo.models import DigitsMLP


def pruned_model(sparsity, seed=0):
    torch.manual_seed(seed)
    model = DigitsMLP()
    magnitude_prune(model, sparsity)
    return model


def _same_outputs(a, b):
    x = torch.randn(7, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return torch.equal(a(x), b(x))


@pytest.mark.parametrize("fmt", STATE_FORMATS)
def test_export_loads_into_the_unmodified_model_class(fmt, tmp_path):
    model = pruned_model(0.9)
    export(model, tmp_path / "m", fmt)
    state = load_export(tmp_path / "m")
    assert not any(key.endswith(("_orig", "_mask")) for key in state)
    fresh = DigitsMLP()
    fresh.load_state_dict(state)  # strict: the keys of the plain class
    assert _same_outputs(fresh, model)
    assert all(torch.equal(state[k], v) for k, v in dense_state_dict(model).items())


def test_fresh_model_loads_dense_export_with_plain_torch(tmp_path):
    model = pruned_model(0.8)
    export(model, tmp_path / "dense.pt", "dense")
    fresh = DigitsMLP()
    fresh.load_state_dict(torch.load(tmp_path / "dense.pt", weights_only=True))
    assert _same_outputs(fresh, model) and float((fresh.fc1.weight == 0).float().mean()) > 0.5


def test_safetensors_file_is_standard(tmp_path):
    from safetensors.torch import load_file

    model = pruned_model(0.7)
    export(model, tmp_path / "m.safetensors", "safetensors")
    assert set(load_file(str(tmp_path / "m.safetensors"))) == set(DigitsMLP().state_dict())


@pytest.mark.parametrize("sparsity", [0.5, 0.7, 0.9])
def test_compact_is_smaller_than_dense_and_exact(sparsity, tmp_path):
    model = pruned_model(sparsity)
    dense = export(model, tmp_path / "d.pt", "dense")
    compact = export(model, tmp_path / "c.pt", "compact")
    assert compact < dense
    restored = load_export(tmp_path / "c.pt")
    expected = dense_state_dict(model)
    assert list(restored) == list(expected) and all(torch.equal(restored[k], expected[k]) for k in expected)


def test_export_accepts_an_unpruned_model_and_leaves_the_model_alone(tmp_path):
    model = DigitsMLP()
    keys = list(model.state_dict())
    export(model, tmp_path / "c.pt", "compact")
    assert list(model.state_dict()) == keys
    assert all(torch.equal(load_export(tmp_path / "c.pt")[k], v) for k, v in model.state_dict().items())


def test_pruned_file_is_not_doubled_by_the_masks(tmp_path):
    model = pruned_model(0.9)
    save_pruned(model, tmp_path / "pruned.pt")
    dense = export(model, tmp_path / "dense.pt", "dense")
    assert (tmp_path / "pruned.pt").stat().st_size < 1.4 * dense
    assert load_state(tmp_path / "pruned.pt")["fc1.weight_mask"].dtype == torch.bool
    fresh = DigitsMLP()
    load_pruned(fresh, tmp_path / "pruned.pt")
    assert fresh.fc1.weight_mask.dtype == torch.float32 and _same_outputs(fresh, model)


def test_bad_format_is_refused(tmp_path):
    with pytest.raises(ValueError, match="format"):
        export(DigitsMLP(), tmp_path / "x", "onnx")


def test_package_exports():
    assert chita_nn.export is export and chita_nn.load_export is load_export


@pytest.mark.parametrize("fmt", STATE_FORMATS)
def test_cli_export_writes_each_format(fmt, tmp_path, capsys):
    save_pruned(pruned_model(0.9), tmp_path / "pruned.pt")
    assert main(["export", str(tmp_path / "pruned.pt"), "--format", fmt]) == 0
    written = next(p for p in tmp_path.iterdir() if p.name != "pruned.pt")
    assert "wrote" in capsys.readouterr().out and written.name.startswith("pruned.")
    DigitsMLP().load_state_dict(load_export(written))


def _pruned(tmp_path):
    save_pruned(pruned_model(0.9), tmp_path / "pruned.pt")
    return tmp_path / "pruned.pt"


def _missing(tmp_path):
    return ["export", str(tmp_path / "nope.pt")], "nope.pt"


def _folder(tmp_path):
    (tmp_path / "dir.pt").mkdir()
    return ["export", str(tmp_path / "dir.pt")], "dir.pt"


def _garbage(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"\x00junk" * 100)
    return ["export", str(tmp_path / "junk.pt"), "--out", str(tmp_path / "o.pt")], "junk.pt"


def _truncated(tmp_path):
    path = _pruned(tmp_path)
    path.write_bytes(path.read_bytes()[:500])
    return ["export", str(path), "--out", str(tmp_path / "o.pt")], "pruned.pt"


def _not_weights(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pt")
    return ["export", str(tmp_path / "list.pt"), "--out", str(tmp_path / "o.pt")], "list.pt"


def _out_is_folder(tmp_path):
    (tmp_path / "o").mkdir()
    return ["export", str(_pruned(tmp_path)), "--out", str(tmp_path / "o")], "--out"


def _out_exists(tmp_path):
    (tmp_path / "o.pt").write_bytes(b"old")
    return ["export", str(_pruned(tmp_path)), "--out", str(tmp_path / "o.pt")], "--overwrite"


def _out_below_a_file(tmp_path):
    (tmp_path / "f").write_bytes(b"x")
    return ["export", str(_pruned(tmp_path)), "--out", str(tmp_path / "f" / "o.pt")], "--out"


def _bad_format(tmp_path):
    return ["export", str(_pruned(tmp_path)), "--format", "onnx"], "--format"


EXPORT_MISTAKES = [_missing, _folder, _garbage, _truncated, _not_weights, _out_is_folder, _out_exists,
                   _out_below_a_file, _bad_format]


@pytest.mark.parametrize("make", EXPORT_MISTAKES, ids=[f.__name__ for f in EXPORT_MISTAKES])
def test_cli_export_mistakes(make, tmp_path, capsys):
    argv, needle = make(tmp_path)
    before = sorted((p.name, p.stat().st_size) for p in tmp_path.rglob("*"))
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("chita-nn: error: ") and needle in lines[0], err
    assert "Traceback" not in err
    assert sorted((p.name, p.stat().st_size) for p in tmp_path.rglob("*")) == before
