"""Tests of the chita-nn command line: smoke runs, and a corpus of mistakes that must each be one line
``chita-nn: error: ...`` naming the flag or file, with exit status 2, no traceback and no file written."""
import argparse
import gzip
import json
import os
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _procs import run

import chita_nn
from chita_nn.cli import NO_TORCH, build_parser, main
from chita_nn.core.writeback import load_pruned
from chita_nn.zoo.models import DigitsMLP

ROOT = Path(__file__).resolve().parents[1]
CHITA_SMALL = ["--n-rows", "100", "--samples-per-row", "4"]
SMALL = [*CHITA_SMALL, "--stages", "2"]  # CHITA++ (--stages is not an option of CHITA)


def test_demo_prints_table(capsys):
    assert main(["demo", "--sparsities", "0.8", "--epochs", "10", *SMALL]) == 0
    out = capsys.readouterr().out
    assert "magnitude" in out and "chita++" in out and "0.80" in out


def test_prune_digits_saves_model_and_report(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["prune", "--model", "digits", "--sparsity", "0.9", "--method", "chita", "--out", str(out),
                 "--epochs", "10", *CHITA_SMALL]) == 0
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
                 *CHITA_SMALL]) == 0
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


# ------------------------------------------------------------------------------------------ bad input corpus

def _files(root):
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*"))


def assert_usage_error(argv, capsys, root, *needles, status=2):
    """``main(argv)`` fails with exit status 2 and one line ``chita-nn: error: ...`` naming every needle,
    without a traceback and without writing anything under ``root``."""
    before = _files(root)
    assert main(argv) == status
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("chita-nn: error: "), lines[0]
    assert "Traceback" not in captured.err + captured.out
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert _files(root) == before
    return lines[0]


PRUNE = ["prune", "--model", "digits", "--sparsity", "0.9", "--epochs", "1", *SMALL]

BAD_PRUNE_OPTIONS = [
    (["--sparsity", "1.5"], "--sparsity"), (["--sparsity", "-0.1"], "--sparsity"), (["--sparsity", "1"], "--sparsity"),
    (["--sparsity", "nan"], "--sparsity"), (["--sparsity", "inf"], "--sparsity"), (["--sparsity", "ninety"], "--sparsity"),
    (["--threads", "0"], "--threads"), (["--threads", "-2"], "--threads"), (["--threads", "two"], "--threads"),
    (["--epochs", "-1"], "--epochs"), (["--epochs", "0"], "--epochs"), (["--epochs", "1.5"], "--epochs"),
    (["--n-rows", "0"], "--n-rows"), (["--samples-per-row", "0"], "--samples-per-row"),
    (["--lam", "-1"], "--lam"), (["--lam", "inf"], "--lam"), (["--lam", "nan"], "--lam"),
    (["--stages", "0"], "--stages"), (["--hold-stages", "-1"], "--hold-stages"),
    (["--block-size", "0"], "--block-size"), (["--block-size", "big"], "--block-size"),
    (["--method", "random"], "--method"), (["--model", "vgg16"], "--model"), (["--schedule", "quadratic"], "--schedule"),
    (["--scope", "local"], "--scope"), (["--score", "taylor"], "--score"), (["--seed", "-1"], "--seed"),
    (["--test-limit", "0"], "--test-limit"), (["--sparsty", "0.5"], "--sparsty"), (["--gradient-term", "yes"], "yes"),
]


@pytest.mark.parametrize("extra, flag", BAD_PRUNE_OPTIONS, ids=[" ".join(e) for e, _ in BAD_PRUNE_OPTIONS])
def test_bad_prune_option_is_a_one_line_error(extra, flag, tmp_path, capsys):
    assert_usage_error([*PRUNE, "--out", str(tmp_path / "run"), *extra], capsys, tmp_path, flag)


BAD_COMMAND_LINES = [
    ([], "COMMAND"), (["prun"], "prun"), (["prune", "--model", "digits"], "--sparsity"),
    (["prune", "--sparsity", "0.5"], "--model"), (["--threads", "0", "demo"], "--threads"),
    (["demo", "--threads", "0"], "--threads"), (["demo", "-v", "--threads", "x"], "--threads"),
    (["demo", "--sparsities", "1.5"], "--sparsities"), (["demo", "--methods", "obs"], "--methods"),
    (["demo", "--epochs", "-1"], "--epochs"), (["gradual"], "RECIPE"), (["export"], "PRUNED"),
    (["export", "x.pt", "--format", "onnx"], "--format"),
]


