"""l0reg on the real pruning problems: does the search matter, and what does it cost.

Problems: 1000 one-sample gradient rows of MLPNet (p = 32,360) and ResNet20 (p = 268,336) at their dense
checkpoints (``_fisher.py``, cached in ``$CHITA_FISHER_CACHE``), b = A w̄ (no gradient term).

1. Block mode (ResNet20, 500-column blocks as in ``table1.py``, budgets from the global magnitude top-k,
   λ = 1e-4, 10 IHT steps as in a CHITA++ stage): the batched ``l0reg.solve_blocks`` (one Numba call)
   against the previous path, one ``l0reg.solve`` per block (``--skip-per-block`` to skip it: ~1 min).
   F is reported as the sum of the block objectives (the problem solved) and as the full-A objective.
2. Global mode (``--global``): ``l0reg.solve`` for λ ∈ {1e-5, 1e-3} and sparsity ∈ {0.9, 0.98}, against
   the exact refit of its start support (``SolveResult.start_objective``): whether the solver's
   refitted-start test stopped it before IHT.

    CHITA_DATA_DIR=/path/to/shared/data python benchmarks/real_fisher.py [--global] [--models mlpnet]
"""
import argparse
import time

import numpy as np

import l0reg
from _common import environment, report, timed
from _fisher import fisher_problem
from chita_nn.methods.blocks import allocate_budgets, make_blocks, rhs

BLOCK_LAM, BLOCK_ITER = 1e-4, 10


def _block_problem(sparsity):
    A, w_bar, slices = fisher_problem("resnet20")
    A = np.asfortranarray(np.array(A))  # in memory, not a memory map
    blocks = make_blocks(slices, 500)
    budgets, keep0 = allocate_budgets(blocks, np.abs(w_bar), k=int(np.floor((1 - sparsity) * w_bar.size)))
    return A, w_bar, [(s, e) for s, e, _ in blocks], budgets, w_bar * keep0


def _per_block(A, w_bar, blocks, budgets, w0):
    coef, total = np.zeros_like(w_bar), 0.0
    for (lo, hi), k in zip(blocks, budgets):
        if k:
            A_B = A[:, lo:hi]
            res = l0reg.solve(A_B, rhs(A_B, w_bar[lo:hi]), int(k), lam=BLOCK_LAM, w_bar=w_bar[lo:hi],
                              w_init=w0[lo:hi], swaps=False, max_iter=BLOCK_ITER)
            coef[lo:hi], total = res.coef, total + res.objective
    return coef, total


def block_rows(sparsities, per_block):
    rows = []
    for sparsity in sparsities:
        A, w_bar, blocks, budgets, w0 = _block_problem(sparsity)
        b = rhs(A, w_bar)

        def full(w):
            return l0reg.objective(A, b, w, lam=BLOCK_LAM, w_bar=w_bar)

        warm = (lambda: l0reg.solve_blocks(A[:, :1000], blocks[:2], budgets[:2], lam=BLOCK_LAM,
                                           w_bar=w_bar[:1000], max_iter=2))
        res, seconds = timed(lambda: l0reg.solve_blocks(A, blocks, budgets, lam=BLOCK_LAM, w_bar=w_bar,
                                                        w_init=w0, max_iter=BLOCK_ITER), warmup=warm)
        row = dict(sparsity=sparsity, blocks=len(blocks), batched_s=seconds, batched_F=res.objective.sum(),
                   refit_F=res.objective_start.sum(), settled=int(res.settled.sum()),
                   batched_full_F=full(res.coef), refit_full_F=full(res.coef_start), steps=int(res.n_iter.sum()))
        if per_block:
            start = time.perf_counter()
            coef, total = _per_block(A, w_bar, blocks, budgets, w0)
            row.update(per_block_s=time.perf_counter() - start, per_block_F=total, per_block_full_F=full(coef))
            row["speedup"] = row["per_block_s"] / seconds
        rows.append(row)
        del A
    return rows


def global_rows(models):
    rows = []
    for name in models:
        A, w_bar, _ = fisher_problem(name)
        A = np.asfortranarray(np.array(A))
        b = rhs(A, w_bar)
        for lam in (1e-5, 1e-3):
            for sparsity in (0.9, 0.98):
                k = int(np.floor((1 - sparsity) * w_bar.size))
                res, seconds = timed(lambda: l0reg.solve(A, b, k, lam=lam, w_bar=w_bar, swaps=False))
                rows.append(dict(model=name, lam=lam, sparsity=sparsity, seconds=seconds, F=res.objective,
                                 refit_F=res.start_objective, steps=res.n_iter,
                                 gain=1 - res.objective / res.start_objective,
                                 settled=res.n_iter == 1 and res.objective <= res.start_objective))
        del A
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.9])
    parser.add_argument("--skip-per-block", action="store_true")
    parser.add_argument("--global", dest="global_", action="store_true")
    parser.add_argument("--models", nargs="+", default=["mlpnet", "resnet20"])
    args = parser.parse_args()
    meta = environment(args)
    sections = [("ResNet20 block mode (545 blocks of ≤ 500 columns, λ = 1e-4, 10 IHT steps)",
                 block_rows(args.sparsities, not args.skip_per_block),
                 [("sparsity", "sparsity", ".2f"), ("blocks", "blocks", "d"),
                  ("batched_s", "batched s", ".2f"), ("per_block_s", "per-block l0reg.solve s", ".2f"),
                  ("speedup", "speed-up", ".1f"), ("refit_F", "Σ F refit start", ".4g"),
                  ("batched_F", "Σ F batched", ".4g"), ("per_block_F", "Σ F per-block", ".4g"),
                  ("settled", "blocks kept start", "d"), ("refit_full_F", "full F refit", ".4g"),
                  ("batched_full_F", "full F batched", ".4g"), ("per_block_full_F", "full F per-block", ".4g")])]
    if args.global_:
        sections.append(("Global l0reg.solve vs the exact refit of its start support", global_rows(args.models),
                         [("model", "model", ""), ("lam", "λ", "g"), ("sparsity", "sparsity", ".2f"),
                          ("seconds", "solve s", ".2f"), ("steps", "IHT steps", "d"),
                          ("refit_F", "F refit start", ".5g"), ("F", "F solver", ".5g"),
                          ("gain", "gain", ".2%"), ("settled", "stopped at start", "")]))
    notes = ["Σ F: sum of the block objectives (the block-diagonal problem both block solvers minimise); "
             "full F: the objective with the full A at the assembled solution.",
             "Timings on a shared machine are noisy: compare the columns of one run (ratios), not runs."]
    report("real_fisher", "l0reg on real Fisher pruning problems", sections, meta, notes)


if __name__ == "__main__":
    main()
