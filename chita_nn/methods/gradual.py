"""Gradual pruning: CHITA / CHITA++ prune events on a cubic sparsity ramp, with SGD fine-tuning in between.

Events happen at the start of epochs ``0, E, 2E, …, (N−1)E`` with sparsities on the cubic ramp
(Zhu & Gupta) ``s_i = s_T + (s_0 − s_T)(1 − i/(N−1))³``, ``i = 0 … N−1``.  Each event calls
:func:`chita_nn.prune` with the event's recipe (:meth:`GradualConfig.event_recipe`) on the current masked model
(the solve is centred at the current weights), then the momentum buffers are reset.  Between events the model
is fine-tuned with SGD (momentum, weight decay) under a cosine learning rate restarted at each event,
``lr(t) = lr_min + ½(lr − lr_min)(1 + cos(π (t − t_i)/(t_{i+1} − t_i)))`` over the optimizer steps ``t`` of
interval ``i``, with ``lr_min = cycle_min_lr`` between events and ``final_lr`` (about 1e-5) after the last one.

Pruned weights stay exactly zero: masks are ``torch.nn.utils.prune`` reparametrisations
(``weight = weight_orig · weight_mask``), the gradient of ``weight_orig`` is multiplied by the mask before every
step, and ``weight_orig`` is zero on pruned entries (written so by the prune write-back), hence weight decay and
(reset) momentum add nothing there.

A checkpoint (model with masks, optimizer, scheduler, RNG states, history) is written atomically with a checksum
before the first epoch and after every epoch, the last two kept (:mod:`chita_nn.methods.checkpoints`);
:func:`run_gradual` resumes from the newest good one, and mini-batch order and augmentation depend only on
``(seed, epoch)``, so a resumed run reproduces an uninterrupted one.
"""
import json
import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.utils import prune as torch_prune
from tqdm.auto import tqdm

from ..core.batches import as_tensors
from ..core.data_checks import check_classification_data
from ..core.errors import first_line
from ..core.params import select_parameters
from ..core.runtime import evaluate
from ..core.writeback import is_reparametrized, refresh_effective_weights, save_pruned
from .checkpoints import CheckpointError, atomic_torch_save, load_latest, remove_checkpoints, save_checkpoint
from .gradual_config import AUGMENTATIONS, GradualConfig
from .gradual_plot import plot_history
from .oneshot import prune
from .recipes import Recipe, load_recipe, parse_recipe

logger = logging.getLogger(__name__)

__all__ = ["AUGMENTATIONS", "CheckpointError", "CosineCycles", "GradualConfig", "GradualResult", "Recipe",
           "atomic_torch_save", "load_recipe", "parse_recipe", "plot_history", "resume_point", "run_gradual",
           "sparsity_of"]

LOG = "log.jsonl"
PLOT = "progress.png"
FINAL = "final.pt"
_SELECTION_KEYS = ("targets", "ignore")
_CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "rng", "epoch", "history", "config")


class CosineCycles:
    """``LambdaLR`` multiplier at optimizer step ``t``: a cosine from 1 down to ``floor`` within each interval
    ``[boundaries[i], boundaries[i+1])``; ``floor = final_floor`` in the last interval, ``cycle_floor`` before.

    A callable object (not a closure) so that ``LambdaLR.state_dict`` saves it.
    """

    def __init__(self, boundaries, cycle_floor, final_floor):
        self.boundaries = [int(b) for b in boundaries]
        self.cycle_floor = float(cycle_floor)
        self.final_floor = float(final_floor)

    def __call__(self, step):
        last = len(self.boundaries) - 2
        i = min(max(np.searchsorted(self.boundaries, step, side="right") - 1, 0), last)
        start, end = self.boundaries[i], self.boundaries[i + 1]
        floor = self.final_floor if i == last else self.cycle_floor
        fraction = min(max((step - start) / (end - start), 0.0), 1.0)
        return floor + 0.5 * (1.0 - floor) * (1.0 + math.cos(math.pi * fraction))


def _mask_pairs(model, prune_options):
    """``(weight_orig, weight_mask)`` of the selected tensors, reparametrising them (all-ones masks) if needed.

    Reparametrising before the optimizer is built fixes the parameter order, so a resumed run's optimizer state
    lines up with the fresh one's.
    """
    selection = {key: prune_options[key] for key in _SELECTION_KEYS if key in prune_options}
    pairs = []
    for pp in select_parameters(model, **selection):
        if not is_reparametrized(pp.module, pp.param_name):
            torch_prune.identity(pp.module, pp.param_name)
        pairs.append((pp.parameter, getattr(pp.module, pp.param_name + "_mask")))
    return pairs


def sparsity_of(pairs):
    """Fraction of the selected weights that are pruned (mask zero)."""
    total = sum(mask.numel() for _, mask in pairs)
    return 1.0 - sum(int(mask.count_nonzero()) for _, mask in pairs) / total


