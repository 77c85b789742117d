"""TOML recipes of gradual runs (``recipes/*.toml``), checked as a whole against a schema before anything runs.

Every table and key is checked (type, range, finiteness, unknown or misplaced keys, required keys); all problems
are reported at once, each naming the file, table and key.  The ``[prune]`` table is a method and the options of
its recipe (:mod:`.recipe_types`): its keys and their rules are the recipes' own, so a TOML recipe builds the
same objects as Python and the command line.
"""
from dataclasses import dataclass
from pathlib import Path

from ..core.rules import POSITIVE_INT, Rule
from ..zoo import MODELS
from .gradual_config import FIELD_RULES, RUN_OWNED_OPTIONS, GradualConfig
from .oneshot import METHODS
from .recipe_types import option_names, recipe_class, toml_option_rules

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

TOP = ""  # the top level, holding scalars only

#: Rules of the options of the global methods' recipes that a TOML recipe can hold (not callables or datasets,
#: nor what the run sets itself).
PRUNE_OPTION_RULES = {name: rule for name, rule in toml_option_rules(METHODS).items()
                      if name not in RUN_OWNED_OPTIONS}

SCHEMA = {
    TOP: {"seed": FIELD_RULES["seed"], "out": Rule("str")},
    "model": {"name": Rule("choice", choices=MODELS)},
    "data": {"dir": Rule("str"), "train_limit": POSITIVE_INT, "test_limit": POSITIVE_INT},
    "schedule": {key: FIELD_RULES[key] for key in
                 ("target_sparsity", "initial_sparsity", "epochs", "prune_every", "n_events")},
    "optimizer": {key: FIELD_RULES[key] for key in
                  ("lr", "momentum", "weight_decay", "cycle_min_lr", "final_lr", "batch_size", "augment")},
    "prune": {"method": FIELD_RULES["method"], **PRUNE_OPTION_RULES},
}
REQUIRED = {"model": ("name",), "schedule": ("target_sparsity",)}
DEFAULT_METHOD = GradualConfig.method


class RecipeError(ValueError):
    """A recipe that cannot be read or does not fit :data:`SCHEMA`."""


@dataclass
class Recipe:
    """A TOML recipe: which model and data (``[model]``, ``[data]``), the run (``[schedule]``,
    ``[optimizer]``, ``[prune]``), and where it writes (``out``)."""

    model: str
    config: GradualConfig
    out: str
    data_dir: str = None
    train_limit: int = None
    test_limit: int = None


def _where(table, key):
    return key if table == TOP else f"[{table}] {key}"


def _home(key):
    """Where a key belongs, for a hint on a misplaced key."""
    for table, rules in SCHEMA.items():
        if key in rules:
            return "at the top level" if table == TOP else f"in [{table}]"
    return None


def _table_problems(table, values):
    rules = SCHEMA[table]
    problems = [f"{_where(table, key)} must be {rules[key].describe()}, got {value!r}"
                for key, value in values.items() if key in rules and not rules[key].accepts(value)]
    unknown = [key for key in values if key not in rules]
    if unknown:
        hints = [f"{key} belongs {_home(key)}" for key in unknown if _home(key)]
        hints += [] if len(hints) == len(unknown) else [f"known: {', '.join(sorted(rules))}"]
        place = "the top level" if table == TOP else f"[{table}]"
        problems.append(f"{place} has unknown keys {', '.join(unknown)} ({'; '.join(hints)})")
    problems += [f"{_where(table, key)} is required" for key in REQUIRED.get(table, ()) if key not in values]
    return problems


def _method_problems(options):
    """Keys of ``[prune]`` that its method's recipe does not have."""
    method = options.get("method", DEFAULT_METHOD)
    if method not in METHODS:
        return []
    cls = recipe_class(method)
    names = option_names(cls)
    return [f"[prune] {key} does not apply to method {method!r} ({cls.__name__}; its keys: "
            f"{', '.join(name for name in names if name in PRUNE_OPTION_RULES)})"
            for key in options if key in PRUNE_OPTION_RULES and key not in names]


def schema_problems(raw):
    """Every way the parsed TOML ``raw`` breaks :data:`SCHEMA`, as messages naming table and key."""
    top = {key: value for key, value in raw.items() if key not in SCHEMA}
    problems = _table_problems(TOP, top)
    for table in SCHEMA:
        if table == TOP:
            continue
        value = raw.get(table, {})
        if not isinstance(value, dict):
            problems.append(f"{table} must be a table [{table}], got {value!r}")
        else:
            problems += _table_problems(table, value)
    prune = raw.get("prune", {})
    return problems + (_method_problems(prune) if isinstance(prune, dict) else [])


def parse_recipe(text, source="recipe"):
    """Parse and validate a TOML recipe (see ``recipes/*.toml``) into a :class:`Recipe`.

    Raises :class:`RecipeError` naming ``source`` and every table/key at fault.
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        twice = " (a key or table is defined twice)" if "overwrite" in str(exc) or "twice" in str(exc) else ""
        raise RecipeError(f"{source}: not valid TOML: {exc}{twice}") from None
    problems = schema_problems(raw)
    if problems:
        raise RecipeError(f"{source}: " + "; ".join(problems))
    options = dict(raw.get("prune", {}))
    method = options.pop("method", DEFAULT_METHOD)
    try:
        config = GradualConfig(method=method, prune_options=options, seed=raw.get("seed", 0),
                               **raw.get("schedule", {}), **raw.get("optimizer", {}))
    except ValueError as exc:
        raise RecipeError(f"{source}: {exc}") from None
    name = raw["model"]["name"]
    data = raw.get("data", {})
    return Recipe(model=name, config=config, out=raw.get("out", f"outputs/gradual/{name}"),
                  data_dir=data.get("dir"), train_limit=data.get("train_limit"), test_limit=data.get("test_limit"))


def load_recipe(path):
    """:func:`parse_recipe` of a file; an unreadable file is a :class:`RecipeError` naming it."""
    path = Path(path)
    if path.is_dir():
        raise RecipeError(f"{path}: is a directory, not a TOML recipe file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"{path}: no such recipe file") from None
    except UnicodeDecodeError:
        raise RecipeError(f"{path}: not a text (UTF-8) file") from None
    except OSError as exc:
        raise RecipeError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    return parse_recipe(text, str(path))
