"""The real Fisher problems of the pruning benchmarks, cached on disk.

``A`` (1000 one-sample gradient rows at the dense checkpoint, float32, Fortran
order) and ``w̄`` for MLPNet (p = 32,360) and ResNet20 (p = 268,336, shortcut
convolutions excluded as in ``table1.py``), computed once and memory-mapped
from ``$CHITA_FISHER_CACHE`` (default ``/tmp/chita_fisher``) afterwards.
"""
import logging
import os
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

SELECTION = {"mlpnet": {}, "resnet20": {"ignore": ["*downsample*"]}}


def cache_dir():
    return Path(os.environ.get("CHITA_FISHER_CACHE", "/tmp/chita_fisher"))


def fisher_problem(name, n_rows=1000, seed=0):
    """``(A, w̄, layer_slices)`` of model ``name``; ``A`` is a read-only memory map."""
    path = cache_dir() / f"{name}_{n_rows}_{seed}"
    if not (path / "A.npy").exists():
        _compute(name, n_rows, seed, path)
    A = np.load(path / "A.npy", mmap_mode="r")
    A = np.asfortranarray(A) if not A.flags.f_contiguous else A
    w_bar = np.load(path / "w_bar.npy")
    slices = [tuple(s) for s in np.load(path / "slices.npy")]
    return A, w_bar, slices


def _compute(name, n_rows, seed, path):
    from chita_nn.core.fisher import empirical_fisher
    from chita_nn.core.params import DEFAULT_IGNORE, DEFAULT_TARGETS, ParamLayout, select_parameters
    from chita_nn.zoo.problems import load_problem

    model, train, _ = load_problem(name, os.environ.get("CHITA_DATA_DIR"), test_limit=10)
    selection = SELECTION[name]
    params = select_parameters(model, targets=DEFAULT_TARGETS,
                               ignore=selection.get("ignore", DEFAULT_IGNORE))
    layout = ParamLayout(params)
    logger.info("computing the %s Fisher (%d rows, p = %d)", name, n_rows, layout.p)
    fisher = empirical_fisher(model, layout, train, n_rows=n_rows, samples_per_row=1, seed=seed)
    path.mkdir(parents=True, exist_ok=True)
    np.save(path / "A.npy", np.asfortranarray(fisher.A))
    np.save(path / "w_bar.npy", layout.gather(np.float64))
    np.save(path / "slices.npy", np.asarray(layout.offsets, dtype=np.int64))
