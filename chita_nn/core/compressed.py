"""The ``compressed-tensors`` export format: a pruned Hugging Face model as a ``save_pretrained`` folder whose
``nn.Linear`` weights at least half zeros are stored by the compressed-tensors package's sparse compressors, with
the ``sparsity_config`` that llm-compressor writes in ``config.json``'s ``quantization_config``.

- every compressed layer 2:4 (at most 2 nonzeros in each 4 consecutive weights of a row): format
  ``"sparse-24-bitmask"``, ``sparsity_structure: "2:4"``;
- otherwise ``"sparse-bitmask"``, ``"unstructured"`` (one sparsity config covers the whole model, so a single
  layer that is not 2:4 makes the model unstructured, as in llm-compressor);
- ``targets`` / ``ignore``: ``["Linear"]`` minus the dense ``Linear`` layers when the sparse ones are the
  majority, else the sparse layers by name (llm-compressor's rule).

The sparse compressors exist only in compressed-tensors releases before 0.15 (0.14 needs transformers < 5), so the
``serve`` extra installs 0.13; :func:`load_compressed_tensors` reads such a folder back with the package.
"""
import collections
import copy
import logging
from pathlib import Path

import torch

from .writeback import strip_reparametrization

logger = logging.getLogger(__name__)

INSTALL = "pip install 'chita[serve]'"
SPARSE_24 = "sparse-24-bitmask"
BITMASK = "sparse-bitmask"
LINEAR = "Linear"  # the class name compressed-tensors, llm-compressor and vLLM match targets against


def require_compressed_tensors():
    """Import the compressed-tensors package, or raise ``ModuleNotFoundError`` with one line naming the package
    and the extra (also when the installed release no longer has the sparse bitmask compressors)."""
    try:
        import compressed_tensors
    except ModuleNotFoundError:
        raise ModuleNotFoundError(f"the compressed-tensors format needs the compressed-tensors package: {INSTALL}",
                                  name="compressed_tensors") from None
    try:
        from compressed_tensors.compressors import BitmaskCompressor, Sparse24BitMaskCompressor  # noqa: F401
    except ImportError:
        raise ModuleNotFoundError(
            f"the compressed-tensors format needs compressed-tensors < 0.15 (version "
            f"{compressed_tensors.__version__} has no sparse bitmask compressors): {INSTALL}",
            name="compressed_tensors") from None
    return compressed_tensors


def is_mostly_zero(tensor):
    """At least half of ``tensor`` is zeros: where a bit mask plus the nonzero values is the smaller encoding."""
    return 2 * int(torch.count_nonzero(tensor)) <= tensor.numel()


def follows_2_4(weight):
    """Every 4 consecutive weights of each row (along the input dimension) hold at most 2 nonzeros."""
    rows, cols = weight.shape
    return cols % 4 == 0 and bool(((weight.reshape(rows, cols // 4, 4) != 0).sum(dim=-1) <= 2).all())


def _split_linears(model):
    """``{name: weight}`` of the model's ``nn.Linear`` layers to compress (at least half zeros, weight not tied to
    another module) and the names of the other ``nn.Linear`` layers."""
    owners = collections.Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
    sparse, dense = {}, []
    for name, module in model.named_modules():
        if type(module) is not torch.nn.Linear:
            continue
        if owners[id(module.weight)] == 1 and is_mostly_zero(module.weight):
            sparse[name] = module.weight.detach()
        else:
            dense.append(name)
    return sparse, dense


def _targets_and_ignore(sparse, dense):
    """llm-compressor's lists: the class name when most ``Linear`` layers are sparse, else the sparse names."""
    return ([LINEAR] if len(sparse) >= len(dense) else list(sparse)), list(dense)


def sparsity_config(model):
    """The compressed-tensors ``SparsityCompressionConfig`` of a plain (mask-free) model, and the names of the
    layers it compresses; ``ValueError`` if no ``nn.Linear`` layer is at least half zeros."""
    require_compressed_tensors()
    from compressed_tensors.config import SparsityCompressionConfig

    sparse, dense = _split_linears(model)
    if not sparse:
        raise ValueError("the compressed-tensors format compresses nn.Linear weights at least 50% zeros, and the "
                         "model has none: prune it first, or export it with format 'safetensors'")
    not_24 = [name for name, weight in sparse.items() if not follows_2_4(weight)]
    if not_24:
        logger.info("%d of %d sparse Linear layers are not 2:4 (%s): storing the model as %s", len(not_24),
                    len(sparse), ", ".join(not_24[:3]) + (", ..." if len(not_24) > 3 else ""), BITMASK)
    zeros = sum(int((p == 0).sum()) for p in model.parameters())
    targets, ignore = _targets_and_ignore(sparse, dense)
    config = SparsityCompressionConfig.load_from_registry(
        BITMASK if not_24 else SPARSE_24, targets=targets, ignore=ignore,
        global_sparsity=zeros / sum(p.numel() for p in model.parameters()),
        sparsity_structure="unstructured" if not_24 else "2:4")
    return config, sorted(sparse)


def save_compressed_tensors(model, folder):
    """Write the Hugging Face ``model`` (a ``transformers.PreTrainedModel``, pruned with masks or not) to
    ``folder`` in the compressed-tensors format; the model is not modified.  Returns the bytes in the folder.
    Save a tokenizer there with ``tokenizer.save_pretrained(folder)``."""
    require_compressed_tensors()
    import transformers
    from compressed_tensors.compressors import ModelCompressor

    if not isinstance(model, transformers.PreTrainedModel):
        raise TypeError(f"the compressed-tensors format needs a Hugging Face transformers PreTrainedModel (it "
                        f"writes config.json), got {type(model).__name__}")
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder}: is a file; the compressed-tensors format writes a folder")
    plain = strip_reparametrization(copy.deepcopy(model))
    config, compressed = sparsity_config(plain)
    compressor = ModelCompressor(sparsity_config=config)
    # the sparse compressor itself: ModelCompressor.compress would also patch transformers' dtype_byte_size
    state = compressor.sparsity_compressor.compress(plain.state_dict(), compression_targets=set(compressed))
    plain.save_pretrained(folder, state_dict=state, safe_serialization=True)
    compressor.update_config(str(folder))
    logger.info("%s: %d Linear layers stored as %s (%s)", folder, len(compressed), config.format,
                config.sparsity_structure)
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def load_compressed_tensors(folder):
    """The dense state dict of a folder written by :func:`save_compressed_tensors` (or any compressed-tensors
    sparse checkpoint), decompressed by the package's ``ModelCompressor``."""
    require_compressed_tensors()
    from compressed_tensors.compressors import ModelCompressor

    compressor = ModelCompressor.from_pretrained(str(folder))
    if compressor is None or compressor.sparsity_compressor is None:
        raise ValueError(f"{folder}: its config.json has no compressed-tensors sparsity_config")
    return dict(compressor.sparsity_compressor.decompress(str(folder)))
