"""Tests of gradual pruning: schedules, masks through fine-tuning, checkpoints, exact resume after SIGKILL,
recipes and the CLI parser."""
import argparse
import json
import math
import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from _procs import started

from chita_nn.cli.gradual import add_gradual_parser
from chita_nn.methods import gradual
from chita_nn.methods.gradual import (
    CosineCycles,
    GradualConfig,
    atomic_torch_save,
    parse_recipe,
    run_gradual,
)
from chita_nn.zoo.datasets import load_digits_data
from chita_nn.zoo.models import train_digits_mlp

ROOT = Path(__file__).resolve().parents[1]
FAST_PRUNE = dict(n_rows=50, samples_per_row=4, lam=1e-3, line_search=False)


@pytest.fixture(scope="module")
def digits():
    train, test = load_digits_data(seed=0)
    return train_digits_mlp(train, epochs=5, seed=0), train, test


def test_cubic_ramp_and_event_epochs():
    config = GradualConfig(target_sparsity=0.9, initial_sparsity=0.5, epochs=10, prune_every=2, n_events=5)
    assert config.event_epochs() == [0, 2, 4, 6, 8]
    expected = [0.9 + (0.5 - 0.9) * (1 - i / 4) ** 3 for i in range(5)]
    assert np.allclose(config.event_sparsities(), expected) and config.event_sparsities()[-1] == 0.9
    assert GradualConfig(target_sparsity=0.8, epochs=3, prune_every=2).n_events == 1


@pytest.mark.parametrize("kwargs, name", [
    (dict(epochs=4, prune_every=2, n_events=3), "n_events"), (dict(initial_sparsity=0.95), "initial_sparsity"),
    (dict(method="random"), "method"), (dict(final_lr=0.0), "final_lr"), (dict(epochs=0), "epochs")])
def test_config_rejects_bad_values(kwargs, name):
    with pytest.raises(ValueError, match=name):
        GradualConfig(target_sparsity=0.9, **kwargs)


def test_cosine_cycles_restart_at_events_and_end_at_final_floor():
    f = CosineCycles([0, 10, 20, 40], cycle_floor=0.01, final_floor=0.001)
    assert f(0) == f(10) == f(20) == 1.0
    assert math.isclose(f(5), 0.505) and math.isclose(f(30), 0.5005)
    assert math.isclose(f(40), 0.001) and f(19) < f(10)


def _masked_entries(model):
    return [(m.weight_orig, m.weight_mask) for m in model.modules() if hasattr(m, "weight_mask")]


def test_masks_survive_finetuning_and_momentum_is_reset(digits, tmp_path):
    """Pruned entries of weight_orig, of the effective weights and of the momentum buffers stay exactly zero
    through SGD steps with momentum and weight decay; an event clears the momentum."""
    model, train, test = digits
    model = train_digits_mlp(train, epochs=5, seed=0)
    config = GradualConfig(target_sparsity=0.8, initial_sparsity=0.6, epochs=3, prune_every=2, n_events=2,
                           method="chita", prune_options=FAST_PRUNE, lr=0.05, weight_decay=1e-3, batch_size=64)
    trainer = gradual._Trainer(model, train, test, config, tmp_path, progress=False)
    trainer.train_epoch()
    assert trainer.optimizer.state  # momentum buffers exist ...
    trainer.prune_event(0, 0.6)
    assert not trainer.optimizer.state  # ... and are gone after the event
    for _ in range(2):
        trainer.train_epoch()
    pairs = _masked_entries(model)
    assert abs(gradual.sparsity_of(pairs) - 0.6) < 1e-3
    for orig, mask in pairs:
        pruned = mask == 0
        assert torch.all(orig[pruned] == 0)
        assert torch.all(trainer.optimizer.state[orig]["momentum_buffer"][pruned] == 0)
    for module in model.modules():
        if hasattr(module, "weight_mask"):
            model(torch.zeros(1, 64))  # recompute weight = orig * mask
            assert torch.all(module.weight[module.weight_mask == 0] == 0)


def test_run_writes_log_plot_checkpoint_and_reaches_target(digits, tmp_path):
    _, train, test = digits
    model = train_digits_mlp(train, epochs=5, seed=0)
    config = GradualConfig(target_sparsity=0.8, initial_sparsity=0.5, epochs=3, prune_every=1, n_events=2,
                           method="chita", prune_options=FAST_PRUNE, batch_size=64)
    result = run_gradual(model, train, test, config, tmp_path)
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1, 2] == [r["epoch"] for r in result.history]
    assert [r["event_sparsity"] for r in records] == [0.5, 0.8, None]
    assert [r["magnitude_fallbacks"] is None for r in records] == [False, False, True]  # counted per event
    assert all(set(r) >= {"train_loss", "test_accuracy", "sparsity", "lr", "seconds"} for r in records)
    assert abs(result.sparsity - 0.8) < 1e-3 and 1e-5 <= records[-1]["lr"] < 1e-4
    assert (tmp_path / "progress.png").stat().st_size > 0 and (tmp_path / "final.pt").exists()
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 3 and set(state["rng"]) == {"torch", "numpy", "python"}
    # a finished run resumes to nothing; another configuration in the same folder is refused
    assert run_gradual(model, train, test, config, tmp_path).resumed_from == 3
    with pytest.raises(ValueError, match="another configuration"):
        run_gradual(model, train, test, GradualConfig(**{**config.__dict__, "lr": 0.5}), tmp_path)


