"""Checks that labelled classification data fits a model, before any long work starts."""
import torch

from .batches import as_tensors
from .errors import first_line
from .runtime import eval_mode, model_device


@torch.no_grad()
def check_classification_data(model, data, name="data"):
    """Raise ``ValueError`` naming ``name`` unless ``data`` is ``(X, y)`` with floating-point inputs the
    model accepts, finite, and 1-D int64 class labels within the model's outputs."""
    X, y = as_tensors(data, name)
    if len(X) == 0:
        raise ValueError(f"{name} is empty")
    if not X.is_floating_point():
        raise ValueError(f"{name}: inputs must be floating point, got {X.dtype}")
    if y.dtype != torch.int64 or y.dim() != 1:
        raise ValueError(f"{name}: labels must be a 1-D int64 tensor of class indices, got {y.dtype} "
                         f"of shape {tuple(y.shape)}")
    if not bool(torch.isfinite(X).all()):
        raise ValueError(f"{name}: inputs contain NaN or infinite values")
    try:
        with eval_mode(model):
            out = model(X[:2].to(model_device(model)))
    except RuntimeError as exc:
        raise ValueError(f"{name}: the model cannot take inputs of shape {tuple(X.shape[1:])} "
                         f"({first_line(exc)})") from None
    if out.dim() != 2:
        raise ValueError(f"{name}: the model's outputs have shape {tuple(out.shape)}, expected (batch, classes)")
    low, high = int(y.min()), int(y.max())
    if low < 0 or high >= out.shape[1]:
        raise ValueError(f"{name}: labels must lie in [0, {out.shape[1]}) for this model, got {low}..{high}")
