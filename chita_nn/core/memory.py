"""Memory of the global CHITA solve: the Fisher rows ``A`` plus the solver's working memory, predicted before
anything is allocated, and refused when it does not fit.

The solver (:func:`l0reg.solve` on all ``p`` columns, as :func:`chita_nn.methods.blocks.solve_blocks` calls it
for ``block_size=None``) never copies ``A``; its extra memory is float64 vectors of length ``p`` and ``k``, the
``n × n`` row Gram of the refit, and, when it runs IHT on a working set, a copy of those columns of ``A``.
"""
import numpy as np

from .fisher import DEFAULT_MEMORY_FRACTION, available_memory_bytes, fisher_nbytes

#: Peak RSS increase of ``solve_blocks(A, w, [(0, p, 0)], [k], gradient=1.0, lam=1e-3, w_init=<top-k of w>,
#: solver_options={"swaps": False, "max_iter": 10})`` beyond ``A`` (float32, Fortran order, Gaussian), each
#: in a fresh process (VmHWM after clear_refs), 2 CPUs, numpy/OpenBLAS, Numba cache warm, in MiB:
#:
#: ======  ======  ======  ========  =====  ==================================================
#:   n       p       k     measured  model
#: ======  ======  ======  ========  =====  ==================================================
#:    64    1e5    0.5 p        55     66
#:  1000    1e5    0.5 p        72     81
#:  1000    1e5    0.1 p       138    175   IHT on a working set (its copy of A: about 88 MiB)
#:    64    1e6    0.5 p       188    185
#:  1000    1e6    0.5 p       188    200
#:  1000    1e6    0.1 p       173   1133   working set allowed but not used (start optimal)
#:    64    4e6    0.5 p       573    579
#:   256    4e6    0.5 p       582    580
#:   256    4e6    0.1 p       499   1475   working set allowed but not used
#: ======  ======  ======  ========  =====  ==================================================
#:
#: A least-squares fit ``c + b·p + e·k + a·n·p`` on the 18 shapes without a working set gives ``a`` = 0.01
#: byte (``A`` is never copied: dropped), ``b`` = 111 bytes (14 float64 vectors of length p), ``e`` = 54
#: bytes per kept weight and ``c`` = 53 MiB (BLAS buffers, Numba dispatch), within 20% of each
#: (64 ≤ n ≤ 1000, 1e5 ≤ p ≤ 4e6, k = 0.1p and 0.5p).  Two terms come from the solver's code, not the fit:
#: ``16·n²`` (two ``n × n`` float64 matrices of the refit) and, where :func:`l0reg.solve` may run IHT on a
#: working set (``n·p ≥ 5·10⁷`` and ``3·(1.5k + 10) ≤ p``), ``n·min(p, 2.5k + 10)`` entries of ``A``'s dtype
#: (the set starts at 1.5k + 10 columns plus the start's support; 2.2k measured).  That term is an upper
#: bound (the solver skips the working set when its start passes the optimality test), at most 0.56 × A.
SOLVE_BYTES_PER_WEIGHT = 111
SOLVE_BYTES_PER_KEPT = 54
SOLVE_BYTES_FIXED = 53 * 2**20
_ACTIVE_SET_MIN_ENTRIES = 5e7  # l0reg.solver's threshold for IHT on a working set


def _size(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def _check(n, p, k, dtype):
    n, p, k = _size(n, "n_rows"), _size(p, "p"), _size(k, "k")
    if k > p:
        raise ValueError(f"k must be at most p={p}, got {k}")
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
    return n, p, k, dtype


def solve_extra_bytes(n, p, k, dtype=np.float32):
    """Predicted peak memory of the global solve beyond ``A`` (``n × p`` of ``dtype``, ``k`` weights kept):
    ``c + b·p + e·k + 16·n² [+ n·min(p, 2.5k + 10)·itemsize with a working set]`` (see the table above)."""
    n, p, k, dtype = _check(n, p, k, dtype)
    extra = SOLVE_BYTES_FIXED + SOLVE_BYTES_PER_WEIGHT * p + SOLVE_BYTES_PER_KEPT * k + 16 * n * n
    work = int(np.ceil(1.5 * k)) + 10
    if n * p >= _ACTIVE_SET_MIN_ENTRIES and 3 * work <= p:
        extra += n * min(p, work + k) * dtype.itemsize
    return int(extra)


def _gib(nbytes):
    return f"{nbytes / 2**30:.2f} GiB"


def check_global_solve_memory(n_rows, p, k, *, dtype=np.float32, max_bytes=None, name="max_bytes"):
    """Bytes of ``A`` (``n_rows × p``) plus :func:`solve_extra_bytes`; ``MemoryError`` if above ``max_bytes``.

    ``max_bytes`` defaults to :data:`~chita_nn.core.fisher.DEFAULT_MEMORY_FRACTION` of the available memory
    (no check when that is unknown); ``name`` is how the caller calls it, for the message.
    """
    n_rows, p, k, dtype = _check(n_rows, p, k, dtype)
    if max_bytes is not None:
        max_bytes = _size(max_bytes, name)
    fisher = fisher_nbytes(n_rows, p, dtype)
    solve = solve_extra_bytes(n_rows, p, k, dtype)
    total = fisher + solve
    budget = max_bytes
    if budget is None:
        available = available_memory_bytes()
        budget = None if available is None else int(DEFAULT_MEMORY_FRACTION * available)
    if budget is not None and total > budget:
        source = name if max_bytes is not None else f"{DEFAULT_MEMORY_FRACTION:.0%} of the available memory"
        fit_rows = max(0, (budget - solve) // max(1, p * dtype.itemsize))
        raise MemoryError(
            f"the global CHITA solve needs about {_gib(total)}: {_gib(fisher)} for A ({n_rows} rows x {p:,} "
            f"weights, {dtype}) and {_gib(solve)} for the solver (k = {k:,}), but the budget is {_gib(budget)} "
            f"({source}); use fewer rows (n_rows <= {fit_rows} would fit), block_size=<columns per block> or "
            f"'layer' (a block-diagonal Fisher, solved block by block), or "
            f"chita_nn.methods.scale.block_prune (bounded memory, rows stored on disk)")
    return total