@pytest.mark.parametrize("argv, needle", BAD_COMMAND_LINES, ids=[" ".join(a) or "empty" for a, _ in BAD_COMMAND_LINES])
def test_bad_command_line_is_a_one_line_error(argv, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_usage_error(argv, capsys, tmp_path, needle)


def _out_is_a_file(tmp_path):
    (tmp_path / "taken").write_text("x")
    return [*PRUNE, "--out", str(tmp_path / "taken")], "--out"


def _out_below_a_file(tmp_path):
    (tmp_path / "taken").write_text("x")
    return [*PRUNE, "--out", str(tmp_path / "taken" / "run")], "--out"


def _previous_run(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "pruned.pt").write_bytes(b"old")
    return [*PRUNE, "--out", str(tmp_path / "run")], "--overwrite"


def _missing_data_dir(tmp_path):
    return ["prune", "--model", "mlpnet", "--sparsity", "0.5", "--out", str(tmp_path / "run"),
            "--data-dir", str(tmp_path / "nowhere")], "--data-dir"


def _data_dir_is_a_file(tmp_path):
    (tmp_path / "data").write_text("x")
    return ["prune", "--model", "mlpnet", "--sparsity", "0.5", "--out", str(tmp_path / "run"),
            "--data-dir", str(tmp_path / "data")], "--data-dir"


def _no_data_dir(tmp_path):
    return ["prune", "--model", "resnet20", "--sparsity", "0.5", "--out", str(tmp_path / "run")], "--data-dir"


OUTPUT_AND_DATA_MISTAKES = [_out_is_a_file, _out_below_a_file, _previous_run, _missing_data_dir, _data_dir_is_a_file,
                            _no_data_dir]


@pytest.mark.parametrize("make", OUTPUT_AND_DATA_MISTAKES, ids=[f.__name__ for f in OUTPUT_AND_DATA_MISTAKES])
def test_output_and_data_folders_are_checked_before_any_work(make, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CHITA_DATA_DIR", raising=False)
    argv, needle = make(tmp_path)
    assert_usage_error(argv, capsys, tmp_path, needle)


def test_data_dir_from_the_environment_is_named(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CHITA_DATA_DIR", str(tmp_path / "nowhere"))
    assert_usage_error(["prune", "--model", "mlpnet", "--sparsity", "0.5", "--out", str(tmp_path / "run")], capsys,
                       tmp_path, "CHITA_DATA_DIR", "nowhere")


def _fake_data_dir(root):
    """A data folder with an MLPNet checkpoint of the right layout and valid MNIST test files."""
    from chita_nn.zoo.models import MLPNET_CHECKPOINT, MLPNet

    state = {"module." + key.replace(".", "._layer.", 1): value for key, value in MLPNet().state_dict().items()}
    (root / "checkpoints").mkdir(parents=True)
    torch.save({"model_state_dict": state}, root / MLPNET_CHECKPOINT)
    (root / "mnist").mkdir()
    for name, magic, dims in (("train-images-idx3-ubyte.gz", 2051, (4, 28, 28)),
                              ("train-labels-idx1-ubyte.gz", 2049, (4,)),
                              ("t10k-images-idx3-ubyte.gz", 2051, (4, 28, 28)),
                              ("t10k-labels-idx1-ubyte.gz", 2049, (4,))):
        header = struct.pack(f">{1 + len(dims)}I", magic, *dims)
        (root / "mnist" / name).write_bytes(gzip.compress(header + bytes(int(np.prod(dims)))))
    return root


def _truncate(path):
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def _garbage(path):
    path.write_bytes(b"this is not the file you are looking for" * 10)


def _bad_magic(path):
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(struct.pack(">I", 1234) + raw[4:]))


def _short_payload(path):
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-3]))


DATA_FILE_DAMAGE = [("mnist/train-images-idx3-ubyte.gz", _truncate), ("mnist/train-images-idx3-ubyte.gz", _garbage),
                    ("mnist/t10k-labels-idx1-ubyte.gz", _bad_magic), ("mnist/t10k-images-idx3-ubyte.gz", _short_payload),
                    ("checkpoints/mnist_25_epoch_93.97.ckpt", _truncate),
                    ("checkpoints/mnist_25_epoch_93.97.ckpt", _garbage)]


