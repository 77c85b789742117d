"""Layer-wise (reconstruction) pruning of language models and other networks of Linear layers.

``prune_layerwise(model, data, sparsity, method=...)`` prunes every Linear to preserve its outputs on
calibration data, block by block: magnitude, Wanda, a SparseGPT-style OBS sweep, or layer-wise CHITA
(:func:`l0reg.solve_gram`).  One idea per module:

- :mod:`.api` — the entry point and the block-by-block schedule;
- :mod:`.blocks` — finding the repeated blocks and running them on cached inputs;
- :mod:`.gram_hooks` — accumulating ``H = XᵀX / n`` with forward hooks;
- :mod:`.budget` — row, layer and N:M budgets and the masks keeping the highest scores;
- :mod:`.owl` — OWL's outlier-weighted layer sparsities;
- :mod:`.magnitude`, :mod:`.wanda`, :mod:`.sparsegpt`, :mod:`.chita` — the methods, on one layer's rows;
- :mod:`.damping`, :mod:`.error` — the ridge and the reconstruction error;
- :mod:`.options` — checking ``solver_options``;
- :mod:`.weights` — rows of Linear / Conv1D weights, installing and restoring them.

The per-layer solvers are public: ``METHODS[name](W, H, budget, *, dampening=0.01, factor=None,
solver_options=None) -> (W_new, keep)`` for dense rows ``W`` (r × p, float64), ``H = XᵀX / n`` and a
:class:`Budget`, with :func:`relative_error` the layer's reconstruction error (README: "Per-layer solvers on
your own H").
"""
import functools

from ...core.batches import Calibration
from ...core.data_checks import check_inputs
from . import api
from .api import BUDGETS, METHODS
from .budget import Budget
from .error import relative_error
from .options import check_solver_options

__all__ = ["BUDGETS", "METHODS", "Budget", "prune_layerwise", "relative_error"]


@functools.wraps(api.prune_layerwise)
def prune_layerwise(model, data, sparsity=None, *, method="chita", solver_options=None, **options):
    # The user's entry point: the model, the data's inputs and solver_options checked (one-line errors naming
    # them) before api.prune_layerwise starts; the data is iterated once (the Calibration passes on).
    solver_options = check_solver_options(solver_options, method)
    calibration = Calibration(data, "data")
    check_inputs(model, calibration)
    return api.prune_layerwise(model, calibration, sparsity, method=method, solver_options=solver_options,
                               **options)
