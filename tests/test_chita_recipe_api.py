"""Recipes (``chita_nn.methods.recipe_types``): one object per method, holding its own options only.

No option is accepted and ignored: every option of every recipe, given to every recipe (and through the
deprecated ``prune(..., method=...)``, a TOML ``[prune]`` table and the command line) that does not have it, is
an error naming it.  Each recipe prunes a tiny model as the deprecated call form and the engines do, and TOML,
the command line and Python build equal objects."""
import copy
import json
import re

import pytest
import torch
from torch import nn

from chita_nn import (CHITA, CHITAPlusPlus, LayerwiseCHITA, Magnitude, PruneRecipe, SparseGPT, Wanda, losses,
                      magnitude_prune, prune)
from chita_nn.cli import build_parser
from chita_nn.cli.args import UsageError
from chita_nn.cli.recipe_flags import FLAGS, recipes_from_args
from chita_nn.methods.layerwise import prune_layerwise
from chita_nn.methods.recipe_types import RECIPES, legacy_recipe, option_names
from chita_nn.methods.recipes import PRUNE_OPTION_RULES, RecipeError, parse_recipe

pytestmark = pytest.mark.usefixtures("torch_single_thread")

#: A valid value of every option of every recipe, each different from its default.
SAMPLE = {
    "sparsity": 0.5, "pattern": "unstructured", "targets": ["Linear"], "ignore": ["fc9"], "mask": False,
    "scope": "layerwise", "recompute_batchnorm": (torch.zeros(4, 8),), "loss_fn": losses.mse(), "n_rows": 8,
    "samples_per_row": 2, "lam": 0.01, "gradient_term": False, "block_size": 64, "score": "magnitude",
    "line_search": [0.0, 1.0], "loss_samples": 100, "solver_options": {"max_iter": 3}, "max_bytes": 10 ** 9,
    "seed": 3, "n_stages": 3, "hold_stages": 1, "schedule": "cubic", "dampening": 0.05, "budgets": "owl",
    "owl_threshold": 4.0, "owl_lambda": 0.1, "per_row": False, "gram_dtype": torch.float32,
    "error_correction": True, "checkpoint_dir": "checkpoints", "resume": False,
}
#: Options that mean something only with another one set.
CONTEXT = {"owl_threshold": {"budgets": "owl"}, "owl_lambda": {"budgets": "owl"},
           "resume": {"checkpoint_dir": "checkpoints"}, "dampening": {"error_correction": True}}
ALL_OPTIONS = {name for cls in RECIPES.values() for name in option_names(cls)}
PAIRS = [(cls, name) for cls in RECIPES.values() for name in sorted(ALL_OPTIONS) if name not in option_names(cls)]


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))


def data(seed=1):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(96, 8, generator=generator), torch.randint(0, 4, (96,), generator=generator)


