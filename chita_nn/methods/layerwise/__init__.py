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
- :mod:`.resume` — checkpoints of finished blocks, so that a stopped run resumes bit for bit.

The per-layer solvers are public: ``METHODS[name](W, H, budget, *, dampening=0.01, factor=None,
solver_options=None) -> (W_new, keep)`` for dense rows ``W`` (r × p, float64), ``H = XᵀX / n`` and a
:class:`Budget`, with :func:`relative_error` the layer's reconstruction error (README: "Per-layer solvers on
your own H").
"""
from .api import BUDGETS, METHODS, prune_layerwise
from .budget import Budget
from .error import relative_error

__all__ = ["BUDGETS", "METHODS", "Budget", "prune_layerwise", "relative_error"]
