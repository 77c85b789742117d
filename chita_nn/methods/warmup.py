"""Compile l0reg's Numba kernels ahead of the first pruning call (``chita-nn warmup``).

Numba compiles a kernel on its first call and caches the machine code on disk (``cache=True``: ``__pycache__``
beside l0reg's sources, whether installed or editable, else Numba's user cache folder, or ``NUMBA_CACHE_DIR``);
every later process loads it in well under a second.  The first pruning call of a new environment therefore
compiles (benchmarks/first_call.py: about 10 CPU seconds for the layer-wise solver, 2 cores at load 7).
:func:`compile_kernels` pays that once, e.g. at install time or in a container build, by running each pruning
path on a tiny problem: layer-wise CHITA under row, N:M and layer budgets (exact and conjugate-gradient
refits), global CHITA and CHITA++ (the solver on all columns and on a working set) and block mode.
"""
import copy
import logging
import time

import torch
from torch import nn

from .layerwise import METHODS, Budget
from .oneshot import prune
from .recipe_types import CHITA, CHITAPlusPlus

logger = logging.getLogger(__name__)

LAYER_BUDGETS = (Budget(0.3), Budget(0.7), Budget(0.5, n=2, m=4), Budget(0.7, per_row=False))


def compile_kernels():
    """Run every pruning path once on a tiny problem (seconds once compiled); returns the seconds taken."""
    t0 = time.perf_counter()
    generator = torch.Generator().manual_seed(0)
    X = torch.randn(512, 128, generator=generator, dtype=torch.float64)
    H, W = X.T @ X / 512, torch.randn(64, 128, generator=generator, dtype=torch.float64)
    for budget in LAYER_BUDGETS:
        METHODS["chita"](W, H, budget)
    # p = 12,608 weights: above blocks.BATCH_MAX_COLUMNS, so the global problem goes to l0reg.solve.
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 32), nn.ReLU(), nn.Linear(32, 4))
    data = (torch.randn(256, 64, generator=generator), torch.randint(0, 4, (256,), generator=generator))
    fisher = dict(sparsity=0.7, n_rows=32, samples_per_row=1, line_search=False)
    for recipe in (CHITA(**fisher), CHITA(**fisher, solver_options={"active_set": True}),
                   CHITAPlusPlus(**fisher, n_stages=2), CHITA(**fisher, block_size="layer")):
        prune(copy.deepcopy(model), data, recipe)
    seconds = time.perf_counter() - t0
    logger.info("l0reg's kernels compiled (or loaded from Numba's cache) in %.1f s", seconds)
    return seconds
