"""Selection of the prunable weight tensors of a model and their layout as one flat vector."""
import collections
import dataclasses
import fnmatch
import logging
import re
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrunableParam:
    """One prunable tensor: ``getattr(module, param_name)``, known in the model as ``name``.

    Works on modules reparametrised by ``torch.nn.utils.prune``: the stored values then live in
    ``<param_name>_orig`` and ``getattr(module, param_name)`` is the masked (effective) tensor.
    """

    name: str
    module_name: str
    module: nn.Module = field(repr=False)
    param_name: str
    #: False if a hook on ``module`` cannot see each sample's whole gradient (see :func:`_hook_safe`).
    hook_safe: bool = True

    @property
    def is_reparametrized(self):
        """True if ``torch.nn.utils.prune`` moved the values to ``<param_name>_orig``."""
        return hasattr(self.module, self.param_name + "_orig")

    @property
    def parameter(self):
        """The ``nn.Parameter`` holding the values (``<param_name>_orig`` when reparametrised)."""
        suffix = "_orig" if self.is_reparametrized else ""
        return getattr(self.module, self.param_name + suffix)

    def tensor(self):
        """The effective (masked, if pruned) weight tensor."""
        return getattr(self.module, self.param_name)

    @property
    def shape(self):
        return self.parameter.shape

    @property
    def numel(self):
        return self.parameter.numel()


#: Default targets: the layers whose weights are pruned unless ``targets`` says otherwise.  ``Embedding``,
#: ``EmbeddingBag`` and the recurrent layers (``RNN``, ``GRU``, ``LSTM``, their cells) are pruned on request.
DEFAULT_TARGETS = ("Linear", "Conv1d", "Conv2d", "Conv3d", "Conv1D", "MultiheadAttention")
#: Default ignore list: a language model's output head stays dense (llm-compressor's convention).
DEFAULT_IGNORE = ("re:(.*\\.)?lm_head",)


def _rnn_weights(module):
    """``weight_ih_l*``, ``weight_hh_l*`` (and LSTM's ``weight_hr_l*``) in the layer's own order."""
    return tuple(name for name in module._flat_weights_names if name.startswith("weight_"))


#: The prunable parameters of each supported module type, by class name (so that Hugging Face's ``Conv1D``
#: needs no import; the first name found in the class's MRO counts): a tuple of names, or a function of the
#: module giving them.  A type that is not listed prunes its ``weight``.  Names whose attribute is not a
#: tensor (``in_proj_weight`` when query, key and value have their own sizes) are skipped.
PRUNABLE_PARAMS = {
    "MultiheadAttention": ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"),
    "RNNBase": _rnn_weights,
    "RNNCellBase": ("weight_ih", "weight_hh"),
}


def prunable_names(module):
    """The names of the prunable tensors of ``module`` according to :data:`PRUNABLE_PARAMS`."""
    for cls in type(module).__mro__:
        names = PRUNABLE_PARAMS.get(cls.__name__)
        if names is not None:
            return tuple(names(module) if callable(names) else names)
    return ("weight",)


def _entries(value, name):
    """A target/ignore list: a single entry or a sequence of module types and name patterns."""
    if value is None:
        return []
    entries = [value] if isinstance(value, (str, type)) else list(value)
    for entry in entries:
        if not (isinstance(entry, str) or (isinstance(entry, type) and issubclass(entry, nn.Module))):
            raise TypeError(f"{name} entries must be nn.Module subclasses, class names or name patterns "
                            f"('re:<regex>' or a glob), got {entry!r}")
    return entries


def _name_matches(pattern, names):
    if pattern.startswith("re:"):
        regex = re.compile(pattern[3:])
        return any(regex.fullmatch(n) for n in names)
    return any(fnmatch.fnmatchcase(n, pattern) for n in names)


def _matches(entry, module, names):
    """Whether ``module`` (known by ``names``: module and parameter name) matches one target/ignore entry.

    A type matches instances (subclasses included); a plain identifier such as ``"Linear"`` matches the class
    name of the module or of one of its bases; anything else is a glob or ``re:`` pattern on the names.
    """
    if isinstance(entry, type):
        return isinstance(module, entry)
    if entry.isidentifier() and entry[:1].isupper():
        return any(cls.__name__ == entry for cls in type(module).__mro__)
    return _name_matches(entry, names)


def _type_entry(entry):
    return isinstance(entry, type) or (entry.isidentifier() and entry[:1].isupper())


def _tensor_owners(model):
    """How many distinct modules hold each parameter (by ``id``): more than one for tied weights."""
    owners = collections.Counter()
    for module in model.modules():
        owners.update(id(param) for param in module._parameters.values() if param is not None)
    return owners


