"""Calibration data as users have it: ``(X, y)``, a ``TensorDataset``, a ``DataLoader`` or any iterable of
batches (tensors, tuples, dicts / Hugging Face ``BatchEncoding``), turned into one object the pruning code
can index by sample.

A *batch* is a tensor, a tuple/list of tensors (inputs first, the target last when there are two or more)
or a mapping of names to tensors; a *sample* is one index along the leading dimension of its tensors.
"""
import inspect
from collections.abc import Mapping

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

#: Keys of a dict batch that are targets, never model inputs.
TARGET_KEYS = ("labels", "label", "target", "targets")


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


def tensors_in(batch):
    """The tensors of a batch (or of its inputs), in order."""
    if isinstance(batch, torch.Tensor):
        return [batch]
    if isinstance(batch, Mapping):
        return [v for v in batch.values() if isinstance(v, torch.Tensor)]
    if isinstance(batch, (tuple, list)):
        return [t for item in batch for t in tensors_in(item)]
    return []


def batch_size(batch, name="data"):
    """Number of samples of ``batch``: the common leading dimension of its tensors."""
    sizes = {t.shape[0] for t in tensors_in(batch) if t.dim() > 0}
    items = batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, (tuple, list)) else [batch]
    if any(isinstance(item, np.ndarray) for item in items):
        raise TypeError(f"{name}: batches must hold torch tensors, got a numpy array: convert it with "
                        f"torch.from_numpy(...)")
    if len(sizes) != 1:
        what = "no tensor with a batch dimension" if not sizes else f"tensors of leading sizes {sorted(sizes)}"
        raise ValueError(f"{name}: a batch must hold tensors sharing their first (batch) dimension, got {what} "
                         f"in a {type(batch).__name__}")
    return sizes.pop()


