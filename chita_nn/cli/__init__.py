"""Command line: ``chita-nn prune`` (prune a model, save it and its report), ``chita-nn demo`` and
``chita-nn gradual`` (see ``chita_nn.cli.gradual``)."""
import argparse
import copy
import logging
import os
import sys
import time

import torch

from ..core.runtime import evaluate
from ..core.writeback import save_pruned
from ..methods.blocks import SCORES
from ..methods.oneshot import DEFAULTS, METHODS, prune
from ..methods.schedules import SCHEDULES
from ..zoo import datasets as data_mod
from ..zoo import models
from .gradual import add_gradual_parser

MODELS = ("digits", "mlpnet", "resnet20")


def load_problem(name, data_dir=None, seed=0, epochs=60, train_limit=None, test_limit=None):
    """``(model, train, test)`` for a model name; ``digits`` trains a DigitsMLP in a few seconds."""
    if name == "digits":
        train, test = data_mod.load_digits_data(seed=seed)
        return models.train_digits_mlp(train, epochs=epochs, seed=seed), train, test
    if name == "mlpnet":
        model, load = models.load_mlpnet(data_dir), data_mod.load_mnist
    elif name == "resnet20":
        model, load = models.load_resnet20(data_dir), data_mod.load_cifar10
    else:
        raise ValueError(f"model must be one of {MODELS}, got {name!r}")
    return model, load("train", data_dir, limit=train_limit), load("test", data_dir, limit=test_limit)


def prune_options(args):
    """Keyword arguments of :func:`chita_nn.prune` from the parsed command line."""
    options = dict(method=args.method, n_rows=args.n_rows, samples_per_row=args.samples_per_row, lam=args.lam,
                   n_stages=args.stages, hold_stages=args.hold_stages, schedule=args.schedule, scope=args.scope,
                   seed=args.seed, gradient_term=args.gradient_term, score=args.score)
    if args.ignore is not None:
        options["ignore"] = args.ignore
    if args.block_size is not None:
        options["block_size"] = "layer" if args.block_size == "layer" else int(args.block_size)
    return options


def _add_prune_arguments(parser):
    parser.add_argument("--n-rows", type=int, default=None, help=f"Fisher rows n (default {DEFAULTS['n_rows']})")
    parser.add_argument("--samples-per-row", type=int, default=None,
                        help=f"samples averaged per row m (default {DEFAULTS['samples_per_row']})")
    parser.add_argument("--lam", type=float, default=None, help=f"ridge lambda (default {DEFAULTS['lam']})")
    parser.add_argument("--stages", type=int, default=None,
                        help=f"CHITA++ stages (default {DEFAULTS['n_stages']})")
    parser.add_argument("--hold-stages", type=int, default=None,
                        help="of these, stages at the target sparsity (default: stages // 5)")
    parser.add_argument("--schedule", choices=SCHEDULES, default="exponential")
    parser.add_argument("--scope", choices=("global", "layerwise"), default="global")
    parser.add_argument("--block-size", default=None, help="'layer' or an int: block-diagonal Fisher")
    parser.add_argument("--gradient-term", action=argparse.BooleanOptionalAction, default=None,
                        help=f"b = A w - e/m instead of A w (default {DEFAULTS['gradient_term']})")
    parser.add_argument("--score", choices=SCORES, default="fisher",
                        help="screening score that sets the block budgets and the solver's start")
    parser.add_argument("--ignore", "--exclude", nargs="+", default=None, metavar="PATTERN",
                        help="modules or parameters not to prune: globs, 're:<regex>' or class names, e.g. '*downsample*'")
    parser.add_argument("--seed", type=int, default=0)


