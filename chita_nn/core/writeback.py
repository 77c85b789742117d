"""Writing pruned weights back into a model, saving/loading pruned models, BN re-estimation.

Masks use the standard ``torch.nn.utils.prune`` reparametrisation: the module
holds ``<name>_orig`` (a Parameter) and ``<name>_mask`` (a buffer) and a
forward pre-hook sets ``<name> = <name>_orig * <name>_mask``, so
``prune.remove(module, name)`` makes the pruning permanent.
"""
import logging

import torch
from torch import nn
from torch.nn.utils import prune

from .batches import as_tensors
from .runtime import model_device

logger = logging.getLogger(__name__)

_BN_TYPES = (nn.modules.batchnorm._BatchNorm,)


def is_reparametrized(module, name="weight"):
    """Whether ``module.<name>`` is held as ``<name>_orig * <name>_mask`` by a prune hook."""
    return any(isinstance(h, prune.BasePruningMethod) and h._tensor_name == name
               for h in module._forward_pre_hooks.values())


def strip_reparametrization(model):
    """Make every prune reparametrisation of ``model`` permanent (``prune.remove``) in place."""
    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(module, hook._tensor_name)
    return model


@torch.no_grad()
def refresh_effective_weights(model):
    """Recompute ``<name> = <name>_orig * <name>_mask`` for every reparametrised module."""
    for module in model.modules():
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, prune.BasePruningMethod):
                setattr(module, hook._tensor_name, hook.apply_mask(module))


def write_weights(params, values, masks, *, mask=True):
    """Write ``values * masks`` into each parameter of ``params``.

    ``values`` and ``masks`` are lists of tensors shaped like the parameters.
    A module already reparametrised has its ``_orig`` and ``_mask`` updated in
    place (no second reparametrisation is stacked); otherwise ``mask=True``
    installs ``prune.custom_from_mask`` and ``mask=False`` writes the zeros
    into the plain weight.
    """
    for param, value, keep in zip(params, values, masks):
        module, name = param.module, param.param_name
        with torch.no_grad():
            if is_reparametrized(module, name):
                orig, buf = getattr(module, name + "_orig"), getattr(module, name + "_mask")
                buf.copy_(keep.to(buf))
                orig.copy_(value.to(orig) * buf)
                setattr(module, name, orig * buf)
            else:
                weight = getattr(module, name)
                weight.copy_(value.to(weight) * keep.to(weight))
                if mask:
                    prune.custom_from_mask(module, name, keep.to(device=weight.device, dtype=weight.dtype))


def write_weights_atomic(model, params, values, masks, *, mask=True, then=None):
    """:func:`write_weights` followed by ``then(model)`` (e.g. BatchNorm re-estimation), restoring ``model``
    exactly if either fails.

    The state dict and the set of reparametrised modules are saved first; on
    any exception, reparametrisations added by this call are removed, the
    saved state is loaded back, and the exception is re-raised.
    """
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    before = {id(p.module): (is_reparametrized(p.module, p.param_name), list(p.module._parameters))
              for p in params}
    try:
        write_weights(params, values, masks, mask=mask)
        if then is not None:
            then(model)
    except BaseException:
        for p in params:
            was_reparametrized, order = before[id(p.module)]
            if not was_reparametrized and is_reparametrized(p.module, p.param_name):
                prune.remove(p.module, p.param_name)
                for key in order:  # prune.remove re-registers the parameter last: restore the order
                    p.module._parameters[key] = p.module._parameters.pop(key)
        model.load_state_dict(saved)
        refresh_effective_weights(model)
        logger.warning("write-back failed; model restored to its state before pruning")
        raise


def _is_prune_mask(key, state):
    """Whether ``state[key]`` is the mask of a prune reparametrisation (a ``<name>_orig`` sits beside it)."""
    return key.endswith("_mask") and key[: -len("_mask")] + "_orig" in state


def save_pruned(model, path, report=None):
    """Save the state dict (with ``*_orig`` / ``*_mask`` entries; prune masks stored as bool, a quarter of the
    size of ``*_orig`` rather than as much again) and the report as a dict."""
    state = model.state_dict()
    state = {key: value.bool() if _is_prune_mask(key, state) else value for key, value in state.items()}
    payload = {"state_dict": state, "report": report.to_dict() if report is not None else None}
    torch.save(payload, path)


def load_pruned(model, path):
    """Load a file written by :func:`save_pruned` into ``model``; returns the report dict.

    Modules whose saved state has a ``<name>_mask`` are reparametrised first
    (``prune.custom_from_mask``) so that the state dict keys match.
    """
    payload = torch.load(path, map_location="cpu", weights_only=True)
    state = payload["state_dict"]
    modules = dict(model.named_modules())
    for key, mask in state.items():
        if not key.endswith("_mask"):
            continue
        module_name, _, attr = key.rpartition(".")
        name = attr[: -len("_mask")]
        module = modules.get(module_name)
        if module is None:
            raise KeyError(f"{path}: module {module_name!r} of saved mask {key!r} is not in the model")
        if not is_reparametrized(module, name):
            weight = getattr(module, name)
            prune.custom_from_mask(module, name, mask.to(device=weight.device, dtype=weight.dtype))
    model.load_state_dict(state)
    refresh_effective_weights(model)
    return payload.get("report")


@torch.no_grad()
def recompute_batchnorm(model, data, *, batch_size=500, n_batches=None, seed=0):
    """Re-estimate BatchNorm running statistics on ``data`` (a TensorDataset or ``(X, y)``; inputs only).

    Running stats are reset and accumulated as a cumulative average
    (``momentum=None``) over ``n_batches`` shuffled batches (all by default),
    with only the BatchNorm modules in train mode; every module's mode and
    momentum are restored afterwards.  Returns the number of samples used.
    ``data`` should look like the training inputs (augmentation included), see :func:`chita_nn.prune`.
    """
    bns = [m for m in model.modules() if isinstance(m, _BN_TYPES) and m.track_running_stats]
    if not bns:
        return 0
    X, _ = as_tensors(data, "data")
    device = model_device(model)
    modes = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for m in bns}
    order = torch.randperm(len(X), generator=torch.Generator().manual_seed(seed))
    seen = 0
    try:
        model.eval()
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        for i, batch in enumerate(order.split(batch_size)):
            if n_batches is not None and i >= n_batches:
                break
            model(X[batch].to(device))
            seen += len(batch)
    finally:
        for m, mode in modes.items():
            m.train(mode)
        for m, momentum in momenta.items():
            m.momentum = momentum
    logger.debug("recomputed BatchNorm statistics of %d modules on %d samples", len(bns), seen)
    return seen
