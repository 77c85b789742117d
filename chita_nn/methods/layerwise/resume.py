"""Checkpoints of layer-wise runs: a run stopped anywhere (killed, out of memory, a failure) continues where it
stopped and ends bit for bit where the uninterrupted run would have.

Every finished unit of work, each block of the model in order and then each layer pruned outside the blocks, is
written to its own file of the checkpoint folder (``block-0000.pt``, ``block-0001.pt``, …, ``layer-0000.pt``,
…) as gradual runs write theirs (:func:`chita_nn.methods.checkpoints.write_checked`: atomically, with a SHA-256
of the content inside): the pruned rows and keep masks of its layers, their reports, and the run's fingerprint.

The fingerprint is the settings (method, sparsity, pattern, dampening, solver options, …, the selected layers), a
digest of the calibration inputs and a digest of the model's state when the call started.  A folder written by a
run with other settings, data or model is refused (``ValueError`` naming the first difference), and a damaged
file (:class:`~chita_nn.methods.checkpoints.CheckpointError`) too.  Resuming installs the saved weights block by
block and runs the calibration batches through each restored block, the computation the uninterrupted run made
after pruning it, so the next block sees its inputs to the last bit.  That holds with the same torch thread
count and device (BLAS products round differently with another thread count): a run resumed with others is
warned about.  Numba's thread count does not matter (its kernels split work by rows).
"""
import dataclasses
import logging
import os
import reprlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from ...core.batches import split
from ...core.report import LayerReport
from ..checkpoints import CheckpointError, digest, read_checkpoint, write_checked
from .weights import rows

logger = logging.getLogger(__name__)

BLOCK, LAYER = "block", "layer"
#: Version of the file contents: files of another version are refused as written by other settings.
FORMAT = 1
_KEYS = ("run", "environment", "weights", "keeps", "layers")
_TEMPORARY = ".{kind}-*.pt.tmp*"
_START_OVER = "use another checkpoint folder or start over (resume=False; on the command line --overwrite)"


def _file(kind, index):
    return f"{kind}-{index:04d}.pt"


def _files(folder, pattern="{kind}-*.pt"):
    """The unit files of ``folder`` in name order (``pattern`` ".{kind}-*.pt.tmp*": the temporary files that a
    killed write leaves)."""
    return sorted(path for kind in (BLOCK, LAYER) for path in Path(folder).glob(pattern.format(kind=kind)))


def _plain(value):
    """``value`` as plain data that ``torch.load(weights_only=True)`` reads back (numpy scalars as numbers,
    mappings with sorted string keys, sequences as lists, other objects as their repr)."""
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return value
    if isinstance(value, Mapping):
        return {key: _plain(value[original]) for key, original in sorted((str(k), k) for k in value)}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return repr(value)


def fingerprint(settings, calibration, model):
    """What a checkpoint must have been written with to be resumed: ``settings`` (as plain data), a digest of the
    calibration inputs (targets left out) and one of the model's state dict (its weights before pruning)."""
    return {"format": FORMAT, "settings": _plain(settings),
            "calibration": digest([split(batch)[0] for batch in calibration.batches]),
            "model": digest(model.state_dict())}


def _difference(written, run):
    """The first difference between the fingerprints ``written`` (in a file) and ``run``, in words, or None."""
    if written.get("format") != run["format"]:
        return f"checkpoint format {written.get('format')!r} (this version writes {run['format']!r})"
    old, new = written["settings"], run["settings"]  # the same keys in one format
    for key in new:
        if digest(old.get(key)) != digest(new[key]):
            return f"{key}={reprlib.repr(old.get(key))}, this run has {key}={reprlib.repr(new[key])}"
    if written["calibration"] != run["calibration"]:
        return "other calibration data (the digests of the calibration inputs differ)"
    if written["model"] != run["model"]:
        return "another model (the digests of its weights and buffers before pruning differ)"
    return None


def remove_checkpoints(folder):
    """Delete the checkpoint files of a layer-wise run in ``folder``, and ``folder`` if that leaves it empty."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for path in _files(folder) + _files(folder, _TEMPORARY):
        path.unlink()
    if not any(folder.iterdir()):
        folder.rmdir()


def _check_folder(folder):
    """Raise ``ValueError`` naming ``checkpoint_dir`` unless ``folder`` is (or can be created as) a folder."""
    if not isinstance(folder, (str, os.PathLike)) or not str(folder):
        raise ValueError(f"checkpoint_dir must be a folder path (str or Path), got {folder!r}")
    if Path(folder).exists() and not Path(folder).is_dir():
        raise ValueError(f"checkpoint_dir {folder}: is a file, not a folder")


def verify(folder):
    """The number of checkpoint files in ``folder``, each read and verified against its checksum
    (:class:`CheckpointError` naming the first damaged one): a check made before a model is loaded."""
    paths = _files(folder)
    for path in paths:
        _read(path)
    return len(paths)


def _read(path):
    try:
        return read_checkpoint(path, _KEYS)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}; delete it to prune from there again, or {_START_OVER}") from None


class Checkpoints:
    """The checkpoint folder of one call of :func:`~.api.prune_layerwise`, fingerprint ``run``.

    ``resume=False`` deletes the files of an earlier run; ``resume=True`` keeps them, after checking (the first
    one read and verified now, before any work) that they were written with the same fingerprint.
    """

    def __init__(self, folder, run, device, resume):
        _check_folder(folder)
        self.folder, self.run = Path(folder), run
        self.environment = {"torch_threads": torch.get_num_threads(), "device": torch.device(device).type}
        self.warned = False
        if not resume:
            remove_checkpoints(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        for path in _files(self.folder, _TEMPORARY):
            path.unlink()
        found = _files(self.folder)
        if found:
            self._check(found[0], _read(found[0]))
            logger.info("%s: %d finished blocks or layers checkpointed, resuming after them", self.folder,
                        len(found))

    def _check(self, path, state):
        difference = _difference(state["run"], self.run)
        if difference is not None:
            raise ValueError(f"{path} was written by a run with {difference}; {_START_OVER}")
        if state["environment"] != self.environment and not self.warned:
            self.warned = True
            logger.warning("%s was written with %s, this run has %s: the result may differ in the last bits from "
                           "an uninterrupted run", path, state["environment"], self.environment)

    def load(self, kind, index):
        """The verified state of unit ``index`` of ``kind`` (``BLOCK`` or ``LAYER``), or None if it has no file."""
        path = self.folder / _file(kind, index)
        if not path.exists():
            return None
        state = _read(path)
        self._check(path, state)
        return state

    def save(self, kind, index, layers, keeps, reports):
        """Write unit ``index`` of ``kind``: the current rows of ``layers`` (installed), their keep masks and
        reports (dicts by layer name)."""
        write_checked({"run": self.run, "environment": self.environment,
                       "weights": {pp.name: rows(pp).cpu() for pp in layers},
                       "keeps": {pp.name: keeps[pp.name].cpu() for pp in layers},
                       "layers": {pp.name: _plain(dataclasses.asdict(reports[pp.name])) for pp in layers}},
                      self.folder / _file(kind, index))


def restored_report(state):
    """The :class:`LayerReport` saved as ``state``."""
    return LayerReport(**{**state, "shape": tuple(state["shape"])})