def _state(model):
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def assert_same_state(a, b):
    assert list(a) == list(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_every_option_is_sampled():
    assert set(SAMPLE) == ALL_OPTIONS
    assert len(PAIRS) == 94  # (recipe, option it lacks) pairs the tests below go through


def test_every_option_is_taken_by_its_own_recipes():
    for cls in RECIPES.values():
        for name in option_names(cls):
            recipe = cls(**{"sparsity": 0.5, **CONTEXT.get(name, {}), name: SAMPLE[name]})
            assert name in recipe.options(), (cls.__name__, name)
            assert f"{name}=" in repr(recipe)


def test_option_of_another_recipe_is_a_type_error_naming_it():
    """Every option of every recipe, given to every recipe that does not have it."""
    for cls, name in PAIRS:
        with pytest.raises(TypeError) as info:
            cls(sparsity=0.5, **{name: SAMPLE[name]})
        message = str(info.value)
        owners = ", ".join(other.__name__ for other in RECIPES.values() if name in option_names(other))
        assert message == (f"{cls.__name__} has no option {name!r} (an option of {owners}); its options: "
                           f"{', '.join(option_names(cls))}"), message


def test_option_of_another_method_in_the_deprecated_call_is_an_error_and_the_model_untouched():
    model, X = mlp(), data()
    before = _state(model)
    for cls, name in PAIRS:
        with pytest.raises(TypeError, match=rf"^prune\(method={re.escape(repr(cls.method))}\): "
                                            rf"{cls.__name__} has no option {name!r}"):
            prune(model, X, 0.5, method=cls.method, **{name: SAMPLE[name]})
    assert_same_state(before, _state(model))
    assert not hasattr(model[0], "weight_mask")


def test_the_silent_drop_of_the_issue_is_an_error():
    model = mlp()
    with pytest.raises(TypeError, match="^prune\\(method='sparsegpt'\\): SparseGPT has no option 'n_rows' "
                                        "\\(an option of CHITA, CHITAPlusPlus\\); its options: sparsity, "):
        prune(model, data(), 0.7, method="sparsegpt", n_rows=64, lam=1e-3)
    with pytest.raises(TypeError, match="^prune\\(method='chita'\\): CHITA has no option 'n_stages'"):
        prune(model, data(), 0.7, method="chita", n_stages=5)  # CHITA is one stage: it was ignored before


def _toml_literal(value):
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{key} = {_toml_literal(item)}" for key, item in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_literal(item) for item in value) + "]"
    return json.dumps(value)


def _toml(method, options, seed=0):
    lines = [f"seed = {seed}", "[model]", 'name = "digits"', "[schedule]", "target_sparsity = 0.8",
             "initial_sparsity = 0.5", "epochs = 4", "prune_every = 2", "[prune]", f"method = {json.dumps(method)}"]
    return "\n".join(lines + [f"{key} = {_toml_literal(value)}" for key, value in options.items()]) + "\n"


def test_option_of_another_method_in_a_toml_recipe_is_an_error_naming_the_key():
    tried = 0
    for method in ("magnitude", "chita", "chita++"):
        names = option_names(RECIPES[method])
        for key in sorted(set(PRUNE_OPTION_RULES) - set(names)):
            with pytest.raises(RecipeError, match=rf"^r\.toml: \[prune\] {key} does not apply to method "
                                                  rf"{re.escape(repr(method))} \({RECIPES[method].__name__}; "):
                parse_recipe(_toml(method, {key: SAMPLE[key]}), "r.toml")
            tried += 1
    assert tried >= 10


#: The command-line form of each flag's sample value (the options set by the commands themselves: given).
ARGV = {"pattern": ["--pattern", "unstructured"], "targets": ["--targets", "Linear"], "ignore": ["--ignore", "fc9"],
        "n_rows": ["--n-rows", "8"], "samples_per_row": ["--samples-per-row", "2"], "lam": ["--lam", "0.01"],
        "gradient_term": ["--no-gradient-term"], "scope": ["--scope", "layerwise"],
        "block_size": ["--block-size", "64"], "score": ["--score", "magnitude"], "n_stages": ["--stages", "3"],
        "hold_stages": ["--hold-stages", "1"],
        "schedule": ["--schedule", "cubic"], "dampening": ["--dampening", "0.05"], "budgets": ["--budgets", "owl"],
        "owl_threshold": ["--owl-threshold", "4"], "owl_lambda": ["--owl-lambda", "0.1"],
        "per_row": ["--no-per-row"], "error_correction": ["--error-correction"]}
GIVEN = ("sparsity", "loss_fn", "recompute_batchnorm")


def _args(*argv, command="prune"):
    return build_parser().parse_args([command, *(["--model", "digits"] if command == "prune" else []), *argv])


