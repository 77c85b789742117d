"""Resumable layer-wise runs: checkpoints of finished blocks (and of layers outside the blocks), a run stopped
anywhere resumed bit for bit, other settings, data or model refused, damaged files detected."""
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from _procs import started

transformers = pytest.importorskip("transformers")

from test_chita_layerwise import mlp, tiny_llama, token_batches  # noqa: E402

from chita_nn.cli import main  # noqa: E402
from chita_nn.core.params import DEFAULT_IGNORE  # noqa: E402
from chita_nn.methods.checkpoints import CHECKSUM_KEY, CheckpointError, write_checked  # noqa: E402
from chita_nn.methods.layerwise import api, prune_layerwise  # noqa: E402
from chita_nn.methods.layerwise.resume import remove_checkpoints, verify  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_single_thread")

LLAMA_LAYERS = 7  # Linear layers of one tiny_llama block: q, k, v, o, gate, up, down


def _state(model):
    return {key: value.clone() for key, value in model.state_dict().items()}


def _assert_same(state, expected):
    assert list(state) == list(expected)
    for key, value in expected.items():
        assert torch.equal(state[key], value), key


def _counting(monkeypatch, method, fail_at=None):
    """Replace ``METHODS[method]`` by a wrapper that counts its calls and raises on call ``fail_at``."""
    original, calls = api.METHODS[method], []

    def counted(*args, **options):
        calls.append(1)
        if len(calls) == fail_at:
            raise RuntimeError("injected")
        return original(*args, **options)

    monkeypatch.setitem(api.METHODS, method, counted)
    return calls


def _interrupted(monkeypatch, make, data, folder, fail_at, **options):
    """A model whose pruning with checkpoints in ``folder`` failed on the ``fail_at``-th layer."""
    model = make()
    dense = _state(model)
    _counting(monkeypatch, options["method"], fail_at)
    with pytest.raises(RuntimeError, match="injected"):
        prune_layerwise(model, data, checkpoint_dir=folder, **options)
    _assert_same(model.state_dict(), dense)  # restored; the finished blocks are in the folder
    return model


CASES = {
    # method and options, model, layers pruned in all, the failing call, layers checkpointed before it
    "chita, fails in block 1": (dict(method="chita", sparsity=0.6), lambda: tiny_llama(layers=3),
                                3 * LLAMA_LAYERS, LLAMA_LAYERS + 3, LLAMA_LAYERS),
    "sparsegpt 2:4 with error correction, fails in block 2": (
        dict(method="sparsegpt", pattern="2:4", error_correction=True), lambda: tiny_llama(layers=3),
        3 * LLAMA_LAYERS, 2 * LLAMA_LAYERS + 1, 2 * LLAMA_LAYERS),
    "wanda with OWL budgets, lm_head outside the blocks fails": (
        dict(method="wanda", sparsity=0.5, budgets="owl", ignore=()), lambda: tiny_llama(layers=2),
        2 * LLAMA_LAYERS + 1, 2 * LLAMA_LAYERS + 1, 2 * LLAMA_LAYERS),
    "magnitude, no blocks, fails on the third layer": (dict(method="magnitude", sparsity=0.5), mlp, 3, 3, 2),
}


@pytest.mark.parametrize("case", CASES)
def test_interrupted_run_resumes_bit_identical_to_an_uninterrupted_run(monkeypatch, tmp_path, case):
    options, make, total, fail_at, finished = CASES[case]
    data = token_batches(n_batches=2) if make is not mlp else [torch.randn(8, 16, generator=torch.Generator()
                                                                           .manual_seed(i)) for i in range(2)]
    reference = make()
    expected = prune_layerwise(reference, data, **options)

    model = _interrupted(monkeypatch, make, data, tmp_path, fail_at, **options)
    calls = _counting(monkeypatch, options["method"])
    report = prune_layerwise(model, data, checkpoint_dir=tmp_path, **options)
    assert len(calls) == total - finished  # the finished layers were restored, not pruned again
    _assert_same(model.state_dict(), reference.state_dict())
    assert report.layers == expected.layers  # reconstruction errors and counts, restored ones included

    # every unit is checkpointed now: a third call prunes nothing and ends at the same weights
    again = make()
    calls.clear()
    prune_layerwise(again, data, checkpoint_dir=tmp_path, **options)
    assert not calls
    _assert_same(again.state_dict(), reference.state_dict())


@pytest.fixture
def interrupted(monkeypatch, tmp_path):
    """``(folder, options)`` of a tiny Llama run stopped in its second block (block 0 checkpointed)."""
    options = dict(method="sparsegpt", sparsity=0.5)
    _interrupted(monkeypatch, lambda: tiny_llama(layers=3), token_batches(), tmp_path, LLAMA_LAYERS + 2, **options)
    monkeypatch.undo()
    return tmp_path, options


