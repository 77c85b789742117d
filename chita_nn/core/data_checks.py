"""Checks that data fits a model before any long work starts: labelled classification data, and the inputs of
calibration data (finite, and inputs the model runs on)."""
import torch
from torch import nn

from .batches import as_tensors, forward, split, tensors_in, to_device
from .errors import first_line
from .runtime import eval_mode, model_device

#: Input dtypes that are indices or masks (token ids, attention masks), not values of the weights' dtype.
_INDEX_DTYPES = (torch.int64, torch.int32, torch.bool)
#: Errors a model raises on inputs it cannot take (wrong shape, dtype, keys or structure).
_RUN_ERRORS = (RuntimeError, TypeError, ValueError, IndexError, KeyError, AttributeError)


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


def check_module(model, name="model"):
    """``TypeError`` naming ``name`` unless ``model`` is a ``torch.nn.Module``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {type(model).__name__}")


def dtype_hint(model, inputs, exc):
    """``" (data's inputs are int8, the model's weights float32: pass float32 inputs)"`` when the model failed
    with ``exc`` on ``inputs`` holding tensors of another dtype than its floating-point weights (indices and
    masks count only when the error is about dtypes); else ``""``."""
    weights = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    about_dtypes = "dtype" in str(exc) or "scalar type" in str(exc)
    odd = sorted({str(t.dtype).removeprefix("torch.") for t in tensors_in(inputs)
                  if t.dtype != weights and (about_dtypes or t.dtype not in _INDEX_DTYPES)})
    if weights is None or not odd:
        return ""
    expected = str(weights).removeprefix("torch.")
    return f" (data's inputs are {', '.join(odd)}, the model's weights {expected}: pass {expected} inputs)"


@torch.no_grad()
def check_inputs(model, calibration, name="data"):
    """Before layer-wise pruning: ``TypeError`` unless ``model`` is an ``nn.Module``; ``ValueError`` naming
    ``name`` if a floating-point input of ``calibration`` (a :class:`~chita_nn.core.batches.Calibration`) is not
    finite, or if the model cannot run on the inputs of its first sample as the pruning feeds them
    (:func:`~chita_nn.core.batches.split`, :func:`~chita_nn.core.batches.forward`)."""
    check_module(model)
    for index, batch in enumerate(calibration.batches):
        if any(t.is_floating_point() and not bool(torch.isfinite(t).all()) for t in tensors_in(split(batch)[0])):
            raise ValueError(f"{name}: the inputs of batch {index} contain NaN or infinite values")
    inputs = to_device(split(calibration.first(1))[0], model_device(model))
    try:
        with eval_mode(model):
            forward(model, inputs)
    except _RUN_ERRORS as exc:
        raise ValueError(f"{name}: the model cannot run on the inputs of the first batch: {type(exc).__name__}: "
                         f"{first_line(exc)}{dtype_hint(model, inputs, exc)}") from None
