"""``l0reg.solve_gram`` on layer-wise pruning problems of SmolLM2-135M's shapes.

The Linears of one SmolLM2-135M block (rows × p): q and o (576 × 576), k and v
(192 × 576), gate and up (1536 × 576), down (576 × 1536). Synthetic calibration
inputs X of n = 4096 tokens with correlated channels and log-normal channel
scales (a few large-activation channels, as in language models), H = XᵀX/n,
dense rows W̄ Gaussian. Constraints: 50%, 70%, 80% per row, and 2:4;
λ = dampening·mean(diag H), dampening = 1e-3 (SparseGPT's percdamp).

Reported per shape and constraint: the time of one IHT step on all rows against
one BLAS product ``W @ H`` (float64), the solve time with the layer-wise mode's
options (``chita_nn.methods.layerwise.chita.SOLVER_DEFAULTS``) from the default start
(magnitude/Wanda) and from SparseGPT's result (``start=``), and the layer's total
objective ``Σ_r ½(w_r − w̄_r)ᵀH(w_r − w̄_r) + …`` relative to SparseGPT
(``chita_nn.methods.layerwise.sparsegpt``, its support refitted exactly) and to
the Wanda support refitted exactly.

    python benchmarks/gram_solver.py                       # every shape
    python benchmarks/gram_solver.py --shapes 576x576      # one shape (rows x p)
    python benchmarks/gram_solver.py --quick               # 64 x 64, 48 x 128 (smoke test)
"""
import argparse
import logging

import numpy as np
import torch

import l0reg
from _common import best_time, environment, report, timed
from chita_nn.methods.layerwise.budget import Budget
from chita_nn.methods.layerwise.chita import SOLVER_DEFAULTS
from chita_nn.methods.layerwise.sparsegpt import sparsegpt
from l0reg._gram_refit import exact_refit_rows
from l0reg._gram_supports import row_masks
from l0reg.gram import _Rows

SHAPES = ((576, 576), (192, 576), (1536, 576), (576, 1536))
CONSTRAINTS = ("50%", "70%", "80%", "2:4")
TOKENS, DAMPENING = 4096, 1e-3
STEP_REPEATS = 5
logger = logging.getLogger(__name__)


def make_layer(p, r, n, seed=0):
    """``(H, W̄)``: inputs with a random correlation, log-normal channel scales."""
    rng = np.random.default_rng(seed)
    mix = np.eye(p) + rng.standard_normal((p, p)) / np.sqrt(p)
    X = (rng.standard_normal((n, p)) @ mix) * rng.lognormal(0.0, 1.0, size=p)
    return X.T @ X / n, rng.standard_normal((r, p)) / np.sqrt(p)


