"""The configuration of a gradual pruning run and its validation (see :mod:`chita_nn.methods.gradual`)."""
from dataclasses import dataclass, field

from ..core.patterns import Pattern
from ..core.rules import COUNT, FRACTION, NON_NEGATIVE, POSITIVE, POSITIVE_INT, Rule
from .oneshot import METHODS
from .recipe_types import option_names, recipe_class
from .schedules import sparsity_schedule

AUGMENTATIONS = ("none", "crop_flip")
#: Recipe options that a gradual run sets itself, so ``prune_options`` may not hold them.
RUN_OWNED_OPTIONS = ("sparsity", "seed", "mask")

#: The rule of every scalar field of :class:`GradualConfig`.
FIELD_RULES = {
    "target_sparsity": FRACTION,
    "initial_sparsity": FRACTION,
    "epochs": POSITIVE_INT,
    "prune_every": POSITIVE_INT,
    "n_events": POSITIVE_INT,
    "method": Rule("choice", choices=METHODS),
    "lr": POSITIVE,
    "momentum": FRACTION,
    "weight_decay": NON_NEGATIVE,
    "cycle_min_lr": NON_NEGATIVE,
    "final_lr": POSITIVE,
    "batch_size": POSITIVE_INT,
    "augment": Rule("choice", choices=AUGMENTATIONS),
    "seed": COUNT,
}


@dataclass
class GradualConfig:
    """A gradual pruning run (see :mod:`chita_nn.methods.gradual` for the schedules).

    ``method`` and ``prune_options`` make the recipe of every prune event (:meth:`event_recipe`: ``CHITA(**
    prune_options)`` for ``method="chita"``, with ``n_rows``, ``lam``, ``block_size``, ...), checked when the
    configuration is built; ``seed + i`` is its seed at event ``i``.
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
        if self.n_events is None and POSITIVE_INT.accepts(self.epochs) and POSITIVE_INT.accepts(self.prune_every):
            self.n_events = max(1, self.epochs // self.prune_every)
        for name, rule in FIELD_RULES.items():
            rule.check(name, getattr(self, name))
        self._check_prune_options()
        if self.initial_sparsity > self.target_sparsity:
            raise ValueError(f"need initial_sparsity <= target_sparsity, got {self.initial_sparsity!r} and "
                             f"{self.target_sparsity!r}")
        if (self.n_events - 1) * self.prune_every >= self.epochs:
            raise ValueError(f"the last of n_events={self.n_events} events (epoch "
                             f"{(self.n_events - 1) * self.prune_every}) must come before epochs={self.epochs}")
        if self.final_lr > self.lr or self.cycle_min_lr > self.lr:
            raise ValueError(f"need final_lr <= lr and cycle_min_lr <= lr, got lr={self.lr}, "
                             f"cycle_min_lr={self.cycle_min_lr}, final_lr={self.final_lr}")

    def _check_prune_options(self):
        if not isinstance(self.prune_options, dict):
            raise ValueError(f"prune_options must be a dict, got {type(self.prune_options).__name__}")
        owned = sorted(set(self.prune_options) & set(RUN_OWNED_OPTIONS))
        if owned:
            raise ValueError(f"prune_options may not set {owned}: the gradual run sets them itself")
        try:  # the recipe of the last event (an N:M pattern applies there: it must fit the target sparsity)
            self.event_recipe(0, self.target_sparsity)
        except TypeError as exc:
            raise ValueError(f"prune_options: {exc}") from None

    def event_recipe(self, index, sparsity):
        """The recipe of prune event ``index`` (to ``sparsity``): ``method`` with ``prune_options``, the
        event's pattern (:meth:`event_pattern`) and, where the method has one, seed ``seed + index``."""
        cls = recipe_class(self.method)
        seed = {"seed": self.seed + index} if "seed" in option_names(cls) else {}
        return cls(**{**self.prune_options, "sparsity": sparsity, "pattern": self.event_pattern(sparsity), **seed})

    def event_pattern(self, sparsity):
        """The pattern of a prune event: an N:M pattern applies at the target sparsity, the events of the
        ramp below it are unstructured (as the rising stages of CHITA++)."""
        pattern = Pattern.parse(self.prune_options.get("pattern"))
        if pattern.kind == "nm" and sparsity < self.target_sparsity - 1e-12:
            return None
        return self.prune_options.get("pattern")

    def event_epochs(self):
        """Epochs at whose start a prune event happens."""
        return [i * self.prune_every for i in range(self.n_events)]

    def event_sparsities(self):
        """Cubic ramp from ``initial_sparsity`` to ``target_sparsity`` over the events."""
        if self.n_events == 1 or self.initial_sparsity == self.target_sparsity:
            return [self.initial_sparsity] * (self.n_events - 1) + [self.target_sparsity]
        return [self.initial_sparsity] + sparsity_schedule(self.target_sparsity, self.n_events - 1, "cubic",
                                                           start=self.initial_sparsity)
