"""One BLAS thread for small designs and for the exact refits.

The products of a small ``A`` (e.g. one 1000 x 500 block of a block-diagonal Fisher) take microseconds, less
than handing work to BLAS threads; next to PyTorch's OpenMP workers, which keep spinning after each
operation, multi-threaded OpenBLAS calls also fight them for the cores.  Measured on 2 cores after a PyTorch
backward pass, ``n = 1000``, ``k = p/2``, 10 IHT steps: p = 500: 92 -> 23 ms, p = 8000: 610 -> 285 ms per
solve; 545 ResNet20 blocks: 46 -> 6.7 s.

The exact refits' n x n work (``dsyrk`` Gram updates, Cholesky) also runs on one BLAS thread: numpy and scipy
load two OpenBLAS copies, and the threads of one (or Numba's OpenMP workers) still spin after their call while
the other's start. Measured on 2 shared cores, Cholesky of a 1000 x 1000 Gram: 47 ms alone, 166 ms after a
numpy BLAS call, 187 ms after a parallel Numba kernel; 34 and 23 ms on one thread.
"""
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext

import numba
import numpy as np
from threadpoolctl import ThreadpoolController

#: Designs with fewer entries than this are solved on one BLAS thread.
SINGLE_THREAD_MAX_ENTRIES = 1 << 24

#: Gram products of at least this many multiply-adds run on every BLAS thread even inside the refits (a
#: 1000-row Gram of 30,000 columns: 0.65 s on one thread, measured 1.3x faster on two inside a CHITA++ run).
THREADED_GRAM_MIN_FLOPS = 1e10

_controller = None
#: Worker threads of :func:`over_rows`, by process (a forked child has none of its parent's threads) and count.
_pools = {}
#: Per Python thread: BLAS threads in use where each open :func:`single_blas_thread` was entered.
_state = threading.local()


def _blas():
    global _controller
    if _controller is None:  # inspecting the loaded libraries costs about a millisecond: once
        _controller = ThreadpoolController()
    return _controller


@contextmanager
def single_blas_thread():
    """Context manager: every loaded BLAS on one thread."""
    controller = _blas()
    outer = max([lib.num_threads for lib in controller.select(user_api="blas").lib_controllers], default=1)
    stack = _state.__dict__.setdefault("outer", [])
    stack.append(outer)
    try:
        with controller.limit(limits=1, user_api="blas"):
            yield
    finally:
        stack.pop()


def gram_blas_threads(flops):
    """Context manager for a Gram product of ``flops`` multiply-adds: the BLAS threads in use outside the
    refit's :func:`single_blas_thread` when it is large (``THREADED_GRAM_MIN_FLOPS``), else no change."""
    outer = getattr(_state, "outer", None)
    if flops < THREADED_GRAM_MIN_FLOPS or not outer or outer[-1] <= 1:
        return nullcontext()
    return _blas().limit(limits=outer[-1], user_api="blas")


def blas_threads_for(n_entries):
    """Context manager: one BLAS thread when ``n_entries < SINGLE_THREAD_MAX_ENTRIES``, else no change."""
    return nullcontext() if n_entries >= SINGLE_THREAD_MAX_ENTRIES else single_blas_thread()


def over_rows(kernel, n, *args):
    """``kernel(lo, hi, *args)`` on chunks ``[lo, hi)`` of the rows ``0 … n−1``, on Numba's thread count
    (``numba.get_num_threads``); ``kernel`` is a ``nogil`` Numba function that writes only its rows' outputs.

    The row-parallel Gram kernels run this way rather than as ``parallel=True`` prange loops: a parfor costs
    2–4 s of compile per kernel (three of them: 9 of the 20 s of the first layer-wise call in an empty Numba
    cache, 2 loaded cores), Python threads around serial kernels almost nothing.  Four chunks per thread
    balance rows of unequal cost.
    """
    threads = min(numba.get_num_threads(), n)
    if threads <= 1:
        kernel(0, n, *args)
        return
    key = (os.getpid(), threads)
    pool = _pools.get(key) or _pools.setdefault(key, ThreadPoolExecutor(threads))
    bounds = np.linspace(0, n, min(n, 4 * threads) + 1).astype(np.int64)
    for future in [pool.submit(kernel, int(lo), int(hi), *args) for lo, hi in zip(bounds[:-1], bounds[1:])]:
        future.result()