@pytest.mark.parametrize("name, damage", DATA_FILE_DAMAGE, ids=[f"{n}-{d.__name__}" for n, d in DATA_FILE_DAMAGE])
def test_damaged_data_file_is_named(name, damage, tmp_path, capsys):
    data = _fake_data_dir(tmp_path / "data")
    damage(data / name)
    assert_usage_error(["prune", "--model", "mlpnet", "--sparsity", "0.5", "--out", str(tmp_path / "run"),
                        "--data-dir", str(data)], capsys, tmp_path, Path(name).name)


def test_missing_data_file_is_named(tmp_path, capsys):
    data = _fake_data_dir(tmp_path / "data")
    (data / "mnist" / "train-labels-idx1-ubyte.gz").unlink()
    assert_usage_error(["prune", "--model", "mlpnet", "--sparsity", "0.5", "--out", str(tmp_path / "run"),
                        "--data-dir", str(data)], capsys, tmp_path, "train-labels-idx1-ubyte.gz")


# ------------------------------------------------------------------------------------------ global behaviour

def test_global_options_after_the_subcommand():
    args = build_parser().parse_args(["demo", "-v", "--threads", "3"])
    assert args.verbose == 1 and args.threads == 3
    args = build_parser().parse_args(["-q", "--threads", "2", "demo"])
    assert args.quiet and args.threads == 2 and args.verbose == 0


def test_every_option_has_help():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in [("chita-nn", parser), *subparsers.choices.items()]:
        for action in sub._actions:
            assert action.help and action.help != argparse.SUPPRESS, (name, action.dest)
        sub.format_help()  # the lazily imported defaults and choices format


def test_ctrl_c_ends_the_program_with_130_and_reaches_an_in_process_caller(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr("chita_nn.cli._configure", interrupted)
    with pytest.raises(KeyboardInterrupt):  # a test calling main is stopped, not failed with status 130
        main(["export", "x.pt"])
    monkeypatch.setattr(sys, "argv", ["chita-nn", "export", "x.pt"])
    assert main() == 130 and capsys.readouterr().err == "chita-nn: interrupted\n"


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"chita-nn {chita_nn.__version__}"


def _run_python(code, timeout=60):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return run([sys.executable, "-c", code], timeout=timeout, env=env, cwd=ROOT)


def test_help_imports_no_torch_and_is_fast():
    code = ("import sys, time; t = time.perf_counter()\n"
            "from chita_nn.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules, time.perf_counter() - t)")
    result = _run_python(code)
    loaded, seconds = result.stdout.strip().splitlines()[-1].split()
    assert loaded == "False" and "prune" in result.stdout
    assert float(seconds) < 0.5


@pytest.mark.parametrize("argv", [["demo"], ["prune", "--model", "digits", "--sparsity", "0.5"],
                                  ["--threads", "2", "demo"], ["export", "x.pt"]])
def test_without_torch_says_how_to_install_it(argv, tmp_path):
    code = ("import sys; sys.modules['torch'] = None\n"
            "from chita_nn.cli import main\n"
            f"sys.exit(main({argv!r}))")
    result = _run_python(code)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == "chita-nn: error: " + NO_TORCH
    assert "pip install torch" in NO_TORCH


def test_prune_refuses_a_previous_run_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["prune", "--model", "digits", "--sparsity", "0.8", "--method", "magnitude", "--out", str(out),
            "--epochs", "2", "--no-progress"]
    assert main(argv) == 0
    capsys.readouterr()
    assert_usage_error(argv, capsys, tmp_path, "--overwrite")
    assert main([*argv, "--overwrite"]) == 0


def test_logs_go_through_tqdm(monkeypatch, tmp_path):
    """Log records during a command are written through tqdm (logging_redirect_tqdm), so bars stay intact."""
    import tqdm.contrib.logging as tqdm_logging

    entered = []
    real = tqdm_logging.logging_redirect_tqdm

    def spy(*args, **kwargs):
        entered.append(True)
        return real(*args, **kwargs)

    monkeypatch.setattr(tqdm_logging, "logging_redirect_tqdm", spy)
    assert main(["prune", "--model", "digits", "--sparsity", "0.5", "--method", "magnitude", "--epochs", "1",
                 "--out", str(tmp_path / "run")]) == 0
    assert entered