def test_atomic_save_leaves_no_temporary_file(tmp_path):
    atomic_torch_save({"a": torch.ones(2)}, tmp_path / "x.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]


_CHILD = textwrap.dedent("""
    import sys, torch
    torch.set_num_threads(1)
    from chita_nn.zoo.datasets import load_digits_data
    from chita_nn.methods.gradual import GradualConfig, run_gradual
    from chita_nn.zoo.models import train_digits_mlp
    train, test = load_digits_data(seed=0)
    model = train_digits_mlp(train, epochs=5, seed=0)
    config = GradualConfig(target_sparsity=0.8, initial_sparsity=0.5, epochs=6, prune_every=2, n_events=3,
                           method="chita", batch_size=4, seed=3,
                           prune_options=dict(n_rows=50, samples_per_row=4, lam=1e-3, line_search=False))
    run_gradual(model, train, test, config, sys.argv[1], plot=False)
""")


def _child(script, out):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    return started([sys.executable, str(script), str(out)], env=env, cwd=ROOT)


def _exit_status(script, out):
    with _child(script, out) as proc:
        return proc.wait(timeout=300)


def _log_lines(out):
    log = out / "log.jsonl"
    return log.read_text().splitlines() if log.exists() else []


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    assert _exit_status(script, reference) == 0

    with _child(script, killed) as proc:
        deadline = time.monotonic() + 300
        while len(_log_lines(killed)) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)  # into the next epoch (one epoch takes about a second)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    state = torch.load(killed / "checkpoint.pt", weights_only=True)
    assert 2 <= state["epoch"] < 6 and not (killed / "final.pt").exists()
    assert len(_log_lines(killed)) == state["epoch"]  # the log matches the checkpoint: nothing half-written

    assert _exit_status(script, killed) == 0
    final = torch.load(killed / "final.pt", weights_only=True)["state_dict"]
    expected = torch.load(reference / "final.pt", weights_only=True)["state_dict"]
    assert list(final) == list(expected)
    for key in expected:
        assert torch.equal(final[key], expected[key]), key
    ref_log = [json.loads(line) for line in _log_lines(reference)]
    new_log = [json.loads(line) for line in _log_lines(killed)]
    assert [r["test_accuracy"] for r in new_log] == [r["test_accuracy"] for r in ref_log]


RECIPE = """
seed = 2
out = "outputs/x"
[model]
name = "digits"
[schedule]
target_sparsity = 0.9
initial_sparsity = 0.5
epochs = 6
prune_every = 2
[optimizer]
lr = 0.02
batch_size = 32
[prune]
method = "chita"
n_rows = 50
"""


def test_recipe_parses_into_config():
    recipe = parse_recipe(RECIPE)
    assert recipe.model == "digits" and recipe.out == "outputs/x"
    assert recipe.config.n_events == 3 and recipe.config.method == "chita" and recipe.config.seed == 2
    assert recipe.config.prune_options == {"n_rows": 50} and recipe.config.lr == 0.02
    with pytest.raises(ValueError, match="unknown keys"):
        parse_recipe(RECIPE.replace("lr = 0.02", "learning_rate = 0.02"))


def test_recipe_files_in_repository_parse():
    for path in sorted((ROOT / "recipes").glob("*.toml")):
        assert gradual.load_recipe(path).config.target_sparsity > 0


def test_cli_parser_hook():
    parser = argparse.ArgumentParser()
    add_gradual_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["gradual", "r.toml", "--no-resume"])
    assert args.recipe == "r.toml" and args.no_resume and callable(args.func)


def test_nm_pattern_ramp_is_unstructured_and_ends_two_of_four(digits, tmp_path):
    _, train, test = digits
    model = train_digits_mlp(train, epochs=5, seed=0)
    config = GradualConfig(target_sparsity=0.5, initial_sparsity=0.3, epochs=2, prune_every=1, n_events=2,
                           method="chita", prune_options={**FAST_PRUNE, "pattern": "2:4"}, batch_size=64)
    assert config.event_pattern(0.3) is None and config.event_pattern(0.5) == "2:4"
    run_gradual(model, train, test, config, tmp_path, plot=False)
    for name, mask in _mask_buffers(model).items():
        assert bool((mask.reshape(-1, 4).sum(dim=1) == 2).all()), name
    with pytest.raises(ValueError, match="contradicts pattern"):
        GradualConfig(target_sparsity=0.8, prune_options={"pattern": "2:4"})


def _mask_buffers(model):
    return {name: buf for name, buf in model.named_buffers() if name.endswith("weight_mask")}