@pytest.mark.parametrize("change, message", [
    (dict(sparsity=0.6), "sparsity=0.5, this run has sparsity=0.6"),
    (dict(dampening=0.05), "dampening=0.01, this run has dampening=0.05"),
    (dict(method="wanda"), "method='sparsegpt', this run has method='wanda'"),
    (dict(ignore=(*DEFAULT_IGNORE, "*down_proj")), "layers="),
    (dict(data=token_batches(seed=1)), "other calibration data"),
    (dict(model=tiny_llama(layers=3, seed=1)), "another model"),
])
def test_other_settings_data_or_model_are_refused_before_any_change(interrupted, change, message):
    folder, options = interrupted
    model, data = change.pop("model", tiny_llama(layers=3)), change.pop("data", token_batches())
    before = _state(model)
    with pytest.raises(ValueError, match=message) as error:
        prune_layerwise(model, data, checkpoint_dir=folder, **{**options, **change})
    assert "block-0000.pt was written by a run with" in str(error.value) and "\n" not in str(error.value)
    assert "resume=False" in str(error.value)
    _assert_same(model.state_dict(), before)
    # starting over in the same folder is allowed and replaces the files
    prune_layerwise(model, data, checkpoint_dir=folder, resume=False, **{**options, **change})
    assert verify(folder) == 3


def _tamper(path):
    """Change one weight of a checkpoint, keeping its stored checksum."""
    state = torch.load(path, weights_only=True)
    name = next(iter(state["weights"]))
    state["weights"][name][0, 0] += 1.0
    torch.save(state, path)


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damage, message", [(_tamper, "checksum mismatch, the file is corrupted"),
                                             (_truncate, "unreadable checkpoint")])
@pytest.mark.parametrize("index", [0, 1])
def test_damaged_checkpoint_is_named_and_the_model_left_unchanged(tmp_path, damage, message, index):
    options = dict(method="magnitude", sparsity=0.5)
    prune_layerwise(tiny_llama(layers=3), token_batches(), checkpoint_dir=tmp_path, **options)
    path = tmp_path / f"block-{index:04d}.pt"
    damage(path)
    with pytest.raises(CheckpointError, match=message) as error:
        verify(tmp_path)
    assert str(path) in str(error.value)
    model = tiny_llama(layers=3)
    before = _state(model)
    with pytest.raises(CheckpointError, match=message) as error:  # block 1: found while block 0 is restored
        prune_layerwise(model, token_batches(), checkpoint_dir=tmp_path, **options)
    assert str(error.value).startswith(f"{path}: ") and "delete it" in str(error.value)
    _assert_same(model.state_dict(), before)


def test_other_thread_count_is_warned_about(tmp_path, caplog):
    options = dict(method="magnitude", sparsity=0.5)
    prune_layerwise(tiny_llama(layers=2), token_batches(), checkpoint_dir=tmp_path, **options)
    path = tmp_path / "block-0000.pt"
    state = torch.load(path, weights_only=True)
    del state[CHECKSUM_KEY]
    state["environment"]["torch_threads"] += 1
    write_checked(state, path)
    with caplog.at_level(logging.WARNING, logger="chita_nn"):
        prune_layerwise(tiny_llama(layers=2), token_batches(), checkpoint_dir=tmp_path, **options)
    assert sum("may differ in the last bits" in record.message for record in caplog.records) == 1


def test_checkpoint_folder_is_checked_and_removed(tmp_path):
    model, batches = tiny_llama(layers=2), token_batches()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="checkpoint_dir .*file: is a file, not a folder"):
        prune_layerwise(model, batches, 0.5, checkpoint_dir=tmp_path / "file")
    with pytest.raises(ValueError, match="resume must be True or False"):
        prune_layerwise(model, batches, 0.5, checkpoint_dir=tmp_path / "run", resume="yes")
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / ".block-0001.pt.tmp123").write_bytes(b"half a file")  # left by a killed write
    prune_layerwise(model, batches, 0.5, method="magnitude", checkpoint_dir=folder)
    assert sorted(p.name for p in folder.iterdir()) == ["block-0000.pt", "block-0001.pt"]
    remove_checkpoints(folder)
    assert not folder.exists()


TESTS = Path(__file__).parent
USER_MODELS = textwrap.dedent("""
    from test_chita_layerwise import tiny_llama, token_batches


    def make_model():
        return tiny_llama(layers=3)


    def make_data():
        return token_batches(n_batches=3)


    def broken():
        raise RuntimeError("the model was loaded")
""")
_CHILD = textwrap.dedent("""
    import sys, time
    from chita_nn.cli import main
    from chita_nn.methods.layerwise import resume

    if sys.argv[1] == "hang":  # stop for good after the first checkpoint, so that the kill comes after it
        save = resume.Checkpoints.save

        def save_then_hang(self, *args):
            save(self, *args)
            time.sleep(600)

        resume.Checkpoints.save = save_then_hang
    sys.exit(main(sys.argv[2:]))
""")


