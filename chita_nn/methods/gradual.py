"""Gradual pruning: CHITA / CHITA++ prune events on a cubic sparsity ramp, with SGD fine-tuning in between.

Events happen at the start of epochs ``0, E, 2E, …, (N−1)E`` with sparsities on the cubic ramp
(Zhu & Gupta) ``s_i = s_T + (s_0 − s_T)(1 − i/(N−1))³``, ``i = 0 … N−1``.  Each event calls
:func:`chita_nn.methods.oneshot.prune` on the current masked model (the solve is centred at the current weights), then
the momentum buffers are reset.  Between events the model is fine-tuned with SGD (momentum, weight decay) under
a cosine learning rate restarted at each event,
``lr(t) = lr_min + ½(lr − lr_min)(1 + cos(π (t − t_i)/(t_{i+1} − t_i)))`` over the optimizer steps ``t`` of
interval ``i``, with ``lr_min = cycle_min_lr`` between events and ``final_lr`` (about 1e-5) after the last one.

Pruned weights stay exactly zero: masks are ``torch.nn.utils.prune`` reparametrisations
(``weight = weight_orig · weight_mask``), the gradient of ``weight_orig`` is multiplied by the mask before every
step, and ``weight_orig`` is zero on pruned entries (written so by the prune write-back), hence weight decay and
(reset) momentum add nothing there.

A checkpoint (model with masks, optimizer, scheduler, RNG states, history) is written atomically after every
epoch; :func:`run_gradual` resumes from it, and mini-batch order and augmentation depend only on
``(seed, epoch)``, so a resumed run reproduces an uninterrupted one.
"""
import json
import logging
import math
import numbers
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.utils import prune as torch_prune
from tqdm.auto import tqdm

from ..core.batches import as_tensors
from ..core.params import select_parameters
from ..core.runtime import evaluate
from ..core.writeback import is_reparametrized, refresh_effective_weights, save_pruned
from .oneshot import METHODS, prune
from .schedules import sparsity_schedule

logger = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
LOG = "log.jsonl"
PLOT = "progress.png"
FINAL = "final.pt"
AUGMENTATIONS = ("none", "crop_flip")
_SELECTION_KEYS = ("module_types", "include", "exclude")


@dataclass
class GradualConfig:
    """A gradual pruning run (see the module docstring for the schedules).

    ``prune_options`` are passed to :func:`chita_nn.methods.oneshot.prune` at every event (``n_rows``, ``lam``,
    ``n_stages``, ``block_size``, ...); ``seed + i`` is its seed at event ``i``.
    """

    target_sparsity: float
    initial_sparsity: float = 0.5
    epochs: int = 10
    prune_every: int = 2
    n_events: int = None
    method: str = "chita++"
    prune_options: dict = field(default_factory=dict)
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-5
    cycle_min_lr: float = 1e-4
    final_lr: float = 1e-5
    batch_size: int = 128
    augment: str = "none"
    seed: int = 0

    def __post_init__(self):
        if self.n_events is None:
            self.n_events = max(1, self.epochs // self.prune_every)
        for name in ("epochs", "prune_every", "n_events", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0.0 <= self.initial_sparsity <= self.target_sparsity < 1.0:
            raise ValueError(f"need 0 <= initial_sparsity <= target_sparsity < 1, got "
                             f"{self.initial_sparsity!r} and {self.target_sparsity!r}")
        if (self.n_events - 1) * self.prune_every >= self.epochs:
            raise ValueError(f"the last of n_events={self.n_events} events (epoch "
                             f"{(self.n_events - 1) * self.prune_every}) must come before epochs={self.epochs}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {self.augment!r}")
        if not 0.0 < self.final_lr <= self.lr or not 0.0 <= self.cycle_min_lr <= self.lr:
            raise ValueError(f"need 0 < final_lr <= lr and 0 <= cycle_min_lr <= lr, got lr={self.lr}, "
                             f"cycle_min_lr={self.cycle_min_lr}, final_lr={self.final_lr}")

    def event_epochs(self):
        """Epochs at whose start a prune event happens."""
        return [i * self.prune_every for i in range(self.n_events)]

    def event_sparsities(self):
        """Cubic ramp from ``initial_sparsity`` to ``target_sparsity`` over the events."""
        if self.n_events == 1 or self.initial_sparsity == self.target_sparsity:
            return [self.initial_sparsity] * (self.n_events - 1) + [self.target_sparsity]
        return [self.initial_sparsity] + sparsity_schedule(self.target_sparsity, self.n_events - 1, "cubic",
                                                           start=self.initial_sparsity)


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


def atomic_torch_save(obj, path):
    """``torch.save`` to a temporary file in the same folder, fsync, then ``os.replace`` onto ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _write_log(history, path):
    """Rewrite the JSON-lines log from ``history`` (atomic), so it always matches the checkpoint."""
    tmp = Path(path).with_name(f".{Path(path).name}.tmp{os.getpid()}")
    tmp.write_text("".join(json.dumps(record) + "\n" for record in history))
    os.replace(tmp, path)


def plot_history(history, path):
    """Test accuracy, sparsity and learning rate per epoch, saved as an image (matplotlib, Agg backend)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] + 1 for r in history]
    fig, axes = plt.subplots(3, 1, figsize=(6, 7), sharex=True)
    axes[0].plot(epochs, [100 * r["test_accuracy"] for r in history], "o-", label="test")
    axes[0].plot(epochs, [100 * r["test_accuracy_after_prune"] if r["test_accuracy_after_prune"] is not None
                          else np.nan for r in history], "x", label="right after prune event")
    axes[0].set_ylabel("accuracy (%)")
    axes[0].legend()
    axes[1].plot(epochs, [r["sparsity"] for r in history], "o-")
    axes[1].set_ylabel("sparsity")
    axes[2].semilogy(epochs, [r["lr"] for r in history], "o-")
    axes[2].set_ylabel("lr (last step of epoch)")
    axes[2].set_xlabel("epoch")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@dataclass
