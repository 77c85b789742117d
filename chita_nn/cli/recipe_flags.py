"""The flags of recipe options (``chita-nn prune`` and ``demo``) and the recipes they build.

Each flag stores into the recipe option of the same name (``--stages`` into ``n_stages``) and defaults to None
(not given), so :func:`recipes_from_args` passes a recipe exactly the options the user gave, and a flag that the
method does not have is an error naming it: the same objects and checks as ``prune(model, data, SparseGPT(...))``
in Python and a TOML ``[prune]`` table (:mod:`chita_nn.methods.recipe_types`).
"""
import argparse

from ..methods.schedules import SCHEDULES
from .args import LibraryConstant, UsageError, count, library_default, non_negative, positive_int

ONESHOT = "chita_nn.methods.oneshot"
RECIPES = "chita_nn.methods.recipe_types"
METHODS = LibraryConstant(RECIPES, "METHOD_NAMES")

#: recipe option -> its flag, for the options given by :func:`add_recipe_arguments` and by the commands
#: themselves (``--sparsity``, ``--loss``, ``--recompute-bn``).
FLAGS = {"sparsity": "--sparsity", "pattern": "--pattern", "targets": "--targets", "ignore": "--ignore",
         "loss_fn": "--loss", "n_rows": "--n-rows", "samples_per_row": "--samples-per-row", "lam": "--lam",
         "gradient_term": "--gradient-term", "scope": "--scope", "block_size": "--block-size", "score": "--score",
         "recompute_batchnorm": "--recompute-bn(-all)", "n_stages": "--stages", "hold_stages": "--hold-stages",
         "schedule": "--schedule", "dampening": "--dampening", "budgets": "--budgets",
         "owl_threshold": "--owl-threshold", "owl_lambda": "--owl-lambda", "per_row": "--per-row",
         "error_correction": "--error-correction"}


def _block_size(text):
    if text == "layer":
        return text
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be 'layer' or an integer >= 1, got {text!r}") from None


