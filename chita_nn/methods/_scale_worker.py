"""Block solves for :mod:`chita_nn.methods.scale`, importable without torch (worker processes load only this).

A block ``A_B`` (``n × p_B``) lives in a row-major file, float32 or float16 with one scale per row:
``A_B[i, :] = scale_i · Q[i, :]``.
"""
import os

import numpy as np

import l0reg

from .blocks import rhs, solve_blocks


def read_block(path, n_rows, n_cols, dtype, scales=None):
    """``A_B`` as a new float32 C-ordered array, read with plain file I/O (no memory map)."""
    block = np.fromfile(path, dtype=dtype, count=n_rows * n_cols).reshape(n_rows, n_cols)
    if scales is None:
        return block if block.dtype == np.float32 else block.astype(np.float32)
    out = block.astype(np.float32)
    out *= scales[:, None]
    return out


def solve_block(task):
    """Solve one block: ``min F(w) = ½‖A_B w̄_B − γe − A_B w‖² + (nλ/2)‖w − w̄_B‖²`` s.t. ``‖w‖₀ ≤ k_B`` (or
    ``projection``); not solved (``w = 0``) when ``k_B = 0``.

    ``task`` holds ``path, n_rows, n_cols, dtype, scales, w_bar, k, projection, w_init, gradient (γ), lam,
    solver_options, w_mp``; returns a dict: ``w``, ``keep`` (from :func:`chita_nn.methods.blocks.solve_blocks`),
    ``seconds`` and ``objectives``: ``F`` at ``w_mp`` (magnitude pruning), at ``w`` and at the refit of the
    start support (nan if unknown); zeros without ``w_mp``.
    """
    A = read_block(task["path"], task["n_rows"], task["n_cols"], task["dtype"], task["scales"])
    w_bar, lam, gradient = task["w_bar"], task["lam"], task["gradient"]
    w, keep, seconds, refit = np.zeros(w_bar.size), np.zeros(w_bar.size, dtype=bool), 0.0, np.zeros(w_bar.size)
    objectives = np.zeros(3)
    refit_objective = float("nan")
    if task["k"] > 0:
        solution = solve_blocks(A, w_bar, [(0, task["n_cols"], 0)], [task["k"]], gradient=gradient, lam=lam,
                                w_init=task["w_init"], solver_options=task["solver_options"],
                                projections=[task.get("projection")])
        w, keep, seconds = solution
        w = w * keep
        refit, refit_objective = solution.w_start, solution.objective_start
    if task.get("w_mp") is not None:
        b = rhs(A, w_bar, gradient)
        if refit is not None:
            refit_objective = l0reg.objective(A, b, refit, lam=lam, w_bar=w_bar)
        objectives = np.array([l0reg.objective(A, b, task["w_mp"], lam=lam, w_bar=w_bar),
                               l0reg.objective(A, b, w, lam=lam, w_bar=w_bar), refit_objective])
    return dict(w=w, keep=keep, seconds=seconds, objectives=objectives)


def limit_threads():
    """Worker initializer: one numba / BLAS thread per worker process (the pool supplies the parallelism)."""
    os.environ["OMP_NUM_THREADS"] = "1"
    import numba
    from threadpoolctl import threadpool_limits

    numba.set_num_threads(1)
    threadpool_limits(1)