class GradualResult:
    """Per-epoch history (the JSON-lines records) and the final test metrics."""

    history: list
    test_accuracy: float
    test_loss: float
    sparsity: float
    resumed_from: int


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

    def load(self, path):
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state["config"] != asdict(self.config):
            raise ValueError(f"{path} was written by a run with another configuration; use a fresh output "
                             f"folder or resume=False")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        self.epoch, self.history = state["epoch"], state["history"]
        logger.info("resumed from %s after epoch %d", path, self.epoch)

    def prune_event(self, index, sparsity):
        options = dict(self.config.prune_options)
        refresh_effective_weights(self.model)  # ``weight = orig · mask`` as a plain tensor, so prune can copy it
        report = prune(self.model, self.train, sparsity, method=self.config.method,
                       seed=self.config.seed + index, progress=self.progress, **options)
        self.optimizer.state.clear()  # momentum reset: SGD starts a new buffer at the next step
        logger.info("prune event %d: sparsity %.4f in %.1fs", index, report.sparsity, report.time_total)
        return report

    def train_epoch(self):
        config = self.config
        generator = torch.Generator().manual_seed(config.seed * 100003 + self.epoch)
        order = torch.randperm(len(self.X), generator=generator)
        self.model.train()
        loss_sum = 0.0
        for batch in tqdm(order.split(config.batch_size), desc=f"epoch {self.epoch + 1}", leave=False,
                          disable=not self.progress):
            xb, yb = self.X[batch], self.y[batch]
            if config.augment == "crop_flip":
                xb = _augment(xb, generator)
            self.optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(self.model(xb), yb)
            loss.backward()
            with torch.no_grad():
                for orig, mask in self.pairs:
                    if orig.grad is not None:
                        orig.grad.mul_(mask)
            self.optimizer.step()
            self.last_lr = self.optimizer.param_groups[0]["lr"]
            self.scheduler.step()
            loss_sum += loss.item() * len(batch)
        return loss_sum / len(self.X)

    def save(self):
        atomic_torch_save(self.state_dict(), self.out / CHECKPOINT)
        _write_log(self.history, self.out / LOG)


