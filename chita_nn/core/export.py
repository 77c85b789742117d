"""Exporting pruned models for use without chita_nn's prune masks.

Formats (:data:`FORMATS`):

- ``"dense"``: a plain ``torch.save`` state dict with the zeros in place, loadable by the unmodified model
  class (``model.load_state_dict(torch.load(path))``);
- ``"compact"``: tensors with at least half zeros stored as a bit mask of the nonzeros plus their values
  (about ``1/32 + (1 − s)`` of dense for float32 at sparsity ``s``), the rest dense; :func:`load_export`
  restores the dense state dict exactly;
- ``"safetensors"``: the dense state dict as a safetensors file (``pip install safetensors``, or the ``hf``
  extra), for Hugging Face tooling;
- ``"compressed-tensors"``: a Hugging Face model as a ``save_pretrained`` folder with its sparse ``Linear``
  weights compressed as llm-compressor stores them (``sparse-24-bitmask`` for 2:4, else ``sparse-bitmask``; the
  ``serve`` extra), see :mod:`chita_nn.core.compressed`.
"""
import os

import numpy as np
import torch

from .compressed import is_mostly_zero, load_compressed_tensors, save_compressed_tensors
from .errors import first_line

#: Formats and the suffix of the file (folder, for compressed-tensors) each is written with by default.
SUFFIXES = {"dense": ".dense.pt", "compact": ".compact.pt", "safetensors": ".safetensors",
            "compressed-tensors": ".compressed-tensors"}
FORMATS = tuple(SUFFIXES)
#: The formats of any model or state dict (compressed-tensors needs a Hugging Face model).
STATE_FORMATS = ("dense", "compact", "safetensors")
COMPACT_TAG = "chita-compact-v1"
SAFETENSORS_MAGIC = b"{"  # a safetensors file is an 8-byte header length, then a JSON header


def dense_state_dict(model_or_state):
    """The state dict with every prune reparametrisation folded in (``w = w_orig · mask`` under the name
    ``w``, masks dropped): what the unpruned model class loads.  The model is not modified."""
    state = model_or_state.state_dict() if isinstance(model_or_state, torch.nn.Module) else model_or_state
    dense = {}
    for key, value in state.items():
        if key.endswith("_orig") and key[: -len("_orig")] + "_mask" in state:
            name = key[: -len("_orig")]
            dense[name] = (value * state[name + "_mask"].to(value.dtype)).detach().clone()
        elif not (key.endswith("_mask") and key[: -len("_mask")] + "_orig" in state):
            dense[key] = value.detach().clone()
    return dense


def _encode(tensor):
    """A bit mask plus nonzero values when that is smaller than the tensor, else the tensor itself."""
    if not tensor.is_floating_point() or tensor.numel() == 0 or not is_mostly_zero(tensor):
        return tensor
    flat = tensor.reshape(-1)
    nonzero = flat != 0
    return {"shape": list(tensor.shape), "bits": torch.from_numpy(np.packbits(nonzero.numpy())),
            "values": flat[nonzero].clone()}


def _decode(entry):
    if isinstance(entry, torch.Tensor):
        return entry
    shape, values = entry["shape"], entry["values"]
    numel = int(np.prod(shape, dtype=np.int64))
    nonzero = torch.from_numpy(np.unpackbits(entry["bits"].numpy(), count=numel).astype(bool))
    flat = torch.zeros(numel, dtype=values.dtype)
    flat[nonzero] = values
    return flat.reshape(shape)


def _save_safetensors(state, path):
    try:
        from safetensors.torch import save_file
    except ModuleNotFoundError:
        raise ModuleNotFoundError("the safetensors format needs the safetensors package: pip install safetensors "
                                  "(or pip install 'chita[hf]')", name="safetensors") from None
    save_file({key: value.contiguous() for key, value in state.items()}, str(path), metadata={"format": "pt"})


def export(model, path, format="dense"):
    """Write ``model`` (an ``nn.Module`` or a state dict, pruned with masks or not; a Hugging Face
    ``PreTrainedModel`` for ``"compressed-tensors"``) to ``path`` (a folder for ``"compressed-tensors"``) in
    ``format`` (see :data:`FORMATS`); returns the number of bytes written."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if format == "compressed-tensors":
        return save_compressed_tensors(model, path)
    state = {key: value.cpu() for key, value in dense_state_dict(model).items()}
    if format == "safetensors":
        _save_safetensors(state, path)
    elif format == "compact":
        torch.save({"format": COMPACT_TAG, "tensors": {key: _encode(value) for key, value in state.items()}}, path)
    else:
        torch.save(state, path)
    return os.path.getsize(path)


def load_export(path):
    """The dense state dict in a file (or compressed-tensors folder) written by :func:`export`, whatever its
    format."""
    if os.path.isdir(path):
        return load_compressed_tensors(path)
    with open(path, "rb") as fh:
        head = fh.read(9)
    if head[8:9] == SAFETENSORS_MAGIC:
        from safetensors.torch import load_file

        return load_file(str(path))
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(payload, dict) and payload.get("format") == COMPACT_TAG:
        return {key: _decode(entry) for key, entry in payload["tensors"].items()}
    return payload


def load_state(path):
    """The state dict in a file of :func:`chita_nn.save_pruned` (or a plain saved state dict); ``ValueError``
    naming the file if it is neither."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 -- torch.load fails in many ways on a damaged file
        raise ValueError(f"{path}: not a readable PyTorch file ({first_line(exc)})") from None
    state = payload.get("state_dict", payload) if isinstance(payload, dict) else None
    if not (isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values())):
        raise ValueError(f"{path}: holds no model weights (expected pruned.pt of 'chita-nn prune' or a state dict)")
    return state
