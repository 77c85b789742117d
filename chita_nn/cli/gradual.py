"""``chita-nn gradual RECIPE.toml``: gradual pruning with fine-tuning, described by a TOML recipe.

Registered as a subcommand of ``chita-nn`` by ``chita_nn.cli.build_parser``.
"""
import argparse
import sys

from .args import UsageError
from .paths import check_output_folder
from .prune import data_folder, use_threads

RUN_FILES = ("checkpoint.pt", "checkpoint.prev.pt", "log.jsonl", "final.pt")


def _check_out(args, recipe, out):
    what = "--out" if args.out else f"{args.recipe}: out"
    if args.overwrite and not args.no_resume:
        raise UsageError("--overwrite replaces a previous run, so it needs --no-resume (without --no-resume a "
                         "previous run is resumed)")
    check_output_folder(out, what, previous=RUN_FILES, overwrite=args.overwrite or not args.no_resume,
                        hint="pass --overwrite (with --no-resume) to start over, or drop --no-resume to resume it")


def cmd_gradual(args):
    import torch  # noqa: F401 -- first, so that a missing torch is reported before anything else

    from ..core.runtime import evaluate
    from ..methods.gradual import load_recipe, resume_point, run_gradual
    from ..zoo.problems import load_problem

    recipe = load_recipe(args.recipe)
    out = args.out or recipe.out
    _check_out(args, recipe, out)
    if not args.no_resume:
        resume_point(out, recipe.config)  # a damaged or foreign checkpoint is reported before any work
    data_dir = data_folder(recipe.model, recipe.data_dir, f"{args.recipe}: [data] dir")
    use_threads(args, recipe.model)
    model, train, test = load_problem(recipe.model, data_dir, seed=recipe.config.seed,
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
    parser.add_argument("recipe", metavar="RECIPE", help="TOML recipe file (see recipes/README.md)")
    parser.add_argument("--out", default=None, metavar="PATH", help="output folder (default: the recipe's 'out')")
    parser.add_argument("--no-resume", action="store_true",
                        help="start over instead of resuming the run in the output folder (needs --overwrite "
                             "if there is one)")
    parser.add_argument("--overwrite", action="store_true", help="with --no-resume: replace a previous run")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=sys.stderr.isatty(),
                        help="progress bars (default: on when stderr is a terminal)")
    parser.set_defaults(func=cmd_gradual)
    return parser


def add_gradual_parser(subparsers, parents=()):
    """Add the ``gradual`` subcommand to an argparse ``subparsers`` object; returns its parser."""
    return _add_arguments(subparsers.add_parser(
        "gradual", parents=list(parents), help="gradual pruning with fine-tuning from a TOML recipe",
        description="Gradual pruning with fine-tuning, checkpointed every epoch; rerunning resumes."))
