"""``chita-nn gradual RECIPE.toml``: gradual pruning with fine-tuning, described by a TOML recipe.

Registered as a subcommand of ``chita-nn`` by ``chita_nn.cli.build_parser``.
"""

from ..core.runtime import evaluate
from ..methods.gradual import load_recipe, run_gradual


def cmd_gradual(args):
    from . import load_problem  # here, not at the top: cli.py imports this module

    recipe = load_recipe(args.recipe)
    out = args.out or recipe.out
    model, train, test = load_problem(recipe.model, recipe.data_dir, seed=recipe.config.seed,
                                      train_limit=recipe.train_limit, test_limit=recipe.test_limit)
    dense = evaluate(model, test)["accuracy"]
    result = run_gradual(model, train, test, recipe.config, out, resume=not args.no_resume,
                         progress=args.progress)
    if result.resumed_from:
        print(f"resumed after epoch {result.resumed_from}")
    for r in result.history:
        event = "" if r["event_sparsity"] is None else f"  prune -> {r['event_sparsity']:.4f}"
        print(f"epoch {r['epoch'] + 1:>3}: loss {r['train_loss']:.4f}  test acc {100 * r['test_accuracy']:.2f}%  "
              f"sparsity {r['sparsity']:.4f}  lr {r['lr']:.2e}  {r['seconds']:.1f}s{event}")
    print(f"test accuracy: dense {100 * dense:.2f}%  ->  gradual {100 * result.test_accuracy:.2f}% at sparsity "
          f"{result.sparsity:.4f}; outputs in {out}")
    return 0


def _add_arguments(parser):
    parser.add_argument("recipe", help="TOML recipe file (see recipes/)")
    parser.add_argument("--out", default=None, help="output folder (default: the recipe's 'out')")
    parser.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    parser.add_argument("--progress", action="store_true", help="progress bars")
    parser.set_defaults(func=cmd_gradual)
    return parser


def add_gradual_parser(subparsers):
    """Add the ``gradual`` subcommand to an argparse ``subparsers`` object; returns its parser."""
    return _add_arguments(subparsers.add_parser("gradual", help="gradual pruning with fine-tuning from a "
                                                                "TOML recipe"))
