"""Time of the global CHITA solve, predicted before it starts, and a warning naming the options that bring time
and memory down when the solve is large.

:func:`l0reg.solve` on the global Fisher problem (``n × p`` rows ``A``, ``k`` weights kept) spends its time in
IHT steps, each about :data:`PASSES_PER_STEP` reads of ``A``, and in exact refits of the support
(``n²k`` flops each, BLAS).  The prediction times one read of ``A`` (:func:`l0reg.column_norms_sq`, which every
stage does anyway) and one BLAS product, so it follows the machine and its load:

    seconds ≈ t_read · (PASSES_PER_STEP · steps + FIXED_PASSES) + REFITS · n²k / (BLAS flop rate),
    steps = min(max_iter + 1, TYPICAL_STEPS)

Measured on digits MLPs of 84k to 1.1M weights, n = 256 and 512 Fisher rows, k = 2% to 70% of p (2 cores at
load 4 to 5): with ``max_iter=200`` IHT took 70 to 173 steps (hence the typical 120) of 1.3 to 1.75 reads each;
through :func:`chita_nn.prune`, solves of 10 to 100 s came within 0.43× to 1.9× of the prediction (a start good
enough to stop early makes the solve shorter), CHITA++ stages (``max_iter=10``, 11 steps) within 1.4×.  The
forecast also gives the bound at ``max_iter + 1`` steps.  The time of a step follows the machine's load, which the
timed read sees only at the start.
"""
import contextlib
import functools
import inspect
import logging
import time

import numpy as np
from tqdm.auto import tqdm

import l0reg
from l0reg._backsolve import backsolve_cost

from .fisher import available_memory_bytes

logger = logging.getLogger(__name__)

PASSES_PER_STEP = 1.6
FIXED_PASSES = 4  # scaling, start, safeguard and objective reads of A
TYPICAL_STEPS = 120
REFITS = 2  # the start's refit and the result's
_BACKSOLVE_MAX_FLOPS = 2e11  # l0reg.solver's limit of the exact refit (coordinate descent beyond)
#: A solve is large (a warning) beyond this many seconds over all stages, or this fraction of the available memory.
LARGE_SECONDS = 60.0
LARGE_MEMORY_FRACTION = 0.25
#: Stages predicted to solve for longer than this get a progress bar of their IHT steps.
PROGRESS_SECONDS = 10.0
DEFAULT_MAX_ITER = inspect.signature(l0reg.solve).parameters["max_iter"].default


@functools.cache
def blas_flop_rate():
    """Flops per second of a float64 BLAS product on this machine now (best of three, a few ms)."""
    a, b = np.ones((256, 256)), np.ones((256, 1024))
    best = np.inf
    for _ in range(3):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * a.shape[0] * a.shape[1] * b.shape[1] / max(best, 1e-9)


def predict_solve_seconds(read_seconds, n_rows, k, max_iter=None, typical=True):
    """Predicted seconds of one global solve (see the module docstring); ``read_seconds`` is the time of
    one read of ``A`` (``n_rows × p``), ``k`` the weights kept; ``typical=False``: with all ``max_iter`` steps."""
    max_iter = DEFAULT_MAX_ITER if max_iter is None else max_iter
    steps = min(max_iter + 1, TYPICAL_STEPS) if typical else max_iter + 1
    refit = REFITS * min(backsolve_cost(n_rows, k), _BACKSOLVE_MAX_FLOPS) / blas_flop_rate()
    return read_seconds * (PASSES_PER_STEP * steps + FIXED_PASSES) + refit


def _gib(nbytes):
    return f"{nbytes / 2**30:.1f} GiB"


def forecast_global_solve(read_seconds, *, n_rows, samples_per_row, p, budgets, memory_bytes, max_iter=None,
                          fisher_seconds=0.0):
    """Log the predicted time of the global solves (one per stage, ``budgets`` their ``k``) and their memory
    (``memory_bytes``, from :func:`chita_nn.core.memory.check_global_solve_memory`); a warning naming what
    brings them down when they are large.  Returns the predicted seconds of each stage."""
    stages = [predict_solve_seconds(read_seconds, n_rows, k, max_iter) for k in budgets]
    total = sum(stages)
    bound = sum(predict_solve_seconds(read_seconds, n_rows, k, max_iter, typical=False) for k in budgets)
    available = available_memory_bytes()
    count = "1 stage" if len(stages) == 1 else (
        f"{len(stages)} stages, besides {fisher_seconds * (len(stages) - 1):.0f} s for the Fisher rows of the "
        f"stages after the first")
    where = (f"the global solve ({n_rows} Fisher rows x {p:,} weights): about {total:.0f} s over {count} (up to "
             f"{bound:.0f} s if IHT runs all max_iter steps) and {_gib(memory_bytes)}")
    if total > LARGE_SECONDS or (available and memory_bytes > LARGE_MEMORY_FRACTION * available):
        logger.warning(
            "%s%s; to bring them down: block_size='layer' or a number of columns (--block-size layer|N: a "
            "block-diagonal Fisher, solved block by block), fewer rows n_rows (--n-rows; time and memory "
            "follow the rows) or samples_per_row (--samples-per-row: the Fisher rows took %.0f s, which follow "
            "n_rows x samples_per_row)", where,
            f" of {_gib(available)} available" if available else "", fisher_seconds)
    else:
        logger.info("%s", where)
    return stages


@contextlib.contextmanager
def solve_progress(options, predicted_seconds, enabled, desc="global solve"):
    """``options`` (of :func:`l0reg.solve`) with a ``callback`` advancing a progress bar of the IHT steps (out
    of ``max_iter``, an upper bound) when ``enabled`` and the solve is predicted to take more than
    :data:`PROGRESS_SECONDS`; else ``options`` as they are."""
    if not enabled or predicted_seconds <= PROGRESS_SECONDS:
        yield options
        return
    with tqdm(total=options.get("max_iter", DEFAULT_MAX_ITER), desc=desc, unit="step", leave=False) as bar:
        yield {**options, "callback": lambda step: bar.update(step - bar.n)}
