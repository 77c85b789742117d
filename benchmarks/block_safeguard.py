"""Block-mode CHITA with its safeguard on ResNet18 / MobileNetV3-small (random init, 32x32 inputs) vs magnitude.

Random weights (BatchNorm statistics set by train-mode passes over the calibration inputs), Gaussian
CIFAR-shaped inputs labelled by the dense model's own predictions (so the loss measures fidelity to the dense
model); relative output change ‖f_pruned(x) − f_dense(x)‖ / ‖f_dense(x)‖ on held-out inputs; block_prune with its
defaults (gradient term, λ, step search) at the given rows and block size; predicted (``plan.process_bytes``) vs
measured peak RSS increase.

    PYTHONPATH=. python benchmarks/block_safeguard.py --n-rows 32
"""
import argparse
import copy
import logging
import time

import torch
from _common import environment, report

from chita_nn.methods.oneshot import magnitude_prune
from chita_nn.methods.scale import block_prune
from chita_nn.zoo.imagenet_models import mobilenet_v3_small, resnet18

MODELS = {"ResNet18": resnet18, "MobileNetV3-small": mobilenet_v3_small}
GiB = 2 ** 30


def setup(name, n, resolution, seed=0):
    """Random model with BatchNorm statistics, self-labelled calibration data and held-out inputs."""
    torch.manual_seed(seed)
    model = MODELS[name](num_classes=10)
    generator = torch.Generator().manual_seed(seed + 1)
    X = torch.randn(n, 3, resolution, resolution, generator=generator)
    X_test = torch.randn(256, 3, resolution, resolution, generator=generator)
    model.train()
    with torch.no_grad():
        for batch in X.split(128):
            model(batch)
        model.eval()
        y = torch.cat([model(batch).argmax(1) for batch in X.split(256)])
    return model, (X, y), X_test


@torch.no_grad()
def output_change(model, dense_out, X_test):
    return ((model(X_test) - dense_out).norm() / dense_out.norm()).item()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.7])
    parser.add_argument("--n-rows", type=int, default=32)
    parser.add_argument("--n-samples", type=int, default=512, help="calibration samples (step-search probe)")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--block-size", type=int, default=100_000)
    parser.add_argument("--name", default="block_safeguard")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    meta = environment(args)
    rows = []
    for name in args.models:
        for sparsity in args.sparsities:
            model, data, X_test = setup(name, args.n_samples, args.resolution)
            with torch.no_grad():
                dense_out = model(X_test)
            mp = copy.deepcopy(model)
            magnitude_prune(mp, sparsity)
            t0 = time.perf_counter()
            result = block_prune(model, data, sparsity, n_rows=args.n_rows, block_size=args.block_size)
            seconds = time.perf_counter() - t0
            stage = result.prune.stages[0]
            rows.append(dict(model=name, p=result.plan.p, sparsity=sparsity,
                             mp_change=output_change(mp, dense_out, X_test),
                             chita_change=output_change(model, dense_out, X_test), kept=stage.kept,
                             fallbacks=result.prune.fallbacks, seconds=seconds,
                             predicted_gib=result.plan.process_bytes / GiB,
                             measured_gib=result.peak_rss_increase / GiB))
            print(rows[-1], flush=True)
    report(args.name, "Block-mode CHITA with the safeguard vs magnitude pruning", [
        ("Runs", rows, [
            ("model", "model", ""), ("p", "weights p", ",d"), ("sparsity", "sparsity", ".2f"),
            ("mp_change", "output change MP", ".4f"), ("chita_change", "output change block CHITA", ".4f"),
            ("kept", "kept", ""), ("fallbacks", "fallbacks", "d"), ("seconds", "block CHITA s", ".1f"),
            ("predicted_gib", "predicted RSS GiB", ".3f"), ("measured_gib", "measured peak RSS GiB", ".3f")]),
    ], meta, notes=[
        f"{args.resolution}x{args.resolution} N(0, 1) inputs, {args.n_samples} calibration samples labelled by the "
        f"dense model's argmax, 256 held-out inputs; n_rows = {args.n_rows}, samples_per_row = 1, block size "
        f"{args.block_size}; other block_prune arguments at their defaults.",
        "RSS: increase of the peak RSS over the call's starting RSS (VmHWM reset per phase); the RAM block store "
        "(/dev/shm) is not part of it nor of the prediction compared.",
    ])


if __name__ == "__main__":
    main()
