"""Selection of the prunable weight tensors of a model and their layout as one flat vector."""
import fnmatch
import logging
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


def _patterns(patterns, name):
    if patterns is None:
        return None
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    if not all(isinstance(pattern, str) for pattern in patterns):
        raise TypeError(f"{name} must be a list of fnmatch pattern strings, got {patterns!r}")
    return patterns


def _matches(name, patterns):
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def select_parameters(model, *, module_types=(nn.Linear, nn.Conv2d), include=None, exclude=None,
                      param_name="weight"):
    """The ``param_name`` tensors of the submodules of the given types, in ``model.named_modules()`` order.

    ``include`` / ``exclude``: fnmatch patterns on the full parameter name (e.g. ``"layer1.*.conv?.weight"``);
    a parameter is kept if it matches some ``include`` pattern (when given) and no ``exclude`` pattern.
    """
    if not (isinstance(module_types, tuple) and module_types
            and all(isinstance(t, type) and issubclass(t, nn.Module) for t in module_types)):
        raise ValueError(f"module_types must be a non-empty tuple of nn.Module subclasses, got {module_types!r}")
    include = _patterns(include, "include")
    exclude = _patterns(exclude, "exclude")
    selected = []
    for module_name, module in model.named_modules():
        if not isinstance(module, module_types) or not isinstance(getattr(module, param_name, None), torch.Tensor):
            continue
        name = f"{module_name}.{param_name}" if module_name else param_name
        if include is not None and not _matches(name, include):
            continue
        if exclude is not None and _matches(name, exclude):
            continue
        selected.append(PrunableParam(name, module_name, module, param_name))
    if not selected:
        raise ValueError(
            f"no prunable parameters selected (module_types={[t.__name__ for t in module_types]}, "
            f"param_name={param_name!r}, include={include!r}, exclude={exclude!r})"
        )
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
