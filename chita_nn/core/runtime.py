"""Model state helpers: device, eval mode restored on exit, evaluation."""
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from .batches import as_tensors


def model_device(model):
    """Device of the model's first parameter (CPU for a model without parameters)."""
    return next(iter(model.parameters()), torch.empty(0)).device


@contextmanager
def eval_mode(model):
    """Put ``model`` in eval mode; on exit restore every submodule's own ``training`` flag."""
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in flags:
            module.training = training


@torch.no_grad()
def evaluate(model, dataset, batch_size=1000):
    """``{"accuracy": fraction correct, "loss": mean cross-entropy}`` of ``model`` (eval mode) on ``dataset``.

    The train/eval mode of the model and its submodules is restored.
    """
    X, y = as_tensors(dataset, "dataset")
    if len(X) == 0:
        raise ValueError("dataset is empty")
    if y.is_floating_point() or y.dim() != 1:
        raise ValueError(f"dataset: evaluate measures classification accuracy and needs 1-D integer labels, got "
                         f"{y.dtype} of shape {tuple(y.shape)}; evaluate a regression model with your own metric")
    device = model_device(model)
    correct, loss_sum = 0, 0.0
    with eval_mode(model):
        for start in range(0, len(X), batch_size):
            xb = X[start:start + batch_size].to(device)
            yb = y[start:start + batch_size].to(device)
            logits = model(xb)
            loss_sum += F.cross_entropy(logits, yb, reduction="sum").item()
            correct += (logits.argmax(dim=1) == yb).sum().item()
    return {"accuracy": correct / len(X), "loss": loss_sum / len(X)}
