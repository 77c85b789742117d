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
from contextlib import nullcontext

from threadpoolctl import ThreadpoolController

#: Designs with fewer entries than this are solved on one BLAS thread.
SINGLE_THREAD_MAX_ENTRIES = 1 << 24

_controller = None


def single_blas_thread():
    """Context manager: every loaded BLAS on one thread."""
    global _controller
    if _controller is None:  # inspecting the loaded libraries costs about a millisecond: once
        _controller = ThreadpoolController()
    return _controller.limit(limits=1, user_api="blas")


def blas_threads_for(n_entries):
    """Context manager: one BLAS thread when ``n_entries < SINGLE_THREAD_MAX_ENTRIES``, else no change."""
    return nullcontext() if n_entries >= SINGLE_THREAD_MAX_ENTRIES else single_blas_thread()
