"""Recipes are checked as a whole before anything runs: every mistake in the corpus below is one line
``chita-nn: error: <file>: ...`` naming the table and key, exit status 2, no traceback, no file written."""
from pathlib import Path

import pytest

from chita_nn.cli import main
from chita_nn.methods.recipes import RecipeError, load_recipe, parse_recipe

ROOT = Path(__file__).resolve().parents[1]

#: A valid recipe, as ``{table: {key: TOML literal}}`` ("" is the top level).
BASE = {
    "": {"seed": "0", "out": '"outputs/x"'},
    "model": {"name": '"digits"'},
    "schedule": {"target_sparsity": "0.9", "initial_sparsity": "0.5", "epochs": "4", "prune_every": "2"},
    "optimizer": {"lr": "0.01", "momentum": "0.9", "weight_decay": "5e-5", "batch_size": "32", "augment": '"none"'},
    "prune": {"method": '"chita"', "n_rows": "50", "targets": '["Linear"]'},
}


def render(tables):
    lines = [f"{key} = {value}" for key, value in tables.get("", {}).items()]
    for table, values in tables.items():
        if table:
            lines += [f"[{table}]"] + [f"{key} = {value}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def mutated(table, key, literal):
    """BASE with ``[table] key`` set to ``literal`` (removed if None)."""
    tables = {name: dict(values) for name, values in BASE.items()}
    tables.setdefault(table, {})
    if literal is None:
        tables[table].pop(key, None)
    else:
        tables[table][key] = literal
    return render(tables)


#: (table, key, TOML literal or None to remove it, words the message must hold besides the file name).
KEY_MISTAKES = [
    ("schedule", "target_sparsity", "1.5", "[schedule] target_sparsity"),
    ("schedule", "target_sparsity", "-0.1", "[schedule] target_sparsity"),
    ("schedule", "target_sparsity", '"0.9"', "[schedule] target_sparsity"),
    ("schedule", "target_sparsity", "inf", "[schedule] target_sparsity"),
    ("schedule", "target_sparsity", "nan", "[schedule] target_sparsity"),
    ("schedule", "target_sparsity", "true", "[schedule] target_sparsity"),
    ("schedule", "target_sparsity", None, "[schedule] target_sparsity is required"),
    ("schedule", "initial_sparsity", "0.95", "initial_sparsity"),
    ("schedule", "epochs", "0", "[schedule] epochs"),
    ("schedule", "epochs", "-1", "[schedule] epochs"),
    ("schedule", "epochs", "2.5", "[schedule] epochs"),
    ("schedule", "epochs", '"4"', "[schedule] epochs"),
    ("schedule", "prune_every", "0", "[schedule] prune_every"),
    ("schedule", "n_events", "10", "n_events"),
    ("schedule", "lr", "0.01", "lr belongs in [optimizer]"),
    ("optimizer", "lr", "inf", "[optimizer] lr"),
    ("optimizer", "lr", "nan", "[optimizer] lr"),
    ("optimizer", "lr", "0", "[optimizer] lr"),
    ("optimizer", "lr", "-0.01", "[optimizer] lr"),
    ("optimizer", "lr", '"0.01"', "[optimizer] lr"),
    ("optimizer", "weight_decay", "nan", "[optimizer] weight_decay"),
    ("optimizer", "weight_decay", "-1e-4", "[optimizer] weight_decay"),
    ("optimizer", "momentum", "1.0", "[optimizer] momentum"),
    ("optimizer", "momentum", "-0.5", "[optimizer] momentum"),
    ("optimizer", "batch_size", "0", "[optimizer] batch_size"),
    ("optimizer", "batch_size", "3.5", "[optimizer] batch_size"),
    ("optimizer", "final_lr", "0.0", "[optimizer] final_lr"),
    ("optimizer", "cycle_min_lr", "1.0", "cycle_min_lr"),
    ("optimizer", "augment", '"flip"', "[optimizer] augment"),
    ("optimizer", "learning_rate", "0.01", "learning_rate"),
    ("prune", "method", '"random"', "[prune] method"),
    ("prune", "n_rows", "0", "[prune] n_rows"),
    ("prune", "n_rows", '"100"', "[prune] n_rows"),
    ("prune", "lam", "-1.0", "[prune] lam"),
    ("prune", "lam", "inf", "[prune] lam"),
    ("prune", "seed", "3", "seed belongs at the top level"),
    ("prune", "progress", "true", "progress"),
    ("prune", "mask", "false", "mask"),
    ("prune", "loss_fn", '"mse"', "loss_fn"),
    ("prune", "block_size", "0", "[prune] block_size"),
    ("prune", "block_size", '"big"', "[prune] block_size"),
    ("prune", "targets", "[1, 2]", "[prune] targets"),
    ("prune", "ignore", "3", "[prune] ignore"),
    ("prune", "module_types", '["Linear"]', "module_types"),
    ("prune", "schedule", '"quadratic"', "[prune] schedule"),
    ("prune", "gradient_term", '"yes"', "[prune] gradient_term"),
    ("prune", "solver_options", "3", "[prune] solver_options"),
    ("", "seed", "-1", "seed"),
    ("", "seed", '"0"', "seed"),
    ("", "seed", "1.5", "seed"),
    ("", "out", "5", "out"),
    ("", "outdir", '"x"', "outdir"),
    ("model", "name", '"vgg16"', "[model] name"),
    ("model", "name", None, "[model] name is required"),
    ("model", "arch", '"mlp"', "arch"),
    ("data", "train_limit", "0", "[data] train_limit"),
    ("data", "test_limit", '"10"', "[data] test_limit"),
    ("data", "dir", "5", "[data] dir"),
    ("training", "epochs", "3", "training"),
]

#: Whole-file mistakes: (name, text or bytes, words the message must hold besides the file name).
FILE_MISTAKES = [
    ("duplicate key", render(BASE).replace("lr = 0.01", "lr = 0.01\nlr = 0.02"), "defined twice"),
    ("duplicate table", render(BASE) + "[optimizer]\nmomentum = 0.8\n", "defined twice"),
    ("unterminated string", render(BASE).replace('"digits"', '"digits'), "not valid TOML"),
    ("no equals sign", render(BASE).replace("lr = 0.01", "lr 0.01"), "not valid TOML"),
    ("empty file", "", "[model] name is required"),
    ("model as a string", 'model = "digits"\n[schedule]\ntarget_sparsity = 0.9\n', "model must be a table"),
    ("binary garbage", bytes(range(256)) * 4, "not a text"),
]


def _check(argv, recipe, capsys, tmp_path, *needles):
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"chita-nn: error: {recipe}"), captured.err
    assert "Traceback" not in captured.err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("table, key, literal, needle", KEY_MISTAKES,
                         ids=[f"{t or 'top'}.{k}={v}" for t, k, v, _ in KEY_MISTAKES])
