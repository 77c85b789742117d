"""Idle threads that sleep instead of spinning: environment defaults that the thread pools read as they load.

On few cores, a pool that busy-waits after its work takes the cores from the next pool's work: OpenBLAS's
workers spin for about 2^28 cycles (0.1 s) after every threaded BLAS call, OpenMP's (torch's, Numba's) under
their default wait policy, while l0reg's Numba kernels and BLAS products, and torch's ops, alternate.
:func:`quiet_idle_threads` sets, where the environment has no value,

- ``OMP_WAIT_POLICY=PASSIVE``: idle OpenMP threads sleep;
- ``OPENBLAS_THREAD_TIMEOUT=4``: OpenBLAS's shortest spin (2^4 cycles) before its workers sleep.

The pools read them once, when numpy and torch load: call it before importing either (the command line does,
first thing), or set the variables in the environment. Measured on 2 cores, MLPNet CHITA++ at 50% (one cell of
``benchmarks/table1.py``, alternated runs): 12.8-13.9 s with neither, 10.0 s with one BLAS thread, 7.8-8.3 s
with both.
"""
import logging
import os
import sys

logger = logging.getLogger(__name__)

DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE", "OPENBLAS_THREAD_TIMEOUT": "4"}


def quiet_idle_threads():
    """Set the :data:`DEFAULTS` that the environment does not set; returns their names. Logs a warning when
    numpy or torch is already imported (their pools have read the environment: too late to take effect)."""
    loaded = [name for name in ("numpy", "torch") if name in sys.modules]
    added = [name for name in DEFAULTS if name not in os.environ]
    for name in added:
        os.environ[name] = DEFAULTS[name]
    if added and loaded:
        logger.warning("quiet_idle_threads() after importing %s: %s apply only to pools loaded from now on",
                       " and ".join(loaded), ", ".join(added))
    return added