def test_flag_of_another_method_is_a_usage_error_naming_the_flag():
    assert set(ARGV) | set(GIVEN) == set(FLAGS)
    for method, cls in RECIPES.items():
        for name in sorted(set(FLAGS) - set(option_names(cls))):
            args = _args("--method", method, "--sparsity", "0.5", *ARGV.get(name, ()))
            later = [] if name in ARGV else [name]  # given by the command itself
            with pytest.raises(UsageError, match=rf"^{re.escape(FLAGS[name])} does not apply to "
                                                 rf"{re.escape(method)} \({cls.__name__}; its flags: "):
                recipes_from_args(args, [method], later=later)
    with pytest.raises(UsageError, match=r"^--n-rows applies to none of --methods magnitude sparsegpt$"):
        recipes_from_args(_args("--methods", "magnitude", "sparsegpt", "--n-rows", "8", command="demo"),
                          ["magnitude", "sparsegpt"], sparsity=0.5)


@pytest.mark.parametrize("argv, toml, expected", [
    (["--method", "chita++", "--sparsity", "0.8", "--n-rows", "50", "--stages", "3", "--hold-stages", "1",
      "--schedule", "cubic", "--targets", "Linear", "--ignore", "fc3*"],
     {"n_rows": 50, "n_stages": 3, "hold_stages": 1, "schedule": "cubic", "targets": ["Linear"], "ignore": ["fc3*"]},
     CHITAPlusPlus(sparsity=0.8, n_rows=50, n_stages=3, hold_stages=1, schedule="cubic", targets=["Linear"],
                   ignore=["fc3*"])),
    (["--method", "chita", "--sparsity", "0.8", "--block-size", "layer", "--score", "magnitude", "--no-gradient-term",
      "--lam", "0.01"],
     {"block_size": "layer", "score": "magnitude", "gradient_term": False, "lam": 0.01},
     CHITA(sparsity=0.8, block_size="layer", score="magnitude", gradient_term=False, lam=0.01)),
    (["--method", "magnitude", "--sparsity", "0.8", "--scope", "layerwise"], {"scope": "layerwise"},
     Magnitude(sparsity=0.8, scope="layerwise")),
    (["--method", "sparsegpt", "--pattern", "2:4", "--block-size", "64", "--dampening", "0.05", "--no-per-row"],
     None, SparseGPT(pattern="2:4", block_size=64, dampening=0.05, per_row=False)),
    (["--method", "wanda", "--sparsity", "0.6", "--budgets", "owl", "--owl-lambda", "0.1"], None,
     Wanda(sparsity=0.6, budgets="owl", owl_lambda=0.1)),
    (["--method", "chita-layerwise", "--pattern", "2:4", "--error-correction"], None,
     LayerwiseCHITA(pattern="2:4", error_correction=True)),
], ids=lambda value: value[1] if isinstance(value, list) else None)
def test_toml_cli_and_python_build_the_same_recipe(argv, toml, expected):
    method = argv[1]
    assert recipes_from_args(_args(*argv), [method]) == {method: expected}
    if toml is not None:  # a gradual run's [prune] table (its event at the target sparsity, seed 0 + 0)
        config = parse_recipe(_toml(method, toml), "r.toml").config
        assert config.event_recipe(0, config.target_sparsity) == expected
    assert legacy_recipe(None, {"method": method, **expected.options()})[0] == expected  # prune(..., method=)


def test_demo_defaults_go_to_the_recipes_that_have_them():
    args = _args("--methods", "magnitude", "chita++", "sparsegpt", "--lam", "0.01", command="demo")
    assert recipes_from_args(args, args.methods, sparsity=0.5) == {
        "magnitude": Magnitude(sparsity=0.5),
        "chita++": CHITAPlusPlus(sparsity=0.5, n_rows=256, samples_per_row=4, n_stages=5, lam=0.01),
        "sparsegpt": SparseGPT(sparsity=0.5)}


RECIPE_CASES = {
    "magnitude": (dict(scope="layerwise"), lambda model, X: magnitude_prune(model, 0.5, scope="layerwise")),
    "chita": (dict(n_rows=24, samples_per_row=2, lam=1e-2, block_size="layer"), None),
    "chita++": (dict(n_rows=24, n_stages=3, hold_stages=1), None),
    "chita-layerwise": (dict(dampening=0.05), lambda model, X: prune_layerwise(model, X, 0.5, dampening=0.05)),
    "sparsegpt": (dict(block_size=4), lambda model, X: prune_layerwise(model, X, 0.5, method="sparsegpt",
                                                                       block_size=4)),
    "wanda": (dict(per_row=False), lambda model, X: prune_layerwise(model, X, 0.5, method="wanda", per_row=False)),
}