def _augment(xb, generator):
    """Random crop (zero padding 4) and horizontal flip of NCHW images, drawn from ``generator``."""
    n, _, h, w = xb.shape
    padded = F.pad(xb, (4, 4, 4, 4))
    offsets = torch.randint(0, 9, (n, 2), generator=generator).tolist()
    flips = (torch.rand(n, generator=generator) < 0.5).tolist()
    out = torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offsets)])
    out[flips] = out[flips].flip(-1)
    return out


def _rng_state():
    numpy_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": (numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:])}


def _set_rng_state(state):
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuples(state["python"]))
    name, key, *rest = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), *rest))


def _as_tuples(value):
    """``random.setstate`` wants tuples; a checkpoint round trip may hand back lists."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def _write_log(history, path):
    """Rewrite the JSON-lines log from ``history`` (atomic), so it always matches the checkpoint."""
    tmp = Path(path).with_name(f".{Path(path).name}.tmp{os.getpid()}")
    tmp.write_text("".join(json.dumps(record) + "\n" for record in history))
    os.replace(tmp, path)


@dataclass
class GradualResult:
    """Per-epoch history (the JSON-lines records) and the final test metrics."""

    history: list
    test_accuracy: float
    test_loss: float
    sparsity: float
    resumed_from: int


def _latest_checkpoint(out_dir, config):
    """``(path, state)`` of the newest usable checkpoint in ``out_dir`` (None if none), written by a run of
    ``config``; ``ValueError`` if it was written by another configuration."""
    found = load_latest(out_dir, _CHECKPOINT_KEYS)
    if found is not None and found[1]["config"] != asdict(config):
        raise ValueError(f"{found[0]} was written by a run with another configuration; use another output "
                         f"folder or start over (resume=False; on the command line --no-resume --overwrite)")
    return found


def resume_point(out_dir, config):
    """The epoch a run of ``config`` in ``out_dir`` would resume after (0 for a fresh start), checked without
    loading anything into a model: :class:`CheckpointError` / ``ValueError`` as :func:`run_gradual` would."""
    found = _latest_checkpoint(out_dir, config)
    return 0 if found is None else found[1]["epoch"]


class _Trainer:
    """The state of one run: model with masks, optimizer, scheduler, history."""

    def __init__(self, model, train, test, config, out_dir, progress):
        self.model, self.config, self.progress = model, config, progress
        self.X, self.y = as_tensors(train, "train")
        self.train, self.test = train, test
        self.out = Path(out_dir)
        self.pairs = _mask_pairs(model, config.prune_options)
        self.optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                         weight_decay=config.weight_decay)
        self.steps_per_epoch = -(-len(self.X) // config.batch_size)
        boundaries = [e * self.steps_per_epoch for e in config.event_epochs()] + \
                     [config.epochs * self.steps_per_epoch]
        if boundaries[0] > 0:
            boundaries.insert(0, 0)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, CosineCycles(boundaries, config.cycle_min_lr / config.lr, config.final_lr / config.lr))
        self.history = []
        self.epoch = 0  # next epoch to run
        self.last_lr = config.lr

    def state_dict(self):
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "rng": _rng_state(), "epoch": self.epoch,
                "history": self.history, "config": asdict(self.config)}

    def resume(self):
        """Load the newest usable checkpoint of the output folder; False if there is none."""
        found = _latest_checkpoint(self.out, self.config)
        if found is None:
            return False
        path, state = found
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError) as exc:
            raise CheckpointError(f"{path}: does not fit this model ({first_line(exc)})") from None
        self.scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        self.epoch, self.history = state["epoch"], state["history"]
        logger.info("resumed from %s after epoch %d", path, self.epoch)
        return True

    def prune_event(self, index, sparsity):
        refresh_effective_weights(self.model)  # ``weight = orig · mask`` as a plain tensor, so prune can copy it
        report = prune(self.model, self.train, self.config.event_recipe(index, sparsity), progress=self.progress)
        self.optimizer.state.clear()  # momentum reset: SGD starts a new buffer at the next step
        logger.info("prune event %d: sparsity %.4f in %.1fs%s", index, report.sparsity, report.time_total,
                    f" ({report.fallback_summary})" if report.fallbacks else "")
        return report

    def train_epoch(self):
        """One epoch of masked SGD; mean training loss.  ``FloatingPointError`` on a non-finite loss."""
        config = self.config
        generator = torch.Generator().manual_seed(config.seed * 100003 + self.epoch)
        order = torch.randperm(len(self.X), generator=generator)
        self.model.train()
        loss_sum = 0.0
        for step, batch in enumerate(tqdm(order.split(config.batch_size), desc=f"epoch {self.epoch + 1}",
                                          leave=False, disable=not self.progress)):
            xb, yb = self.X[batch], self.y[batch]
            if config.augment == "crop_flip":
                xb = _augment(xb, generator)
            self.optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(self.model(xb), yb)
            value = loss.item()
            if not math.isfinite(value):
                raise FloatingPointError(f"non-finite training loss ({value}) at epoch {self.epoch + 1}, step "
                                         f"{step + 1} (lr {self.optimizer.param_groups[0]['lr']:.3g})")
            loss.backward()
            with torch.no_grad():
                for orig, mask in self.pairs:
                    if orig.grad is not None:
                        orig.grad.mul_(mask)
            self.optimizer.step()
            self.last_lr = self.optimizer.param_groups[0]["lr"]
            self.scheduler.step()
            loss_sum += value * len(batch)
        return loss_sum / len(self.X)

    def save(self):
        save_checkpoint(self.state_dict(), self.out)
        _write_log(self.history, self.out / LOG)

    def run_epoch(self, events, test):
        """Prune event (if one is due), one epoch of fine-tuning, evaluation, checkpoint; the epoch's record."""
        t0 = time.perf_counter()
        record = {"epoch": self.epoch, "event_sparsity": None, "prune_seconds": None,
                  "test_accuracy_after_prune": None, "magnitude_fallbacks": None}
        if self.epoch in events:
            index, target = events[self.epoch]
            report = self.prune_event(index, target)
            record.update(event_sparsity=target, prune_seconds=report.time_total, magnitude_fallbacks=report.fallbacks,
                          test_accuracy_after_prune=evaluate(self.model, test)["accuracy"])
        try:
            train_loss = self.train_epoch()
        except FloatingPointError as exc:
            self.resume()
            raise FloatingPointError(f"{exc}: run stopped; the model is back at the last good checkpoint "
                                     f"(after epoch {self.epoch}) in {self.out}") from None
        metrics = evaluate(self.model, test)
        record.update(train_loss=train_loss, test_loss=metrics["loss"], test_accuracy=metrics["accuracy"],
                      sparsity=sparsity_of(self.pairs), lr=self.last_lr, seconds=time.perf_counter() - t0)
        self.history.append(record)
        self.epoch += 1
        self.save()
        logger.info("epoch %d/%d: train loss %.4f, test accuracy %.4f, sparsity %.4f, lr %.3g (%.1fs)",
                    self.epoch, self.config.epochs, train_loss, metrics["accuracy"], record["sparsity"],
                    record["lr"], record["seconds"])
        return record