def add_recipe_arguments(parser, **defaults):
    """The flags of the recipe options; ``defaults`` (by option) are the command's own defaults, given to the
    recipes that have the option (see :func:`recipes_from_args`)."""
    def numeric(option, type, help, source=None):
        if option in defaults:
            help = f"{help} (default {defaults[option]})"
        elif source is not None:
            help = f"{help} (default %(library_default)s)"
        action = parser.add_argument(FLAGS[option], dest=option, type=type, default=None, metavar="N", help=help)
        if source is not None and option not in defaults:
            library_default(action, *source)

    def choice(option, choices, help, owner):
        library_default(parser.add_argument(
            FLAGS[option], dest=option, choices=choices, default=None, metavar=option.upper(),
            help=f"{help} (%(choices)s; default %(library_default)s)"), RECIPES, owner, option)

    def switch(option, help, source):
        library_default(parser.add_argument(FLAGS[option], dest=option, action=argparse.BooleanOptionalAction,
                                            default=None, help=f"{help} (default %(library_default)s)"), *source)

    parser.set_defaults(recipe_defaults=defaults)
    fisher = (ONESHOT, "DEFAULTS")
    numeric("n_rows", positive_int, "CHITA: Fisher rows n", (*fisher, "n_rows"))
    numeric("samples_per_row", positive_int, "CHITA: samples averaged per Fisher row m")
    numeric("lam", non_negative, "CHITA: ridge lambda, the trust region around the current weights",
            (*fisher, "lam"))
    numeric("n_stages", positive_int, "CHITA++: stages", (*fisher, "n_stages"))
    parser.add_argument(FLAGS["hold_stages"], dest="hold_stages", type=count, default=None, metavar="N",
                        help="CHITA++: of these, stages at the target sparsity (default: stages // 5)")
    choice("schedule", SCHEDULES, "CHITA++: sparsity schedule of the stages", "CHITAPlusPlus")
    choice("scope", LibraryConstant(ONESHOT, "SCOPES"),
           "magnitude, CHITA: global: one budget for all layers; layerwise: the same sparsity in every layer", "CHITA")
    parser.add_argument(FLAGS["block_size"], dest="block_size", type=_block_size, default=None, metavar="layer|N",
                        help="CHITA: block-diagonal Fisher, one block per layer or blocks of at most N columns; "
                             "SparseGPT: columns per lazy update (default 128)")
    switch("gradient_term", "CHITA: b = A w - e/m instead of A w", (*fisher, "gradient_term"))
    choice("score", LibraryConstant("chita_nn.methods.blocks", "SCORES"),
           "CHITA: screening score that sets the block budgets and the solver's start", "CHITA")
    numeric("dampening", non_negative, "layer-wise: lambda = dampening * mean(diag H)",
            (RECIPES, "SparseGPT", "dampening"))
    choice("budgets", LibraryConstant("chita_nn.methods.layerwise", "BUDGETS"),
           "layer-wise: the same sparsity in every layer, or OWL's outlier-weighted ones", "SparseGPT")
    numeric("owl_threshold", non_negative, "layer-wise, --budgets owl: outlier threshold M",
            (RECIPES, "SparseGPT", "owl_threshold"))
    numeric("owl_lambda", non_negative, "layer-wise, --budgets owl: half-spread of the sparsities",
            (RECIPES, "SparseGPT", "owl_lambda"))
    switch("per_row", "layer-wise: the same number of weights kept in every row (else per layer)",
           (RECIPES, "SparseGPT", "per_row"))
    switch("error_correction", "layer-wise: fit the dense model's outputs inside the blocks",
           (RECIPES, "SparseGPT", "error_correction"))
    parser.add_argument(FLAGS["ignore"], "--exclude", dest="ignore", nargs="+", default=None, metavar="PATTERN",
                        help="modules or parameters not to prune: globs, 're:<regex>' or class names, e.g. "
                             "'*downsample*'")
    parser.add_argument(FLAGS["targets"], dest="targets", nargs="+", default=None, metavar="PATTERN",
                        help="modules to prune: class names (Linear, Conv2d, Conv1D, MultiheadAttention, ...), "
                             "globs or 're:<regex>' (default: Linear and Conv layers; layer-wise: Linear)")
    parser.add_argument(FLAGS["pattern"], dest="pattern", default=None, metavar="PATTERN",
                        help="sparsity pattern: unstructured (default), N:M such as 2:4 or 4:8 (along each "
                             "weight's rows; --sparsity may then be left out), or channel")
    parser.add_argument("--seed", type=count, default=0,
                        help="random seed of the digits MLP's training and of the CHITA methods' samples "
                             "(default %(default)s)")


def recipes_from_args(args, methods, *, later=(), **given):
    """``{method: recipe}`` for ``methods`` (checked before any model loads) from the recipe flags given in
    ``args`` and ``given`` (options the command made from its own flags, ``{option: value}``; None: not given).
    ``later`` names options that the command sets once the model is loaded (``dataclasses.replace``).  Every
    option given must apply to the method (to one of the methods, for the demo's table): else a
    :class:`UsageError` naming its flag.  The command's defaults (``args.recipe_defaults``) and ``--seed`` go to
    the recipes that have the option."""
    from ..methods.recipe_types import option_names, recipe_class

    options = {name: getattr(args, name) for name in FLAGS if getattr(args, name, None) is not None}
    options.update({name: value for name, value in given.items() if value is not None})
    classes = {method: recipe_class(method) for method in methods}
    for name in [*options, *later]:
        if not any(name in option_names(cls) for cls in classes.values()):
            if len(classes) > 1:
                raise UsageError(f"{FLAGS[name]} applies to none of --methods {' '.join(classes)}")
            method, cls = next(iter(classes.items()))
            flags = [FLAGS[option] for option in option_names(cls) if option in FLAGS]
            raise UsageError(f"{FLAGS[name]} does not apply to {method} ({cls.__name__}; its flags: "
                             f"{', '.join(flags)})")
    defaults = {**args.recipe_defaults, "seed": args.seed}
    recipes = {}
    for method, cls in classes.items():
        names = option_names(cls)
        chosen = {name: value for name, value in {**defaults, **options}.items() if name in names}
        try:
            recipes[method] = cls(**chosen)
        except ValueError as exc:
            raise UsageError(f"--method {method}: {exc}") from None
    return recipes