@pytest.mark.parametrize("method", list(RECIPE_CASES))
def test_each_recipe_prunes_as_the_old_call_form_and_the_engine(method):
    options, engine = RECIPE_CASES[method]
    X = data()
    results = []
    model = mlp()
    report = prune(model, X, RECIPES[method](sparsity=0.5, **options))
    results.append(_state(model))
    assert abs(report.sparsity - 0.5) < 0.02 and all(hasattr(m, "weight_mask") for m in model[::2])
    model = mlp()
    with pytest.warns(DeprecationWarning, match=re.escape(f"use prune(model, data, {RECIPES[method].__name__}(")):
        prune(model, X, 0.5, method=method, **options)
    results.append(_state(model))
    if engine is not None:
        model = mlp()
        engine(model, X)
        results.append(_state(model))
    for other in results[1:]:
        assert_same_state(results[0], other)


@pytest.mark.parametrize("cls", [LayerwiseCHITA, SparseGPT, Wanda])
def test_layerwise_recipes_on_a_tiny_llama_prune_as_the_old_call_form(cls):
    from test_chita_layerwise import tiny_llama, token_batches

    batches = token_batches()
    new, old = tiny_llama(), tiny_llama()
    report = prune(new, batches, cls(pattern="2:4"))
    with pytest.warns(DeprecationWarning):
        prune(old, batches, method=cls.method, pattern="2:4")
    assert_same_state(_state(new), _state(old))
    assert report.settings["blocks"] == "model.layers (2)" and abs(report.sparsity - 0.5) < 1e-9


BAD_VALUES = [
    (CHITA, dict(sparsity=1.5), ValueError, r"^CHITA: sparsity must be a finite number in \[0, 1\), got 1\.5$"),
    (Magnitude, dict(), ValueError, "^Magnitude: sparsity is required with pattern=unstructured$"),
    (SparseGPT, dict(sparsity=0.5, block_size="layer"), ValueError, "^SparseGPT: block_size must be"),
    (CHITA, dict(sparsity=0.5, block_size="layer2"), ValueError,
     "^CHITA: block_size must be one of 'layer' or an integer >= 1, got 'layer2'$"),
    (CHITA, dict(sparsity=0.5, line_search=True), ValueError, "^CHITA: line_search must be False or a list"),
    (CHITA, dict(sparsity=0.5, line_search=[0.5, 2.0]), ValueError, "^CHITA: line_search must be"),
    (CHITA, dict(sparsity=0.5, line_search=False, loss_samples=10), ValueError,
     r"^CHITA: loss_samples applies only with a line search \(line_search not False\), got loss_samples=10$"),
    (CHITA, dict(sparsity=0.5, solver_options={"k": 3}), ValueError, "^CHITA: solver_options: 'k' is set by"),
    (CHITA, dict(sparsity=0.5, solver_options={"bogus": 1}), ValueError,
     r"^CHITA: solver_options: unknown option 'bogus'; options \(of l0reg.solve\): max_iter, "),
    (CHITA, dict(sparsity=0.5, pattern="channel", block_size=64), ValueError, "^CHITA: block_size must be None or"),
    (CHITA, dict(sparsity=0.5, loss_fn="mse"), TypeError, "^CHITA: loss_fn must be callable, got str$"),
    (CHITAPlusPlus, dict(sparsity=0.5, n_stages=3, hold_stages=3), ValueError,
     r"^CHITAPlusPlus: hold_stages must be an integer in \[0, n_stages=3\), got 3$"),
    (CHITAPlusPlus, dict(sparsity=0.5, n_stages=0), ValueError, "^CHITAPlusPlus: n_stages must be an integer >= 1"),
    (Wanda, dict(sparsity=0.5, dampening=0.1), ValueError,
     "^Wanda: dampening applies only with error_correction=True, got dampening=0.1$"),
    (SparseGPT, dict(sparsity=0.5, owl_lambda=0.2), ValueError,
     "^SparseGPT: owl_lambda applies only with budgets='owl'"),
    (SparseGPT, dict(pattern="2:4", budgets="owl"), ValueError, "^SparseGPT: budgets='owl' needs an unstructured"),
    (SparseGPT, dict(sparsity=0.5, pattern="channel"), ValueError, "^SparseGPT: pattern='channel' is not supported"),
    (SparseGPT, dict(sparsity=0.7, pattern="2:4"), ValueError, "^SparseGPT: sparsity=0.7 contradicts"),
    (SparseGPT, dict(sparsity=0.5, resume=False), ValueError, "^SparseGPT: resume applies only with a checkpoint_dir"),
    (SparseGPT, dict(sparsity=0.5, checkpoint_dir=3), ValueError, "^SparseGPT: checkpoint_dir must be a folder"),
    (LayerwiseCHITA, dict(sparsity=0.5, gram_dtype=torch.int32), ValueError,
     "^LayerwiseCHITA: gram_dtype must be a floating-point torch dtype"),
    (LayerwiseCHITA, dict(sparsity=0.5, solver_options={"budget": 3}), ValueError,
     "^LayerwiseCHITA: solver_options: 'budget' is set for every layer"),
    (Magnitude, dict(sparsity=0.5, targets=[3]), TypeError, "^Magnitude: targets entries must be"),
    (Magnitude, dict(sparsity=0.5, mask="yes"), ValueError, "^Magnitude: mask must be true or false, got 'yes'$"),
    (Magnitude, dict(sparsity=0.5, scope="local"), ValueError, "^Magnitude: scope must be one of"),
]


