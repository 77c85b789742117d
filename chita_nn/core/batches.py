"""Calibration data as users have it, turned into batches the pruning code can consume."""
import torch
from torch.utils.data import TensorDataset


def as_tensors(data, name="data"):
    """Return ``(X, y)`` from a two-tensor ``TensorDataset`` or a tuple/list ``(X, y)`` of tensors."""
    tensors = data.tensors if isinstance(data, TensorDataset) else data
    if not (isinstance(tensors, (tuple, list)) and len(tensors) == 2
            and all(isinstance(t, torch.Tensor) for t in tensors)):
        raise TypeError(f"{name} must be a TensorDataset (X, y) or a tuple (X, y) of tensors, "
                        f"got {type(data).__name__}")
    X, y = tensors
    if len(X) != len(y):
        raise ValueError(f"{name}: X has {len(X)} samples but y has {len(y)}")
    return X, y