def constraint(name, p):
    """``(solve_gram keyword arguments, chita_nn Budget, (ks, n, m) for the row kernels)``."""
    if name == "2:4":
        return dict(projection=(2, 4)), Budget(0.5, n=2, m=4), (p // 2, 2, 4)
    sparsity = float(name.rstrip("%")) / 100
    k = p - round(sparsity * p)
    return dict(k=k), Budget(sparsity), (k, 0, 0)


def layer_objective(H, Wbar, lam, W):
    """Total ``Σ_r ½ d_rᵀH d_r + (λ/2)‖d_r‖²``, ``d_r = w_r − w̄_r``."""
    D = W - Wbar
    return float(np.einsum("ij,ij->", D, 0.5 * (D @ H + lam * D)))


def refitted(H, Wbar, lam, masks):
    return exact_refit_rows(H, Wbar @ H, Wbar, lam, masks)


def step_time(H, Wbar, lam, kw):
    """Seconds of one IHT step on all rows (from the magnitude start), best of a few."""
    p = H.shape[0]
    res_ks = np.full(Wbar.shape[0], kw.get("k", 0), dtype=np.int64)
    n, m = kw.get("projection", (0, 0))
    if m:
        res_ks[:] = n * p // m
    state = _Rows(H, Wbar @ H, Wbar, np.zeros_like(Wbar), lam, res_ks, n, m, 1e-6, {})
    state.set(np.where(row_masks(np.abs(Wbar), res_ks, n, m), Wbar, 0.0))
    rows = np.arange(Wbar.shape[0])
    state.step(rows)  # compile
    return best_time(lambda: state.step(rows), STEP_REPEATS)


def run(r, p, name, args):
    H, Wbar = make_layer(p, r, args.tokens)
    lam = DAMPENING * float(np.mean(np.diag(H)))
    kw, budget, (k, n, m) = constraint(name, p)
    product = best_time(lambda: Wbar @ H, STEP_REPEATS)
    step = step_time(H, Wbar, lam, kw)
    W_sgpt = sparsegpt(torch.from_numpy(Wbar), torch.from_numpy(H), budget, dampening=DAMPENING)[0].numpy()
    ks = np.full(r, k, dtype=np.int64)
    wanda = layer_objective(H, Wbar, lam, refitted(H, Wbar, lam, row_masks(np.abs(Wbar) * np.sqrt(np.diag(H)),
                                                                            ks, n, m)))
    sgpt = layer_objective(H, Wbar, lam, refitted(H, Wbar, lam, W_sgpt != 0))
    small_H, small_W = make_layer(16, 4, 64)
    small_kw = constraint(name, 16)[0]
    row = {"rows": r, "p": p, "constraint": name, "gemm_ms": 1e3 * product, "step_ms": 1e3 * step,
           "step_ratio": step / product, "sparsegpt_refit": sgpt, "wanda_refit": wanda}
    small = l0reg.solve_gram(small_H, small_W, lam=lam, **small_kw).coef  # a feasible dense start
    for label, start, small_start in (("default", None, None), ("sgpt", W_sgpt, small)):
        res, seconds = timed(lambda: l0reg.solve_gram(H, Wbar, lam=lam, start=start, **kw, **SOLVER_DEFAULTS),
                             warmup=lambda: l0reg.solve_gram(small_H, small_W, lam=lam, start=small_start, **small_kw))
        total = float(res.objective.sum())
        row.update({f"{label}_s": seconds, f"{label}_vs_sgpt": total / sgpt, f"{label}_vs_wanda": total / wanda,
                    f"{label}_timings": {key: round(value, 3) for key, value in res.timings.items()}})
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two small shapes instead of SmolLM2's")
    parser.add_argument("--tokens", type=int, default=TOKENS)
    parser.add_argument("--shapes", nargs="+", default=[f"{r}x{p}" for r, p in SHAPES], help="rows x p")
    parser.add_argument("--constraints", nargs="+", default=list(CONSTRAINTS))
    args = parser.parse_args()
    shapes = ((64, 64), (48, 128)) if args.quick else [tuple(int(v) for v in s.split("x")) for s in args.shapes]
    torch.set_num_threads(2)
    rows = []
    for r, p in shapes:
        for name in args.constraints:
            rows.append(run(r, p, name, args))
            logger.info("%s", {key: value for key, value in rows[-1].items() if not key.endswith("timings")})
    columns = [("rows", "rows", "d"), ("p", "p", "d"), ("constraint", "constraint", ""),
               ("gemm_ms", "W@H f64 (ms)", ".1f"), ("step_ms", "IHT step (ms)", ".1f"),
               ("step_ratio", "step / W@H", ".2f"),
               ("default_s", "solve (s), default start", ".2f"), ("sgpt_s", "solve (s), start=SparseGPT", ".2f"),
               ("default_vs_sgpt", "F / F(SparseGPT refit), default start", ".4f"),
               ("sgpt_vs_sgpt", "F / F(SparseGPT refit), start=SparseGPT", ".4f"),
               ("sgpt_vs_wanda", "F / F(Wanda refit), start=SparseGPT", ".4f")]
    phases = [dict(rows=row["rows"], p=row["p"], constraint=row["constraint"], **row["sgpt_timings"])
              for row in rows]
    phase_keys = sorted({key for row in rows for key in row["sgpt_timings"]})
    notes = [f"{args.tokens} synthetic tokens, λ = {DAMPENING}·mean(diag H); F is the layer's total "
             "Σ_r f_r(w_r) − f_r(w̄_r); the SparseGPT and Wanda supports are refitted exactly.",
             "Times are 'loaded': 2 cores shared with other jobs; ratios within one run are what matter.",
             "IHT step: directions, one product V @ H (float64) and the line search of all rows."]
    report("gram_solver", "solve_gram: layer-wise pruning at SmolLM2-135M shapes (loaded machine)",
           [("Per layer", rows, columns),
            ("Phase times (s), start=SparseGPT", phases,
             [("rows", "rows", "d"), ("p", "p", "d"), ("constraint", "constraint", "")]
             + [(key, key, ".2f") for key in phase_keys])],
           environment(args), notes)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
