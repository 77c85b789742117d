"""Checkpoint files of gradual runs: written atomically with a SHA-256 of their content inside, the last two kept
(``checkpoint.pt`` and ``checkpoint.prev.pt``), verified on resume with a fall-back to the previous one.  Layer-wise
runs write one such file per finished block (:mod:`chita_nn.methods.layerwise.resume`) with :func:`write_checked`.

The checksum covers every tensor byte and every value of the state (a canonical walk, see :func:`digest`), so
a flipped byte in tensor data is caught, while ``torch.load(checkpoint.pt)`` still returns the plain state.
"""
import hashlib
import logging
import os
from pathlib import Path

import torch

from ..core.errors import first_line

logger = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"
CHECKSUM_KEY = "sha256"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what is wrong."""


def _feed(hasher, value):
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous().reshape(-1)
        hasher.update(f"T{tensor.dtype}{tuple(value.shape)}".encode())
        hasher.update(tensor.view(torch.uint8).numpy())
    elif isinstance(value, dict):
        hasher.update(f"D{len(value)}".encode())
        for key, item in value.items():
            _feed(hasher, key)
            _feed(hasher, item)
    elif isinstance(value, (list, tuple)):  # a save/load round trip may turn tuples into lists
        hasher.update(f"L{len(value)}".encode())
        for item in value:
            _feed(hasher, item)
    else:
        hasher.update(f"{type(value).__name__}:{value!r};".encode())


def digest(state):
    """SHA-256 (hex) of a nested state of dicts, lists, tensors and scalars."""
    hasher = hashlib.sha256()
    _feed(hasher, state)
    return hasher.hexdigest()


def atomic_torch_save(obj, path):
    """``torch.save`` to a temporary file in the same folder, fsync, then ``os.replace`` onto ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_checked(state, path):
    """Write ``state`` with its checksum to ``path`` atomically (:func:`read_checkpoint` verifies it)."""
    atomic_torch_save({**state, CHECKSUM_KEY: digest(state)}, path)


def save_checkpoint(state, folder):
    """Write ``state`` with its checksum to ``folder/checkpoint.pt``; the one it replaces becomes
    ``checkpoint.prev.pt``.  A crash at any point leaves at least one complete checkpoint."""
    folder = Path(folder)
    tmp = folder / f".{CHECKPOINT}.new"
    write_checked(state, tmp)
    if (folder / CHECKPOINT).exists():
        os.replace(folder / CHECKPOINT, folder / PREVIOUS)
    os.replace(tmp, folder / CHECKPOINT)


def read_checkpoint(path, required=()):
    """The verified state in ``path`` (without its checksum); :class:`CheckpointError` if the file is empty,
    truncated, not a checkpoint, lacks one of ``required``, or its content does not match the checksum."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 -- torch.load fails in many ways on a damaged file
        raise CheckpointError(f"{path}: unreadable checkpoint ({first_line(exc)})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a checkpoint (holds a {type(state).__name__})")
    missing = sorted({CHECKSUM_KEY, *required} - set(state))
    if missing:
        raise CheckpointError(f"{path}: not a complete checkpoint (missing {', '.join(missing)})")
    stored = state.pop(CHECKSUM_KEY)
    if digest(state) != stored:
        raise CheckpointError(f"{path}: checksum mismatch, the file is corrupted")
    return state


def checkpoint_files(folder):
    """The checkpoint files present in ``folder``, newest first."""
    return [Path(folder) / name for name in (CHECKPOINT, PREVIOUS) if (Path(folder) / name).exists()]


def load_latest(folder, required=()):
    """``(path, state)`` of the newest usable checkpoint in ``folder``, or ``None`` if there is none.

    An unusable newest checkpoint is skipped with a logged warning; if every file is unusable,
    :class:`CheckpointError` names each one and why.
    """
    problems = []
    for path in checkpoint_files(folder):
        try:
            state = read_checkpoint(path, required)
        except CheckpointError as exc:
            problems.append(str(exc))
            continue
        for problem in problems:
            logger.warning("%s; resuming from the previous checkpoint %s instead", problem, path)
        return path, state
    if problems:
        raise CheckpointError("no usable checkpoint: " + "; ".join(problems))
    return None


def remove_checkpoints(folder):
    """Delete the checkpoint files of ``folder`` (a run that starts over)."""
    for path in checkpoint_files(folder):
        path.unlink()
