"""Block-mode CHITA at ImageNet scale: MobileNetV1 / ResNet50 (random weights, synthetic inputs).

Measures, per phase (plan, gradients, solve, write-back), wall time and peak RSS of the main process, the
largest peak RSS of a solve worker, and the predicted bytes; with several ``--workers`` values the same problem
is solved again and the solve-phase speed-up is reported.

    PYTHONPATH=. python benchmarks/scale.py --model mobilenetv1 --n-rows 500 --workers 1 2
    PYTHONPATH=. python benchmarks/scale.py --model resnet50 --n-rows 500 --store-dir /tmp/chita-store
"""
import argparse
import logging
import os

import torch
from _common import environment, report

from chita_nn.methods.scale import block_prune
from chita_nn.zoo.imagenet_models import MobileNetV1, resnet50

MODELS = {"mobilenetv1": MobileNetV1, "resnet50": resnet50}
GiB = 2 ** 30


def synthetic_data(n, resolution, seed):
    """Gaussian images (ImageNet-normalised scale) and uniform labels over 1000 classes."""
    generator = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 3, resolution, resolution, generator=generator)
    return X, torch.randint(0, 1000, (n,), generator=generator)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), required=True)
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--n-rows", type=int, default=500)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--block-size", type=int, default=100_000)
    parser.add_argument("--chunk-rows", type=int, default=8)
    parser.add_argument("--store-dtype", choices=("float16", "float32"), default="float16")
    parser.add_argument("--store-dir", default=None, help="disk folder for the block files (default: RAM)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1])
    parser.add_argument("--max-iter", type=int, default=None, help="solver max_iter per block")
    parser.add_argument("--max-gib", type=float, default=12.0, help="RAM budget (max_bytes) in GiB")
    parser.add_argument("--name", default=None, help="results file name (default scale_<model>)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    meta = environment(args)
    meta["torch_threads"] = torch.get_num_threads()
    data = synthetic_data(args.n_rows, args.resolution, seed=0)
    solver_options = None if args.max_iter is None else {"max_iter": args.max_iter}
    rows, phases = [], []
    for workers in args.workers:
        torch.manual_seed(0)
        model = MODELS[args.model]()
        result = block_prune(model, data, args.sparsity, n_rows=args.n_rows, block_size=args.block_size,
                             chunk_rows=args.chunk_rows, store_dtype=args.store_dtype, store_dir=args.store_dir,
                             workers=workers, solver_options=solver_options, max_bytes=int(args.max_gib * GiB),
                             progress=True)
        plan = result.plan
        rows.append(dict(model=args.model, p=plan.p, n=plan.n_rows, blocks=plan.n_blocks, workers=workers,
                         sparsity=result.prune.sparsity, store_gib=plan.store_bytes / GiB,
                         store="RAM (/dev/shm)" if plan.store_in_ram else "disk", predicted_gib=plan.ram_bytes / GiB,
                         peak_gib=max(ph.peak_rss for ph in result.phases.values()) / GiB,
                         worker_peak_gib=result.workers_peak_rss / GiB or None,
                         total_s=result.prune.time_total, solve_s=result.phases["solve"].seconds))
        phases += [dict(workers=workers, phase=name, seconds=ph.seconds, peak_gib=ph.peak_rss / GiB)
                   for name, ph in result.phases.items()]
    base = rows[0]["solve_s"]
    for row in rows:
        row["speedup"] = base / row["solve_s"]
    report(args.name or f"scale_{args.model}", f"Block-mode CHITA at scale: {args.model}", [
        ("Runs", rows, [
            ("model", "model", ""), ("p", "weights p", ",d"), ("n", "rows n", "d"), ("blocks", "blocks", "d"),
            ("workers", "workers", "d"), ("sparsity", "sparsity", ".4f"), ("store", "store", ""),
            ("store_gib", "store GiB", ".2f"), ("predicted_gib", "predicted RAM GiB", ".2f"),
            ("peak_gib", "peak RSS GiB (main)", ".2f"), ("worker_peak_gib", "peak RSS GiB (worker)", ".2f"),
            ("solve_s", "solve s", ".1f"), ("speedup", "solve speed-up", ".2f"), ("total_s", "total s", ".1f")]),
        ("Phases", phases, [("workers", "workers", "d"), ("phase", "phase", ""), ("seconds", "s", ".1f"),
                            ("peak_gib", "peak RSS GiB", ".2f")]),
    ], meta, notes=[
        f"Random weights (torch.manual_seed(0)), synthetic N(0, 1) inputs at {args.resolution}x{args.resolution}, "
        f"random labels; samples_per_row = 1; block size {args.block_size} columns.",
        "Peak RSS per phase: VmHWM of the main process, reset at the start of each phase; a RAM store under "
        "/dev/shm is not part of RSS but is counted in the predicted RAM.",
        f"Machine load average at start: {os.getloadavg()}.",
    ])


if __name__ == "__main__":
    main()