def _prune_args(out, *extra, method="chita-layerwise", model="make_model"):
    return ["prune", "--model", f"lwresume_models:{model}", "--data", "lwresume_models:make_data", "--method", method,
            "--sparsity", "0.6", "--out", str(out), "--threads", "1", "--no-progress", *extra]


@pytest.fixture
def user_models(tmp_path, monkeypatch):
    """A folder holding ``lwresume_models.py`` (the tiny Llama and its data as module:callable), made current."""
    (tmp_path / "lwresume_models.py").write_text(USER_MODELS)
    (tmp_path / "child.py").write_text(_CHILD)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _child(folder, mode, argv):
    """``chita-nn`` with ``argv`` in a child process (:func:`_procs.started`: killed on leaving; fixed thread
    counts, in ``folder``); ``mode`` "hang" stops it for good after its first checkpoint."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)]), "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    return started([sys.executable, "child.py", mode, *argv], cwd=folder, env=env, stderr=subprocess.PIPE, text=True)


def _finish(child, timeout=300):
    """``(exit status, stderr)`` of the ``child`` (killed if not done within ``timeout``)."""
    with child as proc:
        _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def _pruned(out):
    return torch.load(out / "pruned.pt", weights_only=True)


def test_cli_run_killed_after_a_checkpoint_resumes_bit_identical_to_an_uninterrupted_process(user_models):
    reference, killed = user_models / "reference", user_models / "killed"
    code, err = _finish(_child(user_models, "run", _prune_args(reference, "-q")))
    assert code == 0, err
    assert not (reference / "checkpoints").exists()  # removed once the outputs are saved

    first = killed / "checkpoints" / "block-0000.pt"
    with _child(user_models, "hang", _prune_args(killed, "-q")) as proc:
        deadline = time.monotonic() + 300
        while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.exists(), f"no checkpoint written (exit status {proc.poll()})"
        os.killpg(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    assert sorted(p.name for p in first.parent.iterdir()) == ["block-0000.pt"]
    assert not (killed / "pruned.pt").exists()

    code, err = _finish(_child(user_models, "run", _prune_args(killed, "--resume")))
    assert code == 0, err
    assert "1 finished blocks or layers checkpointed" in err  # block 0 restored, not pruned again
    assert not (killed / "checkpoints").exists()
    resumed, expected = _pruned(killed), _pruned(reference)
    _assert_same(resumed["state_dict"], expected["state_dict"])
    assert resumed["report"]["layers"] == expected["report"]["layers"]


def test_cli_stopped_run_is_refused_unless_resumed_or_overwritten(user_models, monkeypatch, capsys):
    out, reference = user_models / "run", user_models / "reference"
    assert main(_prune_args(reference, "-q", method="wanda")) == 0
    original = api.METHODS["wanda"]
    _counting(monkeypatch, "wanda", fail_at=LLAMA_LAYERS + 1)
    with pytest.raises(RuntimeError, match="injected"):
        main(_prune_args(out, "-q", method="wanda"))
    monkeypatch.setitem(api.METHODS, "wanda", original)
    capsys.readouterr()
    for extra, method, message in [
        ((), "wanda", f"--out {out}: holds a previous run (checkpoints); pass --resume to continue it, or "
                      f"--overwrite to start over"),
        (("--resume", "--overwrite"), "wanda", "--resume continues the run in --out and --overwrite starts it over"),
        (("--resume",), "chita", "--resume: only the layer-wise methods are checkpointed, not --method chita"),
        (("--resume",), "sparsegpt", "method='wanda', this run has method='sparsegpt'"),
    ]:
        assert main(_prune_args(out, *extra, method=method)) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert main(_prune_args(out, "--resume", "-q", method="wanda")) == 0
    _assert_same(_pruned(out)["state_dict"], _pruned(reference)["state_dict"])
    assert not (out / "checkpoints").exists()


def test_cli_names_a_damaged_checkpoint_before_the_model_loads(user_models, capsys):
    folder = user_models / "run" / "checkpoints"
    prune_layerwise(tiny_llama(layers=3), token_batches(n_batches=3), 0.6, method="wanda", checkpoint_dir=folder)
    _tamper(folder / "block-0001.pt")
    assert main(_prune_args(user_models / "run", "--resume", method="wanda", model="broken")) == 2
    err = capsys.readouterr().err
    assert f"{folder / 'block-0001.pt'}: checksum mismatch" in err and "the model was loaded" not in err
