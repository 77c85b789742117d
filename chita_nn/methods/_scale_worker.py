"""Block solves for :mod:`chita_nn.methods.scale`, importable without torch (worker processes load only this).

A block ``A_B`` (``n × p_B``) lives in a row-major file, float32 or float16 with one scale per row:
``A_B[i, :] = scale_i · Q[i, :]``.
"""
import os

import numpy as np

from .blocks import solve_blocks


def read_block(path, n_rows, n_cols, dtype, scales=None):
    """``A_B`` as a new float32 C-ordered array, read with plain file I/O (no memory map)."""
    block = np.fromfile(path, dtype=dtype, count=n_rows * n_cols).reshape(n_rows, n_cols)
    if scales is None:
        return block if block.dtype == np.float32 else block.astype(np.float32)
    out = block.astype(np.float32)
    out *= scales[:, None]
    return out


def solve_block(task):
    """Solve one block: ``min ½‖A_B w̄_B − γe − A_B w‖² + (nλ/2)‖w − w̄_B‖²`` s.t. ``‖w‖₀ ≤ k_B``.

    ``task`` holds ``path, n_rows, n_cols, dtype, scales, w_bar, k, w_init, gradient (γ), lam, solver_options``;
    returns ``(w_B, keep_B, seconds)`` from :func:`chita_nn.methods.blocks.solve_blocks`.
    """
    A = read_block(task["path"], task["n_rows"], task["n_cols"], task["dtype"], task["scales"])
    return solve_blocks(A, task["w_bar"], [(0, task["n_cols"], 0)], [task["k"]],
                        gradient=task["gradient"], lam=task["lam"], w_init=task["w_init"],
                        solver_options=task["solver_options"])


def limit_threads():
    """Worker initializer: one numba / BLAS thread per worker process (the pool supplies the parallelism)."""
    os.environ["OMP_NUM_THREADS"] = "1"
    import numba
    from threadpoolctl import threadpool_limits

    numba.set_num_threads(1)
    threadpool_limits(1)
