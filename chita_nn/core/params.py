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


def _direct_parameters(module):
    """``(attribute name, nn.Parameter)`` of the tensors held by ``module`` itself, by their effective name:
    ``weight`` for a ``torch.nn.utils.prune`` reparametrised ``weight_orig`` (with its ``weight_mask``)."""
    for name, param in module._parameters.items():
        if param is None:
            continue
        if name.endswith("_orig") and hasattr(module, name[:-5] + "_mask"):
            name = name[:-5]
        yield name, param


def _literal(pattern):
    """Whether ``pattern`` is a plain name (a glob without wildcards): the only kind that picks a 1-d tensor."""
    return not pattern.startswith("re:") and not any(c in pattern for c in "*?[")


def _named_by(patterns, module_name, full, param):
    """Whether a name pattern selects ``param`` (known as ``full``) as a parameter of its own.

    It must match ``full`` but not the module name (that is a module pattern: the module's prunable
    tensors, among the target types); a 1-d tensor (bias, norm scale) only by its exact name.
    """
    return any(_name_matches(pattern, [full]) and not _name_matches(pattern, [module_name])
               and (param.dim() >= 2 or (param.dim() == 1 and _literal(pattern))) for pattern in patterns)


def _type_names(types):
    return [entry if isinstance(entry, str) else entry.__name__ for entry in types]


def _unmatched(pattern, modules, module_types):
    """Why the target ``pattern`` selected nothing, for the error message."""
    found = [name for name in modules if name and _name_matches(pattern, [name])]
    named = [(full, param) for name, module in modules.items() if not _name_matches(pattern, [name])
             for full, param in ((f"{name}.{attr}" if name else attr, param)
                                 for attr, param in _direct_parameters(module)) if _name_matches(pattern, [full])]
    if named and all(param.dim() < 2 for _, param in named):
        return (f"{pattern!r} matched only parameters of fewer than 2 dims ({named[0][0]!r}, ...): name each "
                f"exactly to prune it")
    if named:
        return f"{pattern!r} matched only ignored parameters ({named[0][0]!r}, ...)"
    if found:
        kinds = sorted({type(modules[name]).__name__ for name in found})
        return (f"{pattern!r} matched modules ({found[0]!r}, ...) of type {kinds}, none of the target types "
                f"{_type_names(module_types)} with a tensor left after ignore: add the type to targets or "
                f"name its parameters ('{found[0]}.<parameter>')")
    return f"{pattern!r} matched no module or parameter name"


def select_parameters(model, *, targets=DEFAULT_TARGETS, ignore=DEFAULT_IGNORE, param_name=None):
    """The prunable tensors of ``model`` selected by ``targets`` and ``ignore``, in ``named_modules()`` order.

    Entries of both lists are module types (``nn.Linear``), class names (``"Linear"``, ``"Conv1D"``,
    ``"MultiheadAttention"``) or name patterns, globs (``"layer1.*.conv?"``) or regular expressions
    (``"re:.*attn.*"``), matched against the module name and the full parameter name:

    - a module of a target type (:data:`DEFAULT_TARGETS` when ``targets`` holds only name patterns) whose
      module or parameter name matches a pattern (or any, without patterns) contributes its
      :data:`PRUNABLE_PARAMS` (``weight`` for most types), or ``param_name`` if given;
    - a pattern matching the full name of an ``nn.Parameter`` (``"rnn.weight_ih_l0"``,
      ``"re:.*\\.in_proj_weight"``, a custom module's ``"block.kernel"``) but not its module's name selects
      that tensor on any module (of a target type, if ``targets`` names types).  Tensors of 2 or more dims
      only, except with a pattern that is the exact name (``"fc.bias"``): ``"*.weight"`` picks no norm scale
      and ``"fc.*"`` no bias.

    A tensor is selected once (tied weights: under its first name) unless it or its module matches an
    ``ignore`` entry.  ``hook_safe`` of each result says whether per-sample kernels may be used for it
    (see :func:`_hook_safe`).  A target pattern that selects nothing is named in the error.
    """
    targets = _entries(targets, "targets")
    ignore = _entries(ignore, "ignore")
    if not targets:
        raise ValueError("targets is empty: give module types or name patterns to prune")
    types = [entry for entry in targets if _type_entry(entry)]
    patterns = [entry for entry in targets if not _type_entry(entry)]
    module_types = types or list(DEFAULT_TARGETS)
    selected, seen, used = [], set(), set()
    modules = dict(model.named_modules())
    owners = _tensor_owners(model)
    for module_name, module in modules.items():
        of_type = any(_matches(entry, module, [module_name]) for entry in module_types)
        names = {}
        if of_type:
            for name in [param_name] if param_name else prunable_names(module):
                if isinstance(getattr(module, name, None), torch.Tensor):
                    names[name] = None
        if patterns and (not types or any(_matches(entry, module, [module_name]) for entry in types)):
            for name, param in _direct_parameters(module):
                full = f"{module_name}.{name}" if module_name else name
                if _named_by(patterns, module_name, full, param):
                    names[name] = None
        for name in names:
            full = f"{module_name}.{name}" if module_name else name
            keys = [module_name, full]
            hits = [p for p in patterns if _name_matches(p, keys)]
            if patterns and not hits:
                continue
            if any(_matches(entry, module, keys) for entry in ignore):
                continue
            pp = PrunableParam(full, module_name, module, name)
            if id(pp.parameter) in seen:
                logger.debug("%s is tied to a tensor already selected: skipped", full)
                continue
            seen.add(id(pp.parameter))
            used.update(hits)
            safe = _hook_safe(modules, module_name, pp.parameter, owners)
            selected.append(dataclasses.replace(pp, hook_safe=safe))
    notes = [_unmatched(pattern, modules, module_types) for pattern in patterns if pattern not in used]
    if not selected:
        raise ValueError(f"no prunable parameters selected (targets={targets!r}, ignore={ignore!r})"
                         + "".join(f"; {note}" for note in notes))
    for note in notes:
        logger.warning("targets: %s", note)
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
