"""``l0reg.solve_gram`` on layer-wise pruning problems of SmolLM2-135M's sizes.

A linear layer with r = 576 output rows and p = 576 (attention, hidden size) or
p = 1536 (MLP down-projection) inputs; synthetic calibration inputs X of
n = 4096 tokens with correlated channels and log-normal channel scales (a few
large-activation channels, as in language models), H = XᵀX, dense rows W̄
Gaussian. Constraints: 50% and 70% sparsity per row, and 2:4. λ = 1e-3·mean(diag H).

Reported: the time of one IHT step on all rows against one BLAS product
``W @ H`` (float64, the product a step needs), the total solve time, and the
layer's objective ``Σ_r ½‖X(w̄_r − w_r)‖² + …`` against the magnitude and the
Wanda (``|w̄_j|·√H_jj``) supports, each refitted exactly.

    python benchmarks/gram_solver.py            # both sizes
    python benchmarks/gram_solver.py --sizes 576   # one size
    python benchmarks/gram_solver.py --quick    # p = 64, 128 (smoke test)
"""
import argparse

import numpy as np

import l0reg
from _common import best_time, environment, report, timed
from l0reg._gram_refit import refit_rows
from l0reg._gram_supports import row_masks
from l0reg.gram import _Rows

ROWS, TOKENS = 576, 4096
STEP_REPEATS = 5


def make_layer(p, r, n, seed=0):
    """``(H, W̄)``: inputs with a random correlation, log-normal channel scales."""
    rng = np.random.default_rng(seed)
    mix = np.eye(p) + rng.standard_normal((p, p)) / np.sqrt(p)
    X = (rng.standard_normal((n, p)) @ mix) * rng.lognormal(0.0, 1.0, size=p)
    return X.T @ X / n, rng.standard_normal((r, p)) / np.sqrt(p)


def constraint(name, p):
    if name == "2:4":
        return dict(projection=(2, 4))
    return dict(k=int(round(p * (1 - float(name.rstrip("%")) / 100))))


def baseline(H, Wbar, lam, score, kw):
    """Layer objective of the support chosen by ``score``, refitted."""
    p = H.shape[0]
    n, m, ks = 0, 0, np.full(Wbar.shape[0], kw.get("k", 0), dtype=np.int64)
    if "projection" in kw:
        n, m = kw["projection"]
        ks[:] = n * p // m
    masks = row_masks(score, ks, n, m)
    W = refit_rows(H, Wbar @ H, Wbar, lam, masks)
    state = _Rows(H, Wbar @ H, Wbar, np.zeros_like(Wbar), lam, ks, n, m, 1e-6, {})
    return float(state.evaluate(W, slice(None))[1].sum())


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


def run(p, name, args):
    H, Wbar = make_layer(p, ROWS, args.tokens)
    lam = 1e-3 * float(np.mean(np.diag(H)))
    kw = constraint(name, p)
    product = best_time(lambda: Wbar @ H, STEP_REPEATS)
    product32 = best_time(lambda: Wbar.astype(np.float32) @ H.astype(np.float32), STEP_REPEATS)
    step = step_time(H, Wbar, lam, kw)
    small_H, small_W = make_layer(16, 4, 64)
    res, seconds = timed(lambda: l0reg.solve_gram(H, Wbar, lam=lam, **kw),
                         warmup=lambda: l0reg.solve_gram(small_H, small_W, lam=lam, **constraint(name, 16)))
    magnitude = baseline(H, Wbar, lam, np.abs(Wbar), kw)
    wanda = baseline(H, Wbar, lam, np.abs(Wbar) * np.sqrt(np.diag(H)), kw)
    total = float(res.objective.sum())
    return {"p": p, "constraint": name, "nnz/row": float(res.mask.sum(axis=1).mean()),
            "gemm_ms": 1e3 * product, "gemm32_ms": 1e3 * product32, "step_ms": 1e3 * step,
            "step_ratio": step / product, "solve_s": seconds, "iht_steps": int(res.n_iter.max()),
            "objective": total, "magnitude": magnitude, "wanda": wanda,
            "vs_magnitude": total / magnitude, "vs_wanda": total / wanda,
            "timings": {key: round(value, 3) for key, value in res.timings.items()}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="p = 64 and 128 instead of 576 and 1536")
    parser.add_argument("--tokens", type=int, default=TOKENS)
    parser.add_argument("--sizes", type=int, nargs="+", default=[576, 1536], help="input sizes p")
    args = parser.parse_args()
    sizes = (64, 128) if args.quick else args.sizes
    rows = []
    for p in sizes:
        for name in ("50%", "70%", "2:4"):
            rows.append(run(p, name, args))
            print({key: value for key, value in rows[-1].items() if key != "timings"}, flush=True)
    columns = [("p", "p", "d"), ("constraint", "constraint", ""), ("nnz/row", "nnz/row", ".0f"),
               ("gemm_ms", "W@H f64 (ms)", ".1f"), ("gemm32_ms", "W@H f32 (ms)", ".1f"),
               ("step_ms", "IHT step (ms)", ".1f"), ("step_ratio", "step / W@H", ".2f"),
               ("solve_s", "solve (s)", ".1f"), ("iht_steps", "IHT steps", "d"),
               ("vs_magnitude", "F / F(magnitude)", ".4f"), ("vs_wanda", "F / F(Wanda)", ".4f")]
    phases = [dict(p=row["p"], constraint=row["constraint"], **row["timings"]) for row in rows]
    phase_keys = sorted({key for row in rows for key in row["timings"]})
    notes = [f"r = {ROWS} rows, {args.tokens} synthetic tokens, λ = 1e-3·mean(diag H); objectives are the layer's "
             "total F = Σ_r f_r(w_r) − f_r(w̄_r); magnitude and Wanda supports are refitted exactly.",
             "Times are 'loaded': 2 cores shared with other jobs; ratios within one run are what matter.",
             "IHT step: directions, one product V @ H (float64) and the exact line search of all 576 rows."]
    report("gram_solver", "solve_gram: layer-wise pruning at SmolLM2-135M sizes (loaded machine)",
           [("Per layer", rows, columns),
            ("Phase times (s)", phases, [("p", "p", "d"), ("constraint", "constraint", "")]
             + [(key, key, ".2f") for key in phase_keys])],
           environment(args), notes)


if __name__ == "__main__":
    main()