@pytest.mark.parametrize("cls, options, error, match", BAD_VALUES,
                         ids=[f"{c.__name__}-{'-'.join(map(str, o))}" for c, o, _, _ in BAD_VALUES])
def test_bad_value_is_a_one_line_error_naming_recipe_and_option(cls, options, error, match):
    with pytest.raises(error, match=match) as info:
        cls(**options)
    assert "\n" not in str(info.value)


def test_recipes_are_keyword_only_frozen_and_checked_again_when_copied():
    import dataclasses

    with pytest.raises(TypeError, match=r"^CHITA takes its options by keyword, e.g. CHITA\(sparsity=0.5\)"):
        CHITA(0.5)
    with pytest.raises(TypeError, match="^PruneRecipe is a base class; use one of Magnitude, CHITA, "):
        PruneRecipe(sparsity=0.5)
    recipe = SparseGPT(sparsity=0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.sparsity = 0.9
    assert dataclasses.replace(recipe, sparsity=0.7) == SparseGPT(sparsity=0.7)
    with pytest.raises(ValueError, match="^SparseGPT: sparsity must be"):
        dataclasses.replace(recipe, sparsity=2.0)
    assert repr(recipe) == "SparseGPT(sparsity=0.5)" and repr(CHITA(sparsity=0.5, targets=["Linear"])) == \
        "CHITA(sparsity=0.5, targets=('Linear',))"


def test_prune_refuses_options_beside_a_recipe_and_other_third_arguments():
    model = mlp()
    with pytest.raises(TypeError, match=r"^prune\(model, data, recipe\) takes the options in the recipe, got "
                                        r"n_rows: CHITA\(\.\.\., n_rows=\.\.\.\)$"):
        prune(model, data(), CHITA(sparsity=0.5), n_rows=8)
    with pytest.raises(TypeError, match="^prune\\(model, data, recipe\\): recipe must be a recipe such as"):
        prune(model, data(), CHITA)
    with pytest.raises(TypeError, match="^prune\\(\\) got sparsity twice"):
        prune(model, data(), 0.5, sparsity=0.5)
    with pytest.raises(ValueError, match="^method must be one of"):
        prune(model, data(), 0.5, method="obs")
    assert not hasattr(model[0], "weight_mask")
