"""Datasets used by the CHITA experiments: MNIST, CIFAR-10 (from the shared data folder) and sklearn digits.

The real data is never bundled with the package: it is read from a data folder given explicitly or through the
``CHITA_DATA_DIR`` environment variable (see :func:`resolve_data_dir`).
"""
import gzip
import logging
import numbers
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from ..core.batches import as_tensors

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "CHITA_DATA_DIR"
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
CIFAR10_MEAN, CIFAR10_STD = 0.5, 0.5  # the normalisation the ResNet20 checkpoint's BatchNorm statistics fit

_IDX_IMAGES_MAGIC = 2051
_IDX_LABELS_MAGIC = 2049
_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_CIFAR10_FILES = {"train": "train_first25000.npz", "test": "test_batch.npz"}


def resolve_data_dir(data_dir=None):
    """Return the data folder: ``data_dir`` if given, else ``$CHITA_DATA_DIR``.

    Raises ``FileNotFoundError`` if neither is set or the folder does not exist.
    """
    source = "data_dir"
    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_ENV) or None
        source = f"${DATA_DIR_ENV}"
    if data_dir is None:
        raise FileNotFoundError(
            "no data folder given: pass data_dir=... (e.g. data_dir='/path/to/shared/data') or set the "
            f"environment variable {DATA_DIR_ENV}=/path/to/shared/data"
        )
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"data folder {str(path)!r} (from {source}) does not exist; pass data_dir=... or set "
            f"{DATA_DIR_ENV} to the folder holding mnist/, cifar10/ and checkpoints/"
        )
    return path



def _check_split(split, allowed):
    if split not in allowed:
        raise ValueError(f"split must be one of {sorted(allowed)}, got {split!r}")


def _check_limit(limit):
    if limit is not None and (not isinstance(limit, numbers.Integral) or isinstance(limit, bool) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")


def _read_idx(path, magic, item_shape):
    """Read a gzip-compressed big-endian IDX file, checking its magic number and dimensions."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"{path}: not a readable gzip file ({exc})") from None
    ndim = 1 + len(item_shape)
    header = 4 * (1 + ndim)
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header")
    found, *dims = struct.unpack(f">{1 + ndim}I", raw[:header])
    if found != magic:
        raise ValueError(f"{path}: bad IDX magic number {found} (expected {magic})")
    if tuple(dims[1:]) != tuple(item_shape):
        raise ValueError(f"{path}: item shape {tuple(dims[1:])}, expected {tuple(item_shape)}")
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise ValueError(f"{path}: {len(raw) - header} data bytes, header announces {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _normalise(pixels, mean, std):
    """``(pixels / 255 - mean) / std`` as float32, from a uint8 array."""
    return torch.from_numpy(pixels.astype(np.float32)).div_(255.0).sub_(mean).div_(std)


def load_mnist(split="test", data_dir=None, limit=None):
    """MNIST as ``TensorDataset(X (N, 1, 28, 28) float32, y (N,) int64)``, X = (pixels/255 − 0.1307)/0.3081.

    ``limit`` keeps the first ``limit`` samples.
    """
    _check_split(split, _MNIST_FILES)
    _check_limit(limit)
    folder = resolve_data_dir(data_dir) / "mnist"
    image_file, label_file = _MNIST_FILES[split]
    images = _read_idx(folder / image_file, _IDX_IMAGES_MAGIC, (28, 28))
    labels = _read_idx(folder / label_file, _IDX_LABELS_MAGIC, ())
    if len(images) != len(labels):
        raise ValueError(f"MNIST {split}: {len(images)} images but {len(labels)} labels")
    images, labels = images[:limit], labels[:limit]
    X = _normalise(images, MNIST_MEAN, MNIST_STD).unsqueeze(1)
    logger.debug("loaded MNIST %s: %d samples", split, len(X))
    return TensorDataset(X, torch.from_numpy(labels.astype(np.int64)))


def load_cifar10(split="test", data_dir=None, limit=None):
    """CIFAR-10 as ``TensorDataset(X (N, 3, 32, 32) float32, y (N,) int64)``, X = (pixels/255 − 0.5)/0.5.

    ``split="train"`` gives the 25,000 stored training images (global indices 0..24999).
    """
    _check_split(split, _CIFAR10_FILES)
    _check_limit(limit)
    path = resolve_data_dir(data_dir) / "cifar10" / _CIFAR10_FILES[split]
    try:
        with np.load(path) as archive:
            images, labels = archive["data"][:limit], archive["labels"][:limit]
    except FileNotFoundError:
        raise
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        raise ValueError(f"{path}: not a readable CIFAR-10 .npz file ({exc})") from None
    if images.ndim != 2 or images.shape[1] != 3 * 32 * 32 or len(images) != len(labels):
        raise ValueError(f"{path}: unexpected array shapes data {images.shape}, labels {labels.shape}")
    X = _normalise(images.reshape(-1, 3, 32, 32), CIFAR10_MEAN, CIFAR10_STD)
    logger.debug("loaded CIFAR-10 %s: %d samples", split, len(X))
    return TensorDataset(X, torch.from_numpy(labels.astype(np.int64)))


def load_digits_data(test_size=0.25, seed=0):
    """sklearn's 8x8 digits as ``(train, test)`` TensorDatasets of 64 float32 features, int64 labels.

    Stratified split; features standardised with the training mean and std (constant pixels: std taken as 1).
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=test_size, random_state=seed, stratify=y)
    mean = X_tr.mean(axis=0)
    std = X_tr.std(axis=0)
    std[std == 0] = 1.0

    def to_dataset(features, labels):
        features = ((features - mean) / std).astype(np.float32)
        return TensorDataset(torch.from_numpy(features), torch.from_numpy(labels.astype(np.int64)))

    return to_dataset(X_tr, y_tr), to_dataset(X_te, y_te)


def subset(dataset, n, seed=0):
    """A random subset of ``n`` samples (without replacement, original order kept) as a TensorDataset."""
    X, y = as_tensors(dataset, "dataset")
    if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    if n > len(X):
        raise ValueError(f"n={n} is larger than the dataset ({len(X)} samples)")
    index = np.sort(np.random.default_rng(seed).choice(len(X), size=n, replace=False))
    index = torch.from_numpy(index)
    return TensorDataset(X[index], y[index])
