"""Empirical Fisher: the matrix of mini-batch gradients that defines CHITA's local quadratic model.

Row ``i`` of ``A`` (shape ``(n_rows, p)``) is ``∇_w ℓ_i(w)``, the gradient of the mean loss over the ``m``
samples of mini-batch ``i`` w.r.t. the selected weights (flattened by :class:`ParamLayout`), so that the
empirical Fisher is ``F = AᵀA / n_rows`` and the mean gradient is ``g = Aᵀ1 / n_rows``.

Per-sample gradients are computed without a Python loop over samples: for ``nn.Linear``
``∇_W ℓ_s = δ_sᵀ x_s`` (summed over any extra input dims) and for ``nn.Conv2d``
``∇_W ℓ_s = δ_s · unfold(x_s)ᵀ`` (summed over a row's samples as a grouped convolution's weight
gradient), where ``x_s`` is the layer input and ``δ_s = ∂ℓ/∂(layer output)`` of sample ``s``. Other
parameters use one autograd backward per row.
"""
import functools
import itertools
import logging
import numbers
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

import l0reg

from .batches import Calibration, split, to_device
from .batches import batch_size as samples_in
from .data_checks import dtype_hint
from .errors import first_line
from .losses import as_loss, check_losses
from .grad_rows import row_kernel
from .params import ParamLayout
from .runtime import eval_mode, model_device

logger = logging.getLogger(__name__)

DEFAULT_MEMORY_FRACTION = 0.8


@dataclass(eq=False)
class FisherSample:
    """Rows ``A`` (``(n_rows, p)``) of mini-batch gradients, the mean loss, ``grad = A.mean(axis=0)``."""

    A: np.ndarray
    loss: float
    grad: np.ndarray
    n_samples: int
    samples_per_row: int
    per_sample: bool = True  # False: the loss is a batch mean, each row is one mini-batch's gradient

    @property
    def n_rows(self):
        return self.A.shape[0]


def fisher_nbytes(n_rows, p, dtype=np.float32):
    """Bytes taken by an ``(n_rows, p)`` array of ``dtype``."""
    return int(n_rows) * int(p) * np.dtype(dtype).itemsize


