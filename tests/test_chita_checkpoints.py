"""Checkpoints of gradual runs (checksummed, last two kept, verified on resume) and the run's input checks.

The corpus: each way of damaging a checkpoint makes ``chita-nn gradual`` refuse with one line naming both
checkpoint files when both are damaged, and fall back to the previous checkpoint (with a warning, and the same
final weights as the uninterrupted run) when only the newest one is.
"""
import hashlib
import logging
import shutil
from pathlib import Path

import pytest
import torch

from chita_nn.cli import main
from chita_nn.methods import checkpoints
from chita_nn.methods.checkpoints import CHECKPOINT, PREVIOUS, CheckpointError, digest, read_checkpoint
from chita_nn.methods.gradual import GradualConfig, run_gradual
from chita_nn.zoo.datasets import load_digits_data
from chita_nn.zoo.models import DigitsMLP

RECIPE = """
seed = 1
[model]
name = "digits"
[schedule]
target_sparsity = 0.8
initial_sparsity = 0.5
epochs = 3
prune_every = 1
n_events = 2
[optimizer]
lr = 0.01
batch_size = 64
[prune]
method = "magnitude"
"""


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("finished")
    recipe = root / "recipe.toml"
    recipe.write_text(RECIPE)
    assert main(["gradual", str(recipe), "--out", str(root / "out"), "--no-progress", "-q"]) == 0
    return recipe, root / "out"


def _copy(finished_run, tmp_path):
    recipe, out = finished_run
    shutil.copytree(out, tmp_path / "out")
    return recipe, tmp_path / "out"


def _contents(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in Path(folder).iterdir()}


def _state(path):
    return torch.load(path, weights_only=True)


def _empty(path):
    path.write_bytes(b"")