def cmd_prune(args):
    model, train, test = load_problem(args.model, args.data_dir, seed=args.seed, epochs=args.epochs,
                                      test_limit=args.test_limit)
    before = evaluate(model, test)
    bn = train if (args.recompute_bn and args.method != "magnitude") or args.recompute_bn_all else None
    report = prune(model, train, args.sparsity, recompute_batchnorm=bn, progress=True, **prune_options(args))
    after = evaluate(model, test)
    print(report)
    print(f"test accuracy: dense {100 * before['accuracy']:.2f}%  ->  pruned {100 * after['accuracy']:.2f}%  "
          f"(loss {before['loss']:.4f} -> {after['loss']:.4f})")
    os.makedirs(args.out, exist_ok=True)
    save_pruned(model, os.path.join(args.out, "pruned.pt"), report)
    report.settings.update(model=args.model, test_accuracy_dense=before["accuracy"],
                           test_accuracy=after["accuracy"])
    report.to_json(os.path.join(args.out, "report.json"))
    print(f"saved {os.path.join(args.out, 'pruned.pt')} and {os.path.join(args.out, 'report.json')}")
    return 0


def cmd_demo(args):
    t0 = time.perf_counter()
    model, train, test = load_problem("digits", seed=args.seed, epochs=args.epochs)
    dense = evaluate(model, test)["accuracy"]
    print(f"digits MLP trained in {time.perf_counter() - t0:.1f}s: dense test accuracy {100 * dense:.2f}%")
    print(f"{'sparsity':>8} " + " ".join(f"{m:>10}" for m in args.methods) + "   (test accuracy %)")
    for sparsity in args.sparsities:
        cells = []
        for method in args.methods:
            pruned = copy.deepcopy(model)
            prune(pruned, train, sparsity, **{**prune_options(args), "method": method})
            cells.append(f"{100 * evaluate(pruned, test)['accuracy']:>10.2f}")
        print(f"{sparsity:>8.2f} " + " ".join(cells))
    print(f"total {time.perf_counter() - t0:.1f}s")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="chita-nn", description="CHITA / CHITA++ pruning of PyTorch networks")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="-v: info logs, -vv: debug")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: 1 for the tiny digits model, torch's default otherwise)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prune", help="prune a model and save pruned.pt + report.json")
    p.add_argument("--model", choices=MODELS, required=True)
    p.add_argument("--sparsity", type=float, required=True)
    p.add_argument("--method", choices=METHODS, default="chita++")
    p.add_argument("--data-dir", default=None, help="data folder (default: $CHITA_DATA_DIR)")
    p.add_argument("--out", default="outputs/prune", help="output folder")
    p.add_argument("--test-limit", type=int, default=None, help="evaluate on the first N test samples")
    p.add_argument("--epochs", type=int, default=60, help="training epochs of the digits MLP (--model digits)")
    p.add_argument("--recompute-bn", action="store_true",
                   help="re-estimate BatchNorm statistics on the training data after CHITA/CHITA++")
    p.add_argument("--recompute-bn-all", action="store_true", help="... after every method, MP included")
    _add_prune_arguments(p)
    p.set_defaults(func=cmd_prune)

    d = sub.add_parser("demo", help="digits MLP end to end: MP vs CHITA vs CHITA++ (no data folder needed)")
    d.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.7, 0.8, 0.9, 0.95])
    d.add_argument("--methods", choices=METHODS, nargs="+", default=list(METHODS))
    d.add_argument("--epochs", type=int, default=60, help="training epochs of the digits MLP")
    _add_prune_arguments(d)
    # Digits has ~1,300 training images and 6,464 weights: a smaller Fisher
    # sample and fewer stages keep the demo to about a minute.
    d.set_defaults(method="chita++", n_rows=256, samples_per_row=4, stages=5)
    d.set_defaults(func=cmd_demo)

    add_gradual_parser(sub)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
                        format="%(levelname)s %(name)s: %(message)s")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    elif getattr(args, "model", "digits") == "digits" and args.command != "gradual":
        # A thread pool only adds synchronisation to a model this small (and
        # stalls badly when the cores are shared).
        torch.set_num_threads(1)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, MemoryError) as exc:
        print(f"chita-nn: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
