"""Ready-made losses for :func:`chita_nn.prune` (the public face of :mod:`chita_nn.core.losses`)."""
from .core.losses import Distillation, Loss, causal_lm, cross_entropy, distillation

__all__ = ["Distillation", "Loss", "causal_lm", "cross_entropy", "distillation"]