def take(batch, index):
    """The samples ``index`` (a slice or an index tensor) of ``batch``, same structure."""
    if isinstance(batch, torch.Tensor):
        return batch[index] if batch.dim() > 0 else batch
    if isinstance(batch, Mapping):
        return {k: take(v, index) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(take(item, index) for item in batch)
    return batch


def to_device(batch, device):
    """``batch`` with every tensor moved to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(item, device) for item in batch)
    return batch


def split(batch):
    """``(inputs, target)``: ``(X, y)`` tuples give ``((X,), y)``; dicts give ``(dict without targets, labels)``;
    a lone tensor or a one-element tuple gives ``(inputs, None)``."""
    if isinstance(batch, Mapping):
        target = next((batch[k] for k in TARGET_KEYS if k in batch), None)
        return {k: v for k, v in batch.items() if k not in TARGET_KEYS}, target
    if isinstance(batch, (tuple, list)):
        if len(batch) == 1:
            return tuple(batch), None
        return tuple(batch[:-1]), batch[-1]
    return (batch,), None


def _accepts_keywords(model, keys):
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if any(p.kind in positional and p.default is inspect.Parameter.empty and p.name not in keys
           for p in params.values()):
        return False  # e.g. sentence-transformers: forward(input, **kwargs) takes the dict positionally
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return True
    return all(k in params for k in keys)


def forward(model, inputs):
    """Run ``model`` on the inputs of a batch (see :func:`split`).

    A dict is passed as keyword arguments when ``model.forward`` takes them (Hugging Face models), else as
    one positional argument (sentence-transformers); a tuple is unpacked.
    """
    if isinstance(inputs, Mapping):
        return model(**inputs) if _accepts_keywords(model, inputs.keys()) else model(dict(inputs))
    return model(*inputs)


class Calibration:
    """The user's data, held as a list of batches and addressable by sample.

    ``(X, y)`` and ``TensorDataset`` stay two tensors (one batch); a ``DataLoader`` or another iterable is
    iterated once and its batches kept (calibration sets are small).  ``samples(index)`` returns the
    chosen samples as batches that never straddle two of the user's batches, so that batches of different
    sequence lengths never need padding.  A ``Calibration`` given as ``data`` shares its batches (a checked
    calibration set passes on without iterating the user's data twice).
    """

    def __init__(self, data, name="data"):
        self.name = name
        if isinstance(data, Calibration):
            self.batches = data.batches
        elif isinstance(data, TensorDataset) or (isinstance(data, (tuple, list)) and len(data) == 2
                                                 and all(isinstance(t, torch.Tensor) for t in data)):
            self.batches = [tuple(as_tensors(data, name))]
        elif isinstance(data, (torch.Tensor, Mapping)):
            self.batches = [data]
        elif isinstance(data, (DataLoader, list, tuple)) or _is_iterable(data):
            self.batches = list(data)
        else:
            raise TypeError(f"{name} must be (X, y), a TensorDataset, a DataLoader or an iterable of batches "
                            f"(tensors, tuples or dicts of tensors), got {type(data).__name__}")
        self.sizes = [batch_size(b, name) for b in self.batches]
        self.starts = [0]
        for size in self.sizes:
            self.starts.append(self.starts[-1] + size)
        if self.n_samples == 0:
            raise ValueError(f"{name} is empty: it holds no samples")

    @property
    def n_samples(self):
        return self.starts[-1]

    def first(self, n=1):
        """The first ``n`` samples of the first batch (for shape checks)."""
        return take(self.batches[0], slice(0, min(n, self.sizes[0])))

    def samples(self, index, chunk):
        """Yield the samples ``index`` (global sample numbers, in that order) as batches of at most ``chunk``
        samples each, every chunk taken from one user batch; ``chunk`` must divide into the groups the caller
        needs (it is respected exactly except at the end of a user batch)."""
        index = torch.as_tensor(index, dtype=torch.long)
        owner = np.searchsorted(self.starts[1:], index.numpy(), side="right")
        runs = np.split(np.arange(len(index)), np.flatnonzero(np.diff(owner)) + 1)  # same owner, in order
        for run in runs:
            if run.size == 0:
                continue
            b = int(owner[run[0]])
            for lo in range(0, run.size, chunk):
                yield take(self.batches[b], index[run[lo]:run[lo] + min(chunk, run.size - lo)] - self.starts[b])

    def rows(self, n_rows, m, seed=None):
        """Sample indices for ``n_rows`` rows of ``m`` samples, each row inside one user batch.

        With ``seed`` the rows are a random choice (the order within a batch kept), else the first ones.
        Raises ``ValueError`` naming the data when there are fewer than ``n_rows`` such rows.
        """
        groups = [torch.arange(start, start + (size // m) * m).reshape(-1, m)
                  for start, size in zip(self.starts, self.sizes) if size >= m]
        available = sum(len(g) for g in groups)
        if available < n_rows:
            raise ValueError(f"{self.name} has {self.n_samples} samples, enough for {available} rows of "
                             f"samples_per_row={m} (a row never spans two batches), but n_rows={n_rows} rows "
                             f"are needed; lower n_rows or samples_per_row")
        if seed is not None and len(self.batches) == 1:  # one batch: any m samples may form a row
            chosen = np.random.default_rng(seed).choice(self.n_samples, size=n_rows * m, replace=False)
            return torch.from_numpy(chosen)
        all_rows = torch.cat(groups) if groups else torch.empty(0, m, dtype=torch.long)
        if seed is not None:
            generator = torch.Generator().manual_seed(int(seed))
            all_rows = all_rows[torch.randperm(len(all_rows), generator=generator)[:n_rows]]
        return all_rows[:n_rows].reshape(-1)

    def max_rows(self, m):
        """How many rows of ``m`` samples fit (a row never spans two batches)."""
        return sum(size // m for size in self.sizes)


def _is_iterable(data):
    try:
        iter(data)
    except TypeError:
        return False
    return not isinstance(data, (str, bytes))