def test_recipe_key_mistake_names_file_table_and_key(table, key, literal, needle, tmp_path, capsys):
    recipe = tmp_path / "bad.toml"
    recipe.write_text(mutated(table, key, literal))
    _check(["gradual", str(recipe), "--out", str(tmp_path / "run")], recipe, capsys, tmp_path, needle)


@pytest.mark.parametrize("name, content, needle", FILE_MISTAKES, ids=[m[0] for m in FILE_MISTAKES])
def test_recipe_file_mistake_names_the_file(name, content, needle, tmp_path, capsys):
    recipe = tmp_path / "bad.toml"
    recipe.write_bytes(content if isinstance(content, bytes) else content.encode())
    _check(["gradual", str(recipe), "--out", str(tmp_path / "run")], recipe, capsys, tmp_path, needle)


def test_recipe_that_is_a_directory_or_missing(tmp_path, capsys):
    _check(["gradual", str(tmp_path), "--out", str(tmp_path / "run")], tmp_path, capsys, tmp_path, "directory")
    missing = tmp_path / "missing.toml"
    _check(["gradual", str(missing), "--out", str(tmp_path / "run")], missing, capsys, tmp_path, "no such")


def test_all_problems_are_reported_at_once():
    text = mutated("optimizer", "lr", "inf").replace("weight_decay = 5e-5", "weight_decay = nan")
    with pytest.raises(RecipeError) as exc:
        parse_recipe(text, "r.toml")
    message = str(exc.value)
    assert message.startswith("r.toml: ") and "[optimizer] lr" in message and "[optimizer] weight_decay" in message


def test_valid_recipe_and_targets_reach_the_config():
    recipe = parse_recipe(render(BASE), "ok.toml")
    assert recipe.config.prune_options == {"n_rows": 50, "targets": ["Linear"]} and recipe.config.epochs == 4


def test_repository_recipes_are_valid():
    for path in sorted((ROOT / "recipes").glob("*.toml")):
        assert load_recipe(path).config.target_sparsity > 0


def _existing_run(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "log.jsonl").write_text("")
    return ["--out", str(tmp_path / "run"), "--no-resume"], "--overwrite"


def _overwrite_without_no_resume(tmp_path):
    return ["--out", str(tmp_path / "run"), "--overwrite"], "--no-resume"


def _out_is_a_file(tmp_path):
    (tmp_path / "run").write_text("x")
    return ["--out", str(tmp_path / "run")], "--out"


def _threads_zero(tmp_path):
    return ["--out", str(tmp_path / "run"), "--threads", "0"], "--threads"


def _missing_data_dir(tmp_path):
    recipe = tmp_path / "bad.toml"
    recipe.write_text(mutated("model", "name", '"mlpnet"') + f'[data]\ndir = "{tmp_path / "nowhere"}"\n')
    return ["--out", str(tmp_path / "run")], "[data] dir"


GRADUAL_MISTAKES = [_existing_run, _overwrite_without_no_resume, _out_is_a_file, _threads_zero, _missing_data_dir]


@pytest.mark.parametrize("make", GRADUAL_MISTAKES, ids=[f.__name__ for f in GRADUAL_MISTAKES])
def test_gradual_command_mistakes(make, tmp_path, capsys):
    recipe = tmp_path / "bad.toml"
    recipe.write_text(render(BASE))
    extra, needle = make(tmp_path)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert main(["gradual", str(recipe), *extra]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("chita-nn: error: ") and needle in lines[0], err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