def run_gradual(model, train, test, config, out_dir, *, resume=True, plot=True, progress=False):
    """Gradually prune ``model`` (in place) per ``config``; checkpoints, log and plot go to ``out_dir``.

    With ``resume=True`` and a checkpoint in ``out_dir``, the run continues after its last completed epoch.
    Returns a :class:`GradualResult`; the final model (with masks) is also saved as ``out_dir/final.pt``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    trainer = _Trainer(model, train, test, config, out, progress)
    checkpoint = out / CHECKPOINT
    if resume and checkpoint.exists():
        trainer.load(checkpoint)
    resumed_from = trainer.epoch
    events = dict(zip(config.event_epochs(), enumerate(config.event_sparsities())))
    while trainer.epoch < config.epochs:
        t0 = time.perf_counter()
        record = {"epoch": trainer.epoch, "event_sparsity": None, "prune_seconds": None,
                  "test_accuracy_after_prune": None}
        if trainer.epoch in events:
            index, target = events[trainer.epoch]
            report = trainer.prune_event(index, target)
            record.update(event_sparsity=target, prune_seconds=report.time_total,
                          test_accuracy_after_prune=evaluate(model, test)["accuracy"])
        train_loss = trainer.train_epoch()
        metrics = evaluate(model, test)
        record.update(train_loss=train_loss, test_loss=metrics["loss"], test_accuracy=metrics["accuracy"],
                      sparsity=sparsity_of(trainer.pairs), lr=trainer.last_lr,
                      seconds=time.perf_counter() - t0)
        trainer.history.append(record)
        trainer.epoch += 1
        trainer.save()
        logger.info("epoch %d/%d: train loss %.4f, test accuracy %.4f, sparsity %.4f, lr %.3g (%.1fs)",
                    trainer.epoch, config.epochs, train_loss, metrics["accuracy"], record["sparsity"],
                    record["lr"], record["seconds"])
    if plot and trainer.history:
        plot_history(trainer.history, out / PLOT)
    save_pruned(model, out / FINAL)
    metrics = evaluate(model, test)
    return GradualResult(trainer.history, metrics["accuracy"], metrics["loss"], sparsity_of(trainer.pairs),
                         resumed_from)


# ------------------------------------------------------------------------------------------------ recipes

@dataclass
class Recipe:
    """A TOML recipe: which model and data (``[model]``, ``[data]``), the run (``[schedule]``,
    ``[optimizer]``, ``[prune]``), and where it writes (``out``)."""

    model: str
    config: GradualConfig
    out: str
    data_dir: str = None
    train_limit: int = None
    test_limit: int = None


_RECIPE_TABLES = {
    "schedule": ("target_sparsity", "initial_sparsity", "epochs", "prune_every", "n_events"),
    "optimizer": ("lr", "momentum", "weight_decay", "cycle_min_lr", "final_lr", "batch_size", "augment"),
}


def _take(table, name, allowed):
    unknown = set(table) - set(allowed)
    if unknown:
        raise ValueError(f"recipe [{name}]: unknown keys {sorted(unknown)} (allowed: {sorted(allowed)})")
    return dict(table)


def parse_recipe(text):
    """Parse a TOML recipe (see ``recipes/*.toml``) into a :class:`Recipe`."""
    import tomllib

    raw = tomllib.loads(text)
    _take(raw, "top level", ("model", "data", "schedule", "optimizer", "prune", "seed", "out"))
    model = _take(raw.get("model", {}), "model", ("name",))
    data = _take(raw.get("data", {}), "data", ("dir", "train_limit", "test_limit"))
    if "name" not in model:
        raise ValueError("recipe: [model] name is required")
    kwargs = {}
    for table, keys in _RECIPE_TABLES.items():
        kwargs.update(_take(raw.get(table, {}), table, keys))
    prune_options = dict(raw.get("prune", {}))
    method = prune_options.pop("method", "chita++")
    config = GradualConfig(method=method, prune_options=prune_options, seed=raw.get("seed", 0), **kwargs)
    return Recipe(model=model["name"], config=config, out=raw.get("out", f"outputs/gradual/{model['name']}"),
                  data_dir=data.get("dir"), train_limit=data.get("train_limit"), test_limit=data.get("test_limit"))


def load_recipe(path):
    """:func:`parse_recipe` of a file."""
    return parse_recipe(Path(path).read_text())

