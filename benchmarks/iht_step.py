"""The cost of one IHT step against one read of A, for C and Fortran order.

The mean step of ``l0reg._iht.iht`` (direction, line search, residual) over a run of
``_SAMPLE_EVERY`` steps (the line search's samples are tried in one of them) on all p
columns, from the magnitude start of w̄ after 0, 3 and 10 steps, against one
BLAS product ``Aᵀr`` (one read of A), both timed in this process (best of a
few runs), so that their ratio holds on a loaded machine.  The first step of
each run, which always samples, is also reported alone (``first step``).

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 PYTHONPATH=. python benchmarks/iht_step.py
    ... python benchmarks/iht_step.py --quick    # small sizes, a smoke test
"""
import argparse

import numpy as np

from _common import best_time, environment, report
from l0reg._design import Design, matrix_scale
from l0reg._iht import _SAMPLE_EVERY, iht, jacobi_scale
from l0reg.projection import TopK
from pruning_shaped import gradient_like

LAM = 1e-3
WARM_STEPS = (0, 3, 10)
REPEATS = 5
FULL = [("Gaussian", 2000, 50_000, 0.05, np.float64), ("MLPNet-shaped", 1000, 32_360, 0.10, np.float32)]
QUICK = [("Gaussian/10", 200, 5_000, 0.05, np.float64), ("MLPNet-shaped/10", 100, 3_236, 0.10, np.float32)]


def make_problem(name, n, p, dtype, order, rng):
    if name.startswith("Gaussian"):
        A = np.asarray(rng.standard_normal((n, p)) * np.exp(rng.standard_normal(p)) / np.sqrt(n), dtype=dtype,
                       order=order)
    else:
        A = np.asarray(gradient_like(n, p, order, rng), dtype=dtype)
    w_bar = rng.standard_normal(p)
    return A, (A @ w_bar.astype(dtype)).astype(np.float64), w_bar


def iht_state(A, b, w_bar, k, warm):
    """``(args, kwargs)`` of ``iht`` after ``warm`` steps from the projection of w̄ (on Â = A/s, b/s)."""
    design = Design(A, matrix_scale(A))
    b = b / design.scale
    nlam = A.shape[0] * LAM
    projection = TopK(k)
    w = np.zeros(A.shape[1])
    S = projection.support(jacobi_scale(design, nlam)[0] * w_bar)
    w[S] = w_bar[S]
    r = b - design.cols_matvec(S, w[S], exact=True)
    value = 0.5 * r @ r + 0.5 * nlam * ((w - w_bar) @ (w - w_bar))
    w, r, value, _, _ = iht(design, projection, b, w, r, w_bar, nlam, max_iter=warm, tol=0.0, value=value,
                            history=[]) if warm else (w, r, value, 0, False)
    return (design, projection, b, w, r, w_bar, nlam), {"max_iter": 1, "tol": 0.0, "value": value, "history": []}


def measure(name, n, p, density, dtype, order):
    A, b, w_bar = make_problem(name, n, p, dtype, order, np.random.default_rng(p))
    k = int(density * p)
    states = [iht_state(A, b, w_bar, k, warm) for warm in WARM_STEPS]
    for args, kwargs in states:  # compile
        iht(*args, **kwargs)
    r = b.astype(A.dtype)
    read = best_time(lambda: A.T @ r, repeats=2 * REPEATS)
    row = {"problem": name, "order": order, "dtype": np.dtype(dtype).name, "n": n, "p": p, "k": k,
           "read_ms": 1e3 * read}
    for warm, (args, kwargs) in zip(WARM_STEPS, states):
        run = dict(kwargs, max_iter=_SAMPLE_EVERY, history=[])
        steps = iht(*args, **run)[3]
        step = best_time(lambda: iht(*args, **run), repeats=REPEATS) / steps
        row[f"step{warm}_ms"] = 1e3 * step
        row[f"ratio{warm}"] = step / read
    row["first"] = max(best_time(lambda: iht(*args, **kwargs), repeats=REPEATS) for args, kwargs in states) / read
    row["worst"] = max(row[f"ratio{warm}"] for warm in WARM_STEPS)
    print(row, flush=True)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test of the script)")
    args = parser.parse_args()
    meta = environment(args)
    rows = [measure(*problem, order) for problem in (QUICK if args.quick else FULL) for order in "FC"]
    columns = [("problem", "problem", "s"), ("order", "order", "s"), ("dtype", "dtype", "s"), ("n", "n", "d"),
               ("p", "p", "d"), ("k", "k", "d"), ("read_ms", "Aᵀr ms", ".1f")]
    for warm in WARM_STEPS:
        columns += [(f"step{warm}_ms", f"step ms (after {warm})", ".1f"), (f"ratio{warm}", "step / read", ".2f")]
    columns += [("worst", "worst step / read", ".2f"), ("first", "first step / read (worst)", ".2f")]
    notes = [f"the mean IHT step (Jacobi-preconditioned gradient, path line search, residual) of l0reg._iht.iht "
             f"over runs of {_SAMPLE_EVERY} steps on all p columns, λ = {LAM:g}, w̄ ~ N(0, 1), b = A w̄, from "
             f"the projection of w̄ after {', '.join(map(str, WARM_STEPS))} steps; best of {REPEATS}; the "
             "first step of a run also tries the line search's samples",
             f"Aᵀr ms: best of {2 * REPEATS} BLAS products in A's dtype (one read of A), in the same process",
             "Gaussian: columns scaled by log-normal factors; MLPNet-shaped: pruning_shaped.gradient_like",
             "targets (issue 22): step / read ≤ 2.5 in C order, ≤ 2 in Fortran order"]
    report("iht_step_quick" if args.quick else "iht_step", "One IHT step against one read of A", [
        ("Step / read", rows, columns)], meta, notes)


if __name__ == "__main__":
    main()