def _half(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _ten_bytes(path):
    path.write_bytes(path.read_bytes()[:10])


def _garbage(path):
    path.write_bytes(bytes(range(256)) * 64)


def _text(path):
    path.write_text("epoch = 3\n")


def _flipped_tensor_byte(path):
    """Flip one byte inside the stored data of fc1.weight_orig (torch.save does not compress)."""
    data = bytearray(path.read_bytes())
    raw = _state(path)["model"]["fc1.weight_orig"].numpy().tobytes()
    start = data.find(raw[:256])
    assert start > 0
    data[start + 101] ^= 0x10
    path.write_bytes(bytes(data))


def _zeroed_tail(path):
    data = path.read_bytes()
    path.write_bytes(data[:-64] + bytes(64))


def _resaved(change):
    def damage(path):
        state = _state(path)
        change(state)
        torch.save(state, path)
    damage.__name__ = change.__name__
    return damage


def _missing_optimizer(state):
    del state["optimizer"]
    state["sha256"] = digest({k: v for k, v in state.items() if k != "sha256"})


def _no_checksum(state):
    del state["sha256"]


def _wrong_checksum(state):
    state["sha256"] = "0" * 64


def _tampered_epoch(state):
    state["epoch"] -= 1


def _not_a_dict(path):
    torch.save([1, 2, 3], path)


def _a_directory(path):
    path.unlink()
    path.mkdir()


DAMAGE = [_empty, _half, _ten_bytes, _garbage, _text, _flipped_tensor_byte, _zeroed_tail,
          _resaved(_missing_optimizer), _resaved(_no_checksum), _resaved(_wrong_checksum), _resaved(_tampered_epoch),
          _not_a_dict, _a_directory]


@pytest.mark.parametrize("damage", DAMAGE, ids=[d.__name__ for d in DAMAGE])
def test_no_usable_checkpoint_is_a_one_line_error_naming_the_files(damage, finished_run, tmp_path, capsys):
    recipe, out = _copy(finished_run, tmp_path)
    for name in (CHECKPOINT, PREVIOUS):
        damage(out / name)
    before = _contents(out)
    assert main(["gradual", str(recipe), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("chita-nn: error: no usable checkpoint"), err
    assert str(out / CHECKPOINT) in lines[0] and str(out / PREVIOUS) in lines[0] and "Traceback" not in err
    assert _contents(out) == before


@pytest.mark.parametrize("damage", [_flipped_tensor_byte, _half, _empty], ids=lambda d: d.__name__)
def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(damage, finished_run, tmp_path, caplog):
    recipe, out = _copy(finished_run, tmp_path)
    expected = _state(out / "final.pt")["state_dict"]
    damage(out / CHECKPOINT)
    with caplog.at_level(logging.WARNING, logger="chita_nn"):
        assert main(["gradual", str(recipe), "--out", str(out), "--no-progress", "-q"]) == 0
    assert any(str(out / CHECKPOINT) in r.getMessage() and "previous checkpoint" in r.getMessage()
               for r in caplog.records)
    final = _state(out / "final.pt")["state_dict"]
    assert list(final) == list(expected) and all(torch.equal(final[k], expected[k]) for k in expected)
    assert read_checkpoint(out / CHECKPOINT)["epoch"] == 3


def test_flipped_byte_is_detected_by_the_checksum(finished_run, tmp_path):
    _, out = _copy(finished_run, tmp_path)
    _flipped_tensor_byte(out / CHECKPOINT)
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        read_checkpoint(out / CHECKPOINT)


def test_save_keeps_the_last_two_and_leaves_no_temporary_file(tmp_path):
    for epoch in range(3):
        checkpoints.save_checkpoint({"epoch": epoch, "w": torch.full((3,), float(epoch))}, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CHECKPOINT, PREVIOUS])
    assert read_checkpoint(tmp_path / CHECKPOINT)["epoch"] == 2 and read_checkpoint(tmp_path / PREVIOUS)["epoch"] == 1


def test_missing_newest_after_a_crash_between_renames_resumes_from_previous(tmp_path):
    checkpoints.save_checkpoint({"epoch": 1}, tmp_path)
    checkpoints.save_checkpoint({"epoch": 2}, tmp_path)
    (tmp_path / CHECKPOINT).unlink()
    path, state = checkpoints.load_latest(tmp_path)
    assert path.name == PREVIOUS and state["epoch"] == 1


# ------------------------------------------------------------------------------------------ run boundary

@pytest.fixture(scope="module")
def digits():
    return load_digits_data(seed=0)


def _config(**changes):
    return GradualConfig(**{**dict(target_sparsity=0.8, initial_sparsity=0.5, epochs=2, prune_every=1, n_events=2,
                                   method="magnitude", batch_size=64), **changes})


@pytest.mark.parametrize("changes, name", [
    (dict(lr=float("inf")), "lr"), (dict(weight_decay=float("nan")), "weight_decay"), (dict(lr="0.01"), "lr"),
    (dict(epochs=True), "epochs"), (dict(batch_size=2.0), "batch_size"), (dict(seed=-1), "seed"),
    (dict(prune_options={"seed": 1}), "prune_options"), (dict(prune_options=[1]), "prune_options"),
    (dict(target_sparsity=1.0), "target_sparsity"), (dict(momentum=float("nan")), "momentum")])
def test_config_rejects_bad_values(changes, name):
    with pytest.raises(ValueError, match=name):
        _config(**changes)


@pytest.mark.parametrize("make, message", [
    (lambda X, y: (X[:, :60], y), "cannot take inputs"),
    (lambda X, y: (X.double().long(), y), "floating point"),
    (lambda X, y: (X, y.float()), "labels"),
    (lambda X, y: (X, y[:, None]), "labels"),
    (lambda X, y: (X, y + 10), "labels must lie"),
    (lambda X, y: (X * float("nan"), y), "NaN"),
    (lambda X, y: (X[:0], y[:0]), "empty"),
])
def test_run_checks_its_data_before_any_work(make, message, digits, tmp_path):
    train, test = digits
    bad = make(*train.tensors)
    with pytest.raises(ValueError, match=message):
        run_gradual(DigitsMLP(), bad, test, _config(), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_non_finite_loss_stops_the_run_at_the_last_good_checkpoint(digits, tmp_path):
    train, test = digits
    model = DigitsMLP()
    X, y = train.tensors
    with pytest.raises(FloatingPointError, match="non-finite training loss"):
        run_gradual(model, (X * 1e36, y), test, _config(), tmp_path)
    saved = read_checkpoint(tmp_path / CHECKPOINT)
    assert saved["epoch"] == 0
    current = model.state_dict()
    assert all(torch.equal(current[k], saved["model"][k]) for k in saved["model"])
    assert not (tmp_path / "final.pt").exists()


def test_run_without_matplotlib_logs_it_and_still_writes_final(digits, tmp_path, monkeypatch, caplog):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    train, test = digits
    with caplog.at_level(logging.WARNING, logger="chita_nn"):
        run_gradual(DigitsMLP(), train, test, _config(), tmp_path)
    assert (tmp_path / "final.pt").exists() and not (tmp_path / "progress.png").exists()
    assert any("matplotlib is not installed" in r.getMessage() for r in caplog.records)
