"""One BLAS thread for small designs.

The products of a small ``A`` (e.g. one 1000 x 500 block of a block-diagonal Fisher) take microseconds, less
than handing work to BLAS threads; next to PyTorch's OpenMP workers, which keep spinning after each
operation, multi-threaded OpenBLAS calls also fight them for the cores.  Measured on 2 cores after a PyTorch
backward pass, ``n = 1000``, ``k = p/2``, 10 IHT steps: p = 500: 92 -> 23 ms, p = 8000: 610 -> 285 ms per
solve; 545 ResNet20 blocks: 46 -> 6.7 s.
"""
from contextlib import nullcontext

from threadpoolctl import ThreadpoolController

#: Designs with fewer entries than this are solved on one BLAS thread.
SINGLE_THREAD_MAX_ENTRIES = 1 << 24

_controller = None


def blas_threads_for(n_entries):
    """Context manager: one BLAS thread when ``n_entries < SINGLE_THREAD_MAX_ENTRIES``, else no change."""
    global _controller
    if n_entries >= SINGLE_THREAD_MAX_ENTRIES:
        return nullcontext()
    if _controller is None:  # inspecting the loaded libraries costs about a millisecond: once
        _controller = ThreadpoolController()
    return _controller.limit(limits=1, user_api="blas")
