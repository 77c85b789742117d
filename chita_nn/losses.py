"""Ready-made losses for :func:`chita_nn.prune` (the public face of :mod:`chita_nn.core.losses`)."""
from .core.losses import (Distillation, Loss, MeanSquaredError, SampledFisher, causal_lm, closure, cross_entropy,
                          distillation, gauss_newton_rows, mse, output_target)

__all__ = ["Distillation", "Loss", "MeanSquaredError", "SampledFisher", "causal_lm", "closure", "cross_entropy",
           "distillation", "gauss_newton_rows", "mse", "output_target"]