def available_memory_bytes():
    """Currently available memory (``MemAvailable`` of /proc/meminfo, else ``os.sysconf``); None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _positive_int(value, name):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class _Recorder:
    """Hooks that record, per forward pass, the inputs/outputs of hooked modules and the effective-weight
    leaves of reparametrised fallback parameters."""

    def __init__(self, hooked, fallback):
        self.hooked = hooked  # [(param, slice, kernel)]
        self.fallback = fallback  # [(param, slice)]
        self.calls = {}  # module -> [(input, output)]
        self.handles = [module.register_forward_hook(self._record_call)
                        for module in {pp.module: None for pp, *_ in hooked}]
        # Pruning pre-hooks recompute ``module.<name>`` at each forward: put back the tensors found here.
        self.saved_attrs = [(pp.module, pp.param_name, pp.tensor())
                            for pp, *_ in [*hooked, *fallback] if pp.is_reparametrized]
        # One effective-weight leaf per reparametrised fallback parameter for the whole collection, set now
        # (a module whose forward is never called, like MultiheadAttention's out_proj, is read as it is) and
        # again after each pruning pre-hook.
        self.leaves = {}  # fallback param -> leaf tensor (reparametrised ones only)
        for pp, _ in fallback:
            if pp.is_reparametrized:
                mask = getattr(pp.module, pp.param_name + "_mask")
                self.leaves[pp] = (pp.parameter * mask).detach().requires_grad_(True)
                setattr(pp.module, pp.param_name, self.leaves[pp])
                self.handles.append(pp.module.register_forward_pre_hook(self._leaf_hook(pp)))

    def _record_call(self, module, inputs, output):
        # Downstream layers get a copy, so that in-place ops on it cannot change what ``output`` stands for.
        self.calls.setdefault(module, []).append((inputs[0].detach(), output))
        return output.clone()

    def _leaf_hook(self, pp):
        def hook(module, inputs):
            # Runs after the pruning pre-hook that set ``module.<name> = orig * mask``: use the leaf instead.
            setattr(module, pp.param_name, self.leaves[pp])
        return hook

    def fallback_leaves(self, pp):
        return [self.leaves[pp]] if pp.is_reparametrized else [pp.parameter]

    def clear(self):
        self.calls.clear()

    def remove(self):
        for handle in self.handles:
            handle.remove()
        for module, name, value in self.saved_attrs:
            setattr(module, name, value)
        self.clear()


@contextmanager
def _collection_state(model, layout, hooked, fallback):
    """Eval mode, gradients only for the selected parameters, recording hooks; all undone on exit."""
    selected = [pp.parameter for pp in layout.params]
    flags = {param: param.requires_grad for param in [*model.parameters(), *selected]}
    recorder = None
    try:
        with eval_mode(model), torch.enable_grad():
            for param in flags:
                param.requires_grad_(False)
            for param in selected:
                param.requires_grad_(True)
            recorder = _Recorder(hooked, fallback)
            yield recorder
    finally:
        if recorder is not None:
            recorder.remove()
        for param, flag in flags.items():
            param.requires_grad_(flag)


def _write(A, rows, cols, parts):
    """``A[rows, cols] = Σ parts`` (flattened per row), or zeros if there are no parts.

    Torch does the strided copy (and any device transfer or dtype cast): into a Fortran-ordered A it is
    twice as fast as numpy's assignment.
    """
    target = A[rows, cols]
    if parts:
        torch.from_numpy(target).copy_(functools.reduce(torch.add, parts).reshape(target.shape))
    else:
        target[...] = 0


def _grad(loss, inputs, retain_graph):
    """``torch.autograd.grad`` that gives None for the inputs the loss does not depend on."""
    grads = [None] * len(inputs)
    wanted = [i for i, tensor in enumerate(inputs) if tensor.requires_grad]
    if wanted and loss.requires_grad:
        found = torch.autograd.grad(loss, [inputs[i] for i in wanted], retain_graph=retain_graph,
                                    allow_unused=True)
        for i, grad in zip(wanted, found):
            grads[i] = grad
    return grads


def _collect_batch(model, recorder, loss, batch, n_rows, A, row0):
    """Forward one batch of ``n_rows * m`` samples (one row of ``m`` if the loss is a batch mean), write its
    rows of ``A``; return the summed loss."""
    n = samples_in(batch)
    losses = loss.rows(model, batch)
    if not check_losses(losses, n):
        if n_rows != 1:
            raise ValueError("loss_fn returned a scalar for a batch of several rows")
        losses = losses.reshape(1).expand(n)
    row_losses = losses.reshape(n_rows, -1).mean(dim=1)
    rows = slice(row0, row0 + n_rows)
    if recorder.hooked:
        records = [(j, x, out) for j, (pp, _, _) in enumerate(recorder.hooked)
                   for x, out in recorder.calls.get(pp.module, [])]
        deltas = _grad(row_losses.sum(), [out for *_, out in records], retain_graph=bool(recorder.fallback))
        with torch.no_grad():
            parts = [[] for _ in recorder.hooked]
            for (j, x, _), delta in zip(records, deltas):
                if delta is not None:
                    pp, _, kernel = recorder.hooked[j]
                    parts[j].append(kernel(pp.module, x, delta, n_rows))
            for (_, sl, _), found in zip(recorder.hooked, parts):
                _write(A, rows, sl, found)
    if recorder.fallback:
        leaves = [recorder.fallback_leaves(pp) for pp, _ in recorder.fallback]
        flat = [leaf for group in leaves for leaf in group]
        for r in range(n_rows):
            grads = iter(_grad(row_losses[r], flat, retain_graph=r < n_rows - 1))
            for (pp, sl), group in zip(recorder.fallback, leaves):
                _write(A, row0 + r, sl, [g for g in itertools.islice(grads, len(group)) if g is not None])
    recorder.clear()  # frees this batch's graph before the next forward
    return losses.detach().double().sum().item()


@contextmanager
def _naming_the_form(loss):
    """Add to a ``ValueError`` how the user's loss function was called (:attr:`Loss.assumed`), if it was one."""
    try:
        yield
    except ValueError as exc:
        if loss.assumed is None:
            raise
        raise ValueError(f"{first_line(exc)} (loss_fn was called as {loss.assumed})") from exc


def _per_sample(model, loss, calibration, m):
    """Whether ``loss`` gives per-sample losses (True) or one batch mean (False), from one batch of ``m``."""
    with torch.no_grad(), _naming_the_form(loss):
        batch = to_device(calibration.first(m), model_device(model))
        try:
            losses = loss.rows(model, batch)
        except (RuntimeError, TypeError, IndexError, KeyError, AttributeError) as exc:
            raise ValueError(f"data: the model (or loss_fn) cannot run on a batch of data: {type(exc).__name__}: "
                             f"{first_line(exc)}{dtype_hint(model, split(batch)[0], exc)}") from exc
        return check_losses(losses, samples_in(batch))


