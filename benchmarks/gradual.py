"""Gradual pruning (prune events + fine-tuning) vs one-shot CHITA++ at the same sparsity.

For each recipe (``recipes/<model>_gradual.toml``): the pretrained model, one-shot CHITA++ with the recipe's
prune options (ResNet20: BatchNorm statistics re-estimated on the training data afterwards), and the gradual run
of the recipe. Test accuracy on the full test set.

    PYTHONPATH=. CHITA_DATA_DIR=/work/shared/data python benchmarks/gradual.py            # ~30 min on 2 cores
    PYTHONPATH=. CHITA_DATA_DIR=/work/shared/data python benchmarks/gradual.py --models mlpnet
"""
import argparse
import copy
import dataclasses
import json
import logging
import time
from pathlib import Path

from _common import environment, report

from chita_nn.zoo.problems import load_problem
from chita_nn.core.runtime import evaluate
from chita_nn.methods.gradual import load_recipe, run_gradual
from chita_nn.methods.oneshot import prune
from chita_nn.zoo.datasets import load_cifar10, load_mnist

ROOT = Path(__file__).resolve().parents[1]
FULL_TEST = {"mlpnet": load_mnist, "resnet20": load_cifar10}


def run_model(name, out_root, epochs=None):
    recipe = load_recipe(ROOT / "recipes" / f"{name}_gradual.toml")
    config = recipe.config if epochs is None else dataclasses.replace(recipe.config, epochs=epochs)
    model, train, _ = load_problem(recipe.model, recipe.data_dir, seed=config.seed, train_limit=recipe.train_limit,
                                   test_limit=recipe.test_limit)
    _, _, log_test = load_problem(recipe.model, recipe.data_dir, test_limit=recipe.test_limit)
    test = FULL_TEST[name]("test", recipe.data_dir)
    dense = evaluate(model, test)["accuracy"]

    one_shot = copy.deepcopy(model)
    t0 = time.perf_counter()
    bn = train if name == "resnet20" else None
    recipe = config.event_recipe(0, config.target_sparsity)  # the run's method and options, seed config.seed
    rep = prune(one_shot, train, dataclasses.replace(recipe, recompute_batchnorm=bn))
    one_shot_time = time.perf_counter() - t0
    one_shot_acc = evaluate(one_shot, test)["accuracy"]
    logging.info("%s one-shot %s: %.4f at sparsity %.4f (%.0fs)", name, config.method, one_shot_acc,
                 rep.sparsity, one_shot_time)

    t0 = time.perf_counter()
    result = run_gradual(model, train, log_test, config, out_root / name, resume=False)
    gradual_time = time.perf_counter() - t0
    gradual_acc = evaluate(model, test)["accuracy"]
    summary = dict(model=name, sparsity=config.target_sparsity, dense=100 * dense,
                   one_shot=100 * one_shot_acc, one_shot_s=one_shot_time, gradual=100 * gradual_acc,
                   gradual_s=gradual_time, epochs=config.epochs, events=config.n_events,
                   train_samples=len(train))
    epochs = [dict(model=name, epoch=r["epoch"] + 1, event=r["event_sparsity"], sparsity=r["sparsity"],
                   train_loss=r["train_loss"], acc_after_prune=None if r["test_accuracy_after_prune"] is None
                   else 100 * r["test_accuracy_after_prune"], acc=100 * r["test_accuracy"], lr=r["lr"],
                   seconds=r["seconds"]) for r in result.history]
    return summary, epochs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(FULL_TEST), default=["mlpnet", "resnet20"])
    parser.add_argument("--out", default="outputs/gradual_bench", help="run folders (checkpoints, logs, plots)")
    parser.add_argument("--epochs", type=int, default=None, help="override the recipes' epochs (smoke runs)")
    parser.add_argument("--force", action="store_true", help="rerun models whose results are cached in --out")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    meta = environment(args)
    summaries, epochs = [], []
    for name in args.models:
        cache = Path(args.out) / name / "benchmark.json"
        if cache.exists() and not args.force:
            summary, rows = json.loads(cache.read_text())
        else:
            summary, rows = run_model(name, Path(args.out), args.epochs)
            cache.write_text(json.dumps([summary, rows]))
        summaries.append(summary)
        epochs.extend(rows)
    report("gradual", "Gradual pruning vs one-shot CHITA++", [
        ("Test accuracy (%), full test set", summaries, [
            ("model", "model", ""), ("sparsity", "sparsity", ".2f"), ("dense", "dense", ".2f"),
            ("one_shot", "one-shot CHITA++", ".2f"), ("one_shot_s", "one-shot s", ".0f"),
            ("gradual", "gradual", ".2f"), ("gradual_s", "gradual s", ".0f"), ("epochs", "epochs", "d"),
            ("events", "events", "d"), ("train_samples", "train samples", "d")]),
        ("Per epoch (accuracy on the recipe's test subset)", epochs, [
            ("model", "model", ""), ("epoch", "epoch", "d"), ("event", "event → s", ".4f"),
            ("sparsity", "sparsity", ".4f"), ("train_loss", "train loss", ".4f"),
            ("acc_after_prune", "acc. right after event", ".2f"), ("acc", "acc. end of epoch", ".2f"),
            ("lr", "lr (last step)", ".2e"), ("seconds", "s", ".0f")]),
    ], meta, notes=[
        "Recipes: recipes/mlpnet_gradual.toml, recipes/resnet20_gradual.toml (events on a cubic ramp, SGD "
        "momentum 0.9, cosine cycles, final cosine to 1e-5).",
        "One-shot CHITA++ uses the same prune options as each gradual event; for ResNet20 its BatchNorm "
        "statistics are re-estimated on the training data (the gradual run trains them).",
        "Short CPU runs on a shared 2-core machine: far fewer epochs than the paper's gradual runs.",
    ])


if __name__ == "__main__":
    main()
