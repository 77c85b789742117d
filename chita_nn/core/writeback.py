"""Writing pruned weights back into a model, saving/loading pruned models, BN re-estimation.

Masks use the standard ``torch.nn.utils.prune`` reparametrisation: the module
holds ``<name>_orig`` (a Parameter) and ``<name>_mask`` (a buffer) and a
forward pre-hook sets ``<name> = <name>_orig * <name>_mask``, so
``prune.remove(module, name)`` makes the pruning permanent.
"""
import logging
import os
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.utils import prune

from .batches import as_tensors
from .data_checks import check_module
from .errors import first_line
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
    exactly if either fails (see :func:`restored_on_failure`)."""
    with restored_on_failure(model, [(p.module, p.param_name) for p in params], "write-back"):
        write_weights(params, values, masks, mask=mask)
        if then is not None:
            then(model)


@contextmanager
def restored_on_failure(model, targets, what):
    """Run the body; on any exception restore ``model`` exactly and re-raise.

    ``targets`` are the ``(module, name)`` pairs the body may reparametrise.  The state dict and each target
    module's parameter order are saved first; on failure, reparametrisations added by the body are removed
    (``prune.remove``), the parameter order restored (``prune.remove`` and a failed ``prune`` call register a
    parameter last) and the saved state loaded back.
    """
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    added = [(module, name) for module, name in targets if not is_reparametrized(module, name)]
    orders = {module: list(module._parameters) for module, _ in targets}
    try:
        yield
    except BaseException:
        for module, name in added:
            if is_reparametrized(module, name):
                prune.remove(module, name)
        for module, order in orders.items():
            for key in order:
                module._parameters[key] = module._parameters.pop(key)
        model.load_state_dict(saved)
        refresh_effective_weights(model)
        logger.warning("%s failed; the model is restored to its state before it", what)
        raise


def _is_prune_mask(key, state):
    """Whether ``state[key]`` is the mask of a prune reparametrisation (a ``<name>_orig`` sits beside it)."""
    return key.endswith("_mask") and key[: -len("_mask")] + "_orig" in state


def save_pruned(model, path, report=None):
    """Save the state dict (with ``*_orig`` / ``*_mask`` entries; prune masks stored as bool, a quarter of the
    size of ``*_orig`` rather than as much again) and the report as a dict."""
    check_module(model)
    state = model.state_dict()
    state = {key: value.bool() if _is_prune_mask(key, state) else value for key, value in state.items()}
    payload = {"state_dict": state, "report": report.to_dict() if report is not None else None}
    torch.save(payload, path)


def _read_pruned(path):
    """The payload ``{"state_dict", "report"}`` of a file of :func:`save_pruned`; ``ValueError`` naming the file
    if it is not a PyTorch file or another kind of PyTorch file (``OSError`` as usual if it cannot be opened)."""
    if not isinstance(path, (str, os.PathLike)) and not hasattr(path, "read"):
        raise TypeError(f"path must be a file path (str or os.PathLike) or a binary file, got {type(path).__name__}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001 -- torch.load fails in many ways on a damaged or foreign file
        raise ValueError(f"{path}: not a PyTorch file ({type(exc).__name__}: {first_line(exc)})") from None
    state = payload.get("state_dict") if isinstance(payload, dict) else None
    if not (isinstance(state, dict) and state
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())):
        raise ValueError(f"{path}: not a file of chita_nn.save_pruned (pruned.pt of 'chita-nn prune'): it holds "
                         f"no 'state_dict' of tensors; a plain state dict loads with "
                         f"model.load_state_dict(torch.load(path))")
    return payload


def _masks_to_install(model, state, path):
    """``{(module, name): mask}`` for the prune masks in ``state``; ``ValueError`` naming the file unless
    :func:`load_pruned` can load ``state`` into ``model``: every key and every shape must fit once those tensors
    are reparametrised (nothing is changed here)."""
    modules = dict(model.named_modules())
    shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    masks = {}
    for key, mask in state.items():
        if not _is_prune_mask(key, state):
            continue
        base = key[: -len("_mask")]
        module_name, _, name = base.rpartition(".")
        module = modules.get(module_name)
        reparametrized = module is not None and is_reparametrized(module, name)
        if module is None or not (reparametrized or base in shapes):
            raise ValueError(f"{path}: holds a mask for {base}, which this model does not have (saved from another "
                             f"architecture?); the model is unchanged")
        masks[(module, name)] = mask
        if not reparametrized:
            shapes[base + "_orig"] = shapes[key] = shapes.pop(base)
    missing, unexpected = sorted(set(shapes) - set(state)), sorted(set(state) - set(shapes))
    if missing or unexpected:
        listed = "; ".join(f"{what} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                           for what, keys in (("missing", missing), ("not in the model", unexpected)) if keys)
        raise ValueError(f"{path}: does not fit the model ({listed}; saved from another architecture?); "
                         f"the model is unchanged")
    for key, value in state.items():
        if tuple(value.shape) != shapes[key]:
            raise ValueError(f"{path}: {key} has shape {tuple(value.shape)} in the file but {shapes[key]} in the "
                             f"model (saved from another architecture?); the model is unchanged")
    return masks


def load_pruned(model, path):
    """Load a file written by :func:`save_pruned` into ``model``; returns the report dict.

    Modules whose saved state has a ``<name>_mask`` are reparametrised first (``prune.custom_from_mask``) so
    that the state dict keys match.  The file and every key and shape are checked before the model is touched
    (``ValueError`` naming the file), and the model is restored exactly if loading fails anyway.
    """
    check_module(model)
    payload = _read_pruned(path)
    state = payload["state_dict"]
    masks = _masks_to_install(model, state, path)
    with restored_on_failure(model, list(masks), f"loading {path}"):
        for (module, name), mask in masks.items():
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