def _seconds_left(record, config, next_epoch):
    """Time the rest of a run will take, from one epoch's record: its training time for every epoch left,
    its prune time for every event left."""
    prune_seconds = record["prune_seconds"] or 0.0
    events_left = sum(1 for epoch in config.event_epochs() if epoch >= next_epoch)
    return (config.epochs - next_epoch) * (record["seconds"] - prune_seconds) + events_left * prune_seconds


def run_gradual(model, train, test, config, out_dir, *, resume=True, plot=True, progress=False):
    """Gradually prune ``model`` (in place) per ``config``; checkpoints, log and plot go to ``out_dir``.

    With ``resume=True`` the run continues after the last completed epoch of the newest usable checkpoint in
    ``out_dir`` (a corrupted newest one is skipped with a warning); ``resume=False`` deletes the checkpoints
    and starts over.  ``train`` and ``test`` are checked against the model first.  A non-finite training loss
    raises ``FloatingPointError`` with the model restored to the last checkpoint.  Returns a
    :class:`GradualResult`; the final model (with masks) is also saved as ``out_dir/final.pt``.
    """
    if not isinstance(config, GradualConfig):
        raise TypeError(f"config must be a GradualConfig, got {type(config).__name__}")
    check_classification_data(model, train, "train")
    check_classification_data(model, test, "test")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    trainer = _Trainer(model, train, test, config, out, progress)
    if not resume:
        remove_checkpoints(out)
    if not (resume and trainer.resume()):
        trainer.save()  # the state before any work: the checkpoint a failure in the first epoch goes back to
    resumed_from = trainer.epoch
    events = dict(zip(config.event_epochs(), enumerate(config.event_sparsities())))
    with tqdm(total=config.epochs, initial=trainer.epoch, desc="gradual", unit="epoch",
              disable=not progress) as bar:
        while trainer.epoch < config.epochs:
            record = trainer.run_epoch(events, test)
            if trainer.epoch == resumed_from + 1 and trainer.epoch < config.epochs:
                logger.info("about %.0f s left (%d epochs)", _seconds_left(record, config, trainer.epoch),
                            config.epochs - trainer.epoch)
            bar.update(1)
    if plot and trainer.history:
        plot_history(trainer.history, out / PLOT)
    save_pruned(model, out / FINAL)
    metrics = evaluate(model, test)
    return GradualResult(trainer.history, metrics["accuracy"], metrics["loss"], sparsity_of(trainer.pairs),
                         resumed_from)