def empirical_fisher(model, params, data, *, n_rows, samples_per_row=1, loss_fn=None, batch_size=256,
                     dtype=np.float32, order="F", out=None, max_bytes=None, seed=None, progress=False):
    """Gradient rows ``A`` (``(n_rows, p)``) of the mean loss over ``samples_per_row`` samples each.

    Parameters
    ----------
    model : nn.Module, put in eval mode while collecting (its modes, ``requires_grad`` flags and ``.grad``
        are left as they were, also on error).
    params : list of :class:`PrunableParam` (or a :class:`ParamLayout`) giving the columns of ``A``.
    data : ``(X, y)``, a TensorDataset, a DataLoader, an iterable of batches or a :class:`Calibration`; the
        first ``n_rows * samples_per_row`` samples are used, or a random choice of rows if ``seed`` is given
        (a row's samples come from one batch).
    loss_fn : see :func:`chita_nn.core.losses.as_loss`: ``(output, target)`` or ``(model, batch)``, per-sample
        or a batch mean (then each row is one forward of ``samples_per_row`` samples); default cross-entropy.
    batch_size : samples per forward pass (rounded down to a multiple of ``samples_per_row``, at least one row).
    dtype, order : of ``A``; ``out`` may be a preallocated ``(n_rows, p)`` array of ``dtype`` (e.g. a memmap).
    max_bytes : refuse (``MemoryError``, before allocating) if ``A`` needs more bytes; default 80% of the
        available memory; not used when ``out`` is given.
    """
    layout = params if isinstance(params, ParamLayout) else ParamLayout(params)
    n_rows = _positive_int(n_rows, "n_rows")
    m = _positive_int(samples_per_row, "samples_per_row")
    batch_size = _positive_int(batch_size, "batch_size")
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
    if order not in ("C", "F"):
        raise ValueError(f"order must be 'C' or 'F', got {order!r}")
    calibration = data if isinstance(data, Calibration) else Calibration(data)
    n_samples = n_rows * m
    index = calibration.rows(n_rows, m, seed)

    shape = (n_rows, layout.p)
    if out is not None:
        if not isinstance(out, np.ndarray) or out.shape != shape or out.dtype != dtype:
            got = f"{type(out).__name__} {getattr(out, 'shape', '')} {getattr(out, 'dtype', '')}"
            raise ValueError(f"out must be a numpy array of shape {shape} and dtype {dtype}, got {got}")
        if not out.flags.writeable:
            raise ValueError("out is read-only")
        A = out
    else:
        nbytes = fisher_nbytes(n_rows, layout.p, dtype)
        if max_bytes is None:
            available = available_memory_bytes()
            max_bytes = None if available is None else int(DEFAULT_MEMORY_FRACTION * available)
        if max_bytes is not None and nbytes > max_bytes:
            raise MemoryError(
                f"the Fisher matrix A ({n_rows} rows x {layout.p} parameters, {dtype}) needs {nbytes:,} bytes "
                f"but only {max_bytes:,} bytes are available (max_bytes); use fewer rows (n_rows), "
                f"dtype=np.float16, or block mode (fewer parameters at a time, or out=np.memmap(...))")
        A = np.empty(shape, dtype=dtype, order=order)

    hooked, fallback = [], []
    for pp, sl in layout.slices():
        kernel = row_kernel(pp)
        if kernel is None:
            fallback.append((pp, sl))
        else:
            hooked.append((pp, sl, kernel))
    if fallback:
        logger.info("per-row autograd fallback (slower) for %s", [pp.name for pp, _ in fallback])

    device = model_device(model)
    loss = as_loss(loss_fn).bind(model)
    loss_sum = 0.0
    start = time.perf_counter()
    with _collection_state(model, layout, hooked, fallback) as recorder, \
            tqdm(total=n_rows, desc="empirical Fisher", unit="row", disable=not progress) as bar:
        per_sample = _per_sample(model, loss, calibration, m)
        recorder.clear()
        rows_per_batch = max(1, batch_size // m) if per_sample else 1
        row0 = 0
        for batch in calibration.samples(index, rows_per_batch * m):
            rows = samples_in(batch) // m
            loss_sum += _collect_batch(model, recorder, loss, to_device(batch, device), rows, A, row0)
            row0 += rows
            bar.update(rows)
    logger.info("empirical Fisher %d x %d (%d samples/row) in %.2f s", n_rows, layout.p, m,
                time.perf_counter() - start)
    return FisherSample(A=A, loss=loss_sum / n_samples, grad=l0reg.column_means(A),
                        n_samples=n_samples, samples_per_row=m, per_sample=per_sample)