def _sequence_first(module):
    """Whether ``module`` runs its batch in dim 1: ``batch_first=False``, on it or on its ``self_attn``
    (``nn.TransformerEncoderLayer`` / ``DecoderLayer`` keep the flag there)."""
    return any(getattr(m, "batch_first", True) is False for m in (module, getattr(module, "self_attn", None)))


def _hook_safe(modules, module_name, parameter, owners):
    """Whether a forward hook on module ``module_name`` sees each sample's whole gradient of ``parameter``.

    Not when the parameter is tied to another module (its other uses are not seen), nor when the module or
    one that encloses it runs sequence-first (the batch is not dim 0 of the hooked input).
    ``modules`` is ``dict(model.named_modules())``, ``owners`` the counts of :func:`_tensor_owners`.
    """
    parts = module_name.split(".") if module_name else []
    enclosing = (modules[".".join(parts[:i])] for i in range(len(parts) + 1))
    return owners[id(parameter)] == 1 and not any(_sequence_first(m) for m in enclosing)


def select_parameters(model, *, targets=DEFAULT_TARGETS, ignore=DEFAULT_IGNORE, param_name=None):
    """The prunable tensors of ``model`` selected by ``targets`` and ``ignore``, in ``named_modules()`` order.

    Entries of both lists are module types (``nn.Linear``), class names (``"Linear"``, ``"Conv1D"``,
    ``"MultiheadAttention"``) or name patterns, globs (``"layer1.*.conv?"``) or regular expressions
    (``"re:.*attn.*"``), matched against the module name and the full parameter name.  When ``targets`` holds
    only name patterns, they pick among the modules of :data:`DEFAULT_TARGETS`.  A parameter is selected if
    its module matches a target and neither it nor its module matches an ``ignore`` entry.  Each module
    contributes its :data:`PRUNABLE_PARAMS` (``weight`` for most types), or ``param_name`` if given.
    ``hook_safe`` of each result says whether per-sample kernels may be used for it (see :func:`_hook_safe`).
    """
    targets = _entries(targets, "targets")
    ignore = _entries(ignore, "ignore")
    if not targets:
        raise ValueError("targets is empty: give module types or name patterns to prune")
    types = [entry for entry in targets if _type_entry(entry)]
    patterns = [entry for entry in targets if not _type_entry(entry)]
    if not types:
        types = list(DEFAULT_TARGETS)
    selected = []
    modules = dict(model.named_modules())
    owners = _tensor_owners(model)
    for module_name, module in modules.items():
        if not any(_matches(entry, module, [module_name]) for entry in types):
            continue
        for name in [param_name] if param_name else prunable_names(module):
            if not isinstance(getattr(module, name, None), torch.Tensor):
                continue
            full = f"{module_name}.{name}" if module_name else name
            keys = [module_name, full]
            if patterns and not any(_name_matches(p, keys) for p in patterns):
                continue
            if any(_matches(entry, module, keys) for entry in ignore):
                continue
            pp = PrunableParam(full, module_name, module, name)
            safe = _hook_safe(modules, module_name, pp.parameter, owners)
            selected.append(dataclasses.replace(pp, hook_safe=safe))
    if not selected:
        raise ValueError(f"no prunable parameters selected (targets={targets!r}, ignore={ignore!r})")
    logger.debug("selected %d parameters: %s", len(selected), [pp.name for pp in selected])
    return selected


class ParamLayout:
    """Concatenation of the selected tensors into one vector of length ``p``.

    Parameter ``params[j]`` occupies ``vec[offsets[j][0]:offsets[j][1]]``, flattened row-major.
    """

    def __init__(self, params):
        self.params = list(params)
        if not self.params:
            raise ValueError("params is empty: ParamLayout needs at least one PrunableParam")
        self.offsets = []
        start = 0
        for pp in self.params:
            self.offsets.append((start, start + pp.numel))
            start += pp.numel
        self.p = start

    def slices(self):
        """Iterate over ``(param, slice)`` pairs."""
        for pp, (start, stop) in zip(self.params, self.offsets):
            yield pp, slice(start, stop)

    def gather(self, dtype=np.float64):
        """The current effective weights, flattened and concatenated, as a new numpy array."""
        vec = np.empty(self.p, dtype=dtype)
        with torch.no_grad():
            for pp, sl in self.slices():
                vec[sl] = pp.tensor().detach().reshape(-1).cpu().numpy()
        return vec

    def split(self, vec, dtype=torch.float32):
        """Inverse of :meth:`gather`: new tensors shaped like each parameter, on its device."""
        vec = torch.as_tensor(vec)
        if vec.shape != (self.p,):
            raise ValueError(f"vec must have shape ({self.p},), got {tuple(vec.shape)}")
        return [vec[sl].reshape(pp.shape).to(device=pp.parameter.device, dtype=dtype, copy=True)
                for pp, sl in self.slices()]
