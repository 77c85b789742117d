"""Recipes: one small object per pruning method, holding that method's options only, checked when it is built.

``prune(model, data, recipe)`` (:func:`chita_nn.prune`) runs one, as llm-compressor's
``oneshot(model, recipe=SparseGPTModifier(...))`` does::

    prune(model, data, CHITAPlusPlus(sparsity=0.9, n_rows=500))
    prune(model, batches, SparseGPT(pattern="2:4", ignore=["lm_head"]))

- global, on the empirical Fisher of a loss: :class:`Magnitude` (the baseline, no data), :class:`CHITA` (one
  stage), :class:`CHITAPlusPlus` (stages over a sparsity schedule);
- layer by layer, on each layer's reconstruction problem (:func:`~.layerwise.prune_layerwise`):
  :class:`LayerwiseCHITA`, :class:`SparseGPT`, :class:`Wanda`.

Every recipe takes the options of :class:`PruneRecipe` (``sparsity``, ``pattern``, ``targets``, ``ignore``,
``mask``) and its own, by keyword.  An option a recipe does not have is a ``TypeError`` naming it, the recipe,
the recipes that have it and the recipe's options; a bad value (or an option that a setting of another makes
meaningless, such as ``owl_lambda`` without ``budgets="owl"``) a one-line ``ValueError``.  Recipes are frozen:
:func:`dataclasses.replace` makes a changed copy, checked again.  :func:`recipe_class` maps the method names of
TOML recipes and of ``chita-nn --method`` to the classes, so every front end builds the same objects.
"""
import functools
import os
import reprlib
from dataclasses import dataclass, field, fields

import torch

import l0reg

from ..core.losses import as_loss
from ..core.params import DEFAULT_IGNORE, DEFAULT_TARGETS, _entries
from ..core.patterns import Pattern
from ..core.rules import COUNT, FRACTION, NON_NEGATIVE, POSITIVE_INT, OneOf, Rule
from .blocks import SCORES
from .layerwise.api import BUDGETS, LAYERWISE_TARGETS, _check_arguments, prune_layerwise
from .layerwise.gram_hooks import check_gram_dtype
from .layerwise.options import check_keyword_options, check_solver_options
from .oneshot import DEFAULTS, SCOPES, _check_steps, fisher_prune, magnitude_prune
from .schedules import SCHEDULES

_STRINGS = OneOf((Rule("str"), Rule("strings")))
#: ``l0reg.solve`` arguments the global methods set themselves.
_SET_BY_FISHER = ("A", "b", "k", "lam", "w_bar", "w_init", "projection")


def option(default, rule=None, *, toml=None):
    """A recipe option: ``rule`` checks its value (None passes where None is the default; no rule: the
    recipe's ``_check`` does); ``toml`` is the rule of its TOML / command-line form (default ``rule``), or False
    for values only Python can give (callables, datasets, dtypes)."""
    return field(default=default, metadata={"rule": rule, "toml": rule if toml is None else toml})


def option_names(cls):
    """The options of recipe class ``cls``, in order."""
    return tuple(f.name for f in fields(cls))


def _not_an_option(cls, name):
    owners = [other.__name__ for other in RECIPES.values() if name in option_names(other)]
    where = f" (an option of {', '.join(owners)})" if owners else ""
    return f"{cls.__name__} has no option {name!r}{where}; its options: {', '.join(option_names(cls))}"


def _recipe(cls):
    """Make ``cls`` a frozen, keyword-only dataclass whose constructor names an unknown option and lists the
    valid ones (instead of dataclasses' bare "unexpected keyword argument")."""
    cls = dataclass(frozen=True, kw_only=True, repr=False)(cls)
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self, *args, **options):
        if args:
            raise TypeError(f"{cls.__name__} takes its options by keyword, e.g. {cls.__name__}(sparsity=0.5); "
                            f"got {len(args)} positional argument{'s' * (len(args) > 1)}")
        for name in options:
            if name not in option_names(cls):
                raise TypeError(_not_an_option(cls, name))
        init(self, **options)

    cls.__init__ = __init__
    return cls


def _is_default(f, value):
    if f.metadata["toml"] is False:  # objects: compared by identity (a tensor has no plain ==)
        return value is f.default
    return value == f.default


@_recipe
class PruneRecipe:
    """The options every method has (base class; use one of :data:`RECIPES`).

    Parameters
    ----------
    sparsity : float in [0, 1)
        Fraction of the selected weights set to zero.  May be None with an N:M pattern (implied:
        ``1 − n/m``).
    pattern : None / "unstructured", "N:M" (e.g. "2:4", "4:8") or "channel"
        The sparsity pattern of every mask (N:M along each weight's rows, i.e. the input dimension of a
        ``Linear``; ``"channel"``: whole output rows, global methods only).
    targets, ignore : module types, class names, globs or ``"re:"`` patterns
        Which weights are pruned (:func:`chita_nn.core.params.select_parameters`); ``lm_head`` is ignored by
        default.
    mask : bool
        Install ``torch.nn.utils.prune`` masks (True) or only write the zeros into the weights.
    """

    #: The name of the method in ``method=`` (deprecated), TOML ``[prune] method`` and ``--method``.
    method = None
    #: ``{option: (condition in words, predicate of the recipe)}``: options that mean something only when the
    #: predicate holds, so a value other than the default is refused otherwise.
    conditional = {}

    sparsity: float = option(None, FRACTION)
    pattern: object = option(None, toml=Rule("str"))
    targets: object = option(DEFAULT_TARGETS, toml=_STRINGS)
    ignore: object = option(DEFAULT_IGNORE, toml=_STRINGS)
    mask: bool = option(True, Rule("bool"))

    def __post_init__(self):
        name = type(self).__name__
        if self.method is None:
            raise TypeError(f"{name} is a base class; use one of {', '.join(c.__name__ for c in RECIPES.values())}")
        try:
            self._validate()
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{name}: {exc}") from None

    def _validate(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):  # lists (as TOML gives them) as tuples: recipes compare equal
                object.__setattr__(self, f.name, value := tuple(value))
            if f.metadata["rule"] is not None and not (value is None and f.default is None):
                f.metadata["rule"].check(f.name, value)
        for name, (condition, holds) in self.conditional.items():
            f = next(f for f in fields(self) if f.name == name)
            if not holds(self) and not _is_default(f, getattr(self, name)):
                raise ValueError(f"{name} applies only with {condition}, got {name}={getattr(self, name)!r}")
        pattern = Pattern.parse(self.pattern)
        FRACTION.check("sparsity", pattern.sparsity(self.sparsity))
        _entries(self.targets, "targets")
        _entries(self.ignore, "ignore")
        self._check(pattern)

    def _check(self, pattern):
        """Checks across options (``pattern`` parsed), beyond each option's rule."""

    def options(self):
        """``{option: value}`` of the options that differ from their defaults."""
        return {f.name: getattr(self, f.name) for f in fields(self) if not _is_default(f, getattr(self, f.name))}

    def __repr__(self):
        shown = {f.name: f for f in fields(self)}
        return f"{type(self).__name__}(" + ", ".join(
            f"{name}={(repr if shown[name].metadata['toml'] is not False else reprlib.repr)(value)}"
            for name, value in self.options().items()) + ")"

    def run(self, model, data, *, progress=False):
        """Prune ``model`` in place; a :class:`~chita_nn.core.report.PruneReport` (use :func:`chita_nn.prune`)."""
        raise NotImplementedError


@_recipe
class Magnitude(PruneRecipe):
    """Magnitude pruning (MP): keep the largest ``|w|`` (``data`` is not used).

    Parameters (besides :class:`PruneRecipe`'s)
    ----------
    scope : {"global", "layerwise"}
        One budget over all selected weights, or the same sparsity in every layer.
    recompute_batchnorm : dataset or None
        Re-estimate BatchNorm statistics on it after pruning (see :class:`CHITA`).
    """

    method = "magnitude"

    scope: str = option("global", Rule("choice", choices=SCOPES))
    recompute_batchnorm: object = option(None, toml=False)

    def run(self, model, data, *, progress=False):
        return magnitude_prune(model, **{f.name: getattr(self, f.name) for f in fields(self)})


@_recipe
class _FisherRecipe(PruneRecipe):
    """The options of CHITA and CHITA++ (see :class:`CHITA`)."""

    loss_fn: object = option(None, toml=False)
    n_rows: int = option(DEFAULTS["n_rows"], POSITIVE_INT)
    samples_per_row: int = option(None, POSITIVE_INT)
    lam: float = option(DEFAULTS["lam"], NON_NEGATIVE)
    gradient_term: bool = option(None, Rule("bool"))
    scope: str = option("global", Rule("choice", choices=SCOPES))
    block_size: object = option(None, OneOf((Rule("choice", choices=("layer",)), POSITIVE_INT)))
    score: str = option("fisher", Rule("choice", choices=SCORES))
    line_search: object = option(DEFAULTS["line_search"], OneOf((Rule("bool"), Rule("numbers"))))
    loss_samples: int = option(DEFAULTS["loss_samples"], POSITIVE_INT)
    solver_options: dict = option(None, Rule("table"))
    recompute_batchnorm: object = option(None, toml=False)
    max_bytes: int = option(None, POSITIVE_INT)
    seed: int = option(0, Rule("int"))

    conditional = {"loss_samples": ("a line search (line_search not False)", lambda r: bool(r.line_search))}

    def _check(self, pattern):
        as_loss(self.loss_fn)
        _check_steps(self.line_search)
        check_keyword_options(self.solver_options, l0reg.solve, _SET_BY_FISHER,
                              "by the pruning itself (from the model, the data, sparsity and lam)")
        if pattern.kind == "channel" and self.block_size not in (None, "layer"):
            raise ValueError("block_size must be None or 'layer' with pattern='channel' (one block per layer)")


@_recipe
class CHITA(_FisherRecipe):
    """CHITA (Benbaki et al., 2023): one l0reg solve on the empirical Fisher of ``loss_fn`` (A = per-sample
    gradients) around the current weights.  Defaults: :data:`chita_nn.methods.oneshot.DEFAULTS`.

    Parameters (besides :class:`PruneRecipe`'s)
    ----------
    loss_fn : callable, see :func:`chita_nn.core.losses.as_loss`
        ``loss_fn(output, target)``, or ``losses.closure(fn)`` for ``fn(model, batch)``; per-sample ``(B,)`` or a
        batch mean (each Fisher row is then the gradient of one mini-batch of ``samples_per_row`` samples);
        default cross-entropy.  Ready-made: ``chita_nn.losses.cross_entropy()``, ``causal_lm()``, ``mse()``,
        ``distillation("mse" | "cosine")``.
    n_rows, samples_per_row : int
        ``A`` has ``n_rows`` rows, each the mean gradient over ``samples_per_row`` samples (None: 16, shrunk
        with ``n_rows`` to fit a small ``data``).
    lam : float
        Ridge ``λ`` of ``(nλ/2)‖w − w̄‖²`` (a trust region around ``w̄``).
    gradient_term : bool or None
        ``b = A w̄ − e/m`` (True) or ``b = A w̄``; None: True, except for a loss whose rows are not its
        gradients (distillation and the ``fisher="true"`` losses).
    scope : {"global", "layerwise"}
        One budget over all weights, or the same sparsity in every layer.
    block_size : None, "layer" or int
        None: one problem over all ``p`` weights (global scope); ``"layer"``: one block per layer; int: blocks
        of at most that many columns within each layer (block-diagonal Fisher).  With the gradient term each
        block B gets ``γ_B = γ‖A_B‖²/‖A‖²`` of it (its share of the Fisher trace).
    score : {"fisher", "magnitude"}
        Screening score that allocates the block budgets and warm-starts the solver.
    line_search : list of float, or False
        Step sizes ``α`` tried on each stage's result, judged by the loss on ``loss_samples`` samples.
    solver_options : dict
        Options of :func:`l0reg.solve` (``max_iter``, ``swaps``, ...) over ``DEFAULTS["solver_options"]``.
    recompute_batchnorm : dataset or None
        Re-estimate BatchNorm statistics on it after pruning (rolled back with the weights if it fails).  Use
        inputs distributed like the training inputs (augmentation included).
    max_bytes : int or None
        Memory budget of ``A`` and the solve (default 80% of the available memory).
    seed : int
        Seed of the rows' samples and of the line search's.
    """

    method = "chita"

    def run(self, model, data, *, progress=False):
        return fisher_prune(model, data, self, n_stages=1, hold_stages=0, schedule="exponential",
                            progress=progress)


@_recipe
class CHITAPlusPlus(_FisherRecipe):
    """CHITA++: CHITA over a sparsity schedule, ``A`` recomputed at the current weights every stage.

    Parameters (besides :class:`CHITA`'s)
    ----------
    n_stages, hold_stages : int
        The sparsity rises over the first ``n_stages − hold_stages`` stages along ``schedule``
        (:func:`chita_nn.sparsity_schedule`) and stays at ``sparsity`` for the last ``hold_stages`` (None:
        ``n_stages // 5`` with the gradient term, else 0).  With an N:M pattern the rising stages are
        unstructured and the stages at the target N:M.  Each stage runs ``DEFAULTS["stage_max_iter"]`` IHT
        steps unless ``solver_options`` sets ``max_iter``.
    schedule : {"exponential", "linear", "cubic"}
    """

    method = "chita++"

    n_stages: int = option(DEFAULTS["n_stages"], POSITIVE_INT)
    hold_stages: int = option(None, COUNT)
    schedule: str = option("exponential", Rule("choice", choices=SCHEDULES))

    def _check(self, pattern):
        super()._check(pattern)
        if self.hold_stages is not None and self.hold_stages >= self.n_stages:
            raise ValueError(f"hold_stages must be an integer in [0, n_stages={self.n_stages}), got "
                             f"{self.hold_stages!r}")

    def run(self, model, data, *, progress=False):
        return fisher_prune(model, data, self, n_stages=self.n_stages, hold_stages=self.hold_stages,
                            schedule=self.schedule, stage_max_iter=DEFAULTS["stage_max_iter"], progress=progress)


@_recipe
class _LayerwiseRecipe(PruneRecipe):
    """The options of the layer-wise methods (see :class:`LayerwiseCHITA`)."""

    #: ``method=`` of :func:`~.layerwise.prune_layerwise`.
    engine = None

    targets: object = option(LAYERWISE_TARGETS, toml=_STRINGS)
    dampening: float = option(0.01, NON_NEGATIVE)
    budgets: str = option("uniform", Rule("choice", choices=BUDGETS))
    owl_threshold: float = option(5.0, NON_NEGATIVE)
    owl_lambda: float = option(0.08, NON_NEGATIVE)
    per_row: bool = option(True, Rule("bool"))
    gram_dtype: object = option(torch.float64, toml=False)
    error_correction: bool = option(False, Rule("bool"))
    checkpoint_dir: object = option(None, toml=Rule("str"))
    resume: bool = option(True, Rule("bool"))

    conditional = {"owl_threshold": ("budgets='owl'", lambda r: r.budgets == "owl"),
                   "owl_lambda": ("budgets='owl'", lambda r: r.budgets == "owl"),
                   "resume": ("a checkpoint_dir", lambda r: r.checkpoint_dir is not None)}

    def _engine_options(self):
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def _check(self, pattern):
        if self.checkpoint_dir is not None and not isinstance(self.checkpoint_dir, (str, os.PathLike)):
            raise ValueError(f"checkpoint_dir must be a folder (str or Path), got {self.checkpoint_dir!r}")
        check_gram_dtype(self.gram_dtype)
        options = self._engine_options()
        _check_arguments(self.engine, self.pattern, self.sparsity, self.budgets, self.dampening, self.per_row,
                         options.get("block_size", SparseGPT.block_size), self.owl_threshold, self.owl_lambda,
                         self.error_correction)
        check_solver_options(options.get("solver_options"), self.engine)

    def run(self, model, data, *, progress=False):
        return prune_layerwise(model, data, method=self.engine, progress=progress, **self._engine_options())


@_recipe
class LayerwiseCHITA(_LayerwiseRecipe):
    """Layer-wise CHITA: every layer's rows pruned by :func:`l0reg.solve_gram` on ``H = XᵀX / n`` of its
    calibration inputs, started from SparseGPT's rows and never worse than SparseGPT's or Wanda's, block by
    block (each block on the outputs of the pruned blocks before it).

    Parameters (besides :class:`PruneRecipe`'s; ``targets`` default ``("Linear", "Conv1D")``)
    ----------
    dampening : float ≥ 0
        ``λ = dampening · mean(diag H)``: the ridge (SparseGPT's dampening).
    budgets : {"uniform", "owl"}
        The same sparsity in every layer, or OWL's outlier-weighted sparsities per block (``owl_threshold`` M,
        ``owl_lambda`` the half-spread), averaging to ``sparsity``.
    per_row : bool
        Every row keeps the same number of weights, or the whole layer shares its budget.
    gram_dtype : torch dtype
        Precision of the ``XᵀX`` products (summed in float64).
    error_correction : bool
        Inside the repeated blocks, fit the dense model's outputs from the pruned model's inputs.
    checkpoint_dir : str or Path, optional
        Checkpoint every finished block there; a call stopped anywhere resumes from there with the same result
        (``resume=False``: start over).
    solver_options : dict
        Options of :func:`l0reg.solve_gram` (``max_iter``, ``swaps``, ...).
    """

    method = "chita-layerwise"
    engine = "chita"

    solver_options: dict = option(None, Rule("table"))


@_recipe
class SparseGPT(_LayerwiseRecipe):
    """SparseGPT's OBS sweep on every layer, block by block.

    Parameters (besides :class:`LayerwiseCHITA`'s, less ``solver_options``)
    ----------
    block_size : int
        Columns per lazy-update block of the sweep.
    """

    method = "sparsegpt"
    engine = "sparsegpt"

    block_size: int = option(128, POSITIVE_INT)


@_recipe
class Wanda(_LayerwiseRecipe):
    """Wanda: keep the largest ``|W_ij| · ‖X_j‖₂`` of every layer, weights unchanged.

    Options: those of :class:`LayerwiseCHITA` less ``solver_options``; ``dampening`` only with
    ``error_correction=True`` (the ridge of its corrected target; Wanda's scores do not use it).
    """

    method = "wanda"
    engine = "wanda"

    conditional = {**_LayerwiseRecipe.conditional,
                   "dampening": ("error_correction=True", lambda r: r.error_correction)}


#: method name -> recipe class.
RECIPES = {cls.method: cls for cls in (Magnitude, CHITA, CHITAPlusPlus, LayerwiseCHITA, SparseGPT, Wanda)}
METHOD_NAMES = tuple(RECIPES)


def recipe_class(method):
    """The recipe class of a method name (``"chita++"``, ``"sparsegpt"``, ...)."""
    if method not in RECIPES:
        raise ValueError(f"method must be one of {METHOD_NAMES}, got {method!r}")
    return RECIPES[method]


def legacy_recipe(sparsity, options):
    """``(recipe, call)`` for the deprecated ``prune(model, data, sparsity, method=..., **options)``: the recipe
    it means, and the call in words.  An option of ``prune`` that the method does not have is a ``TypeError``
    (earlier releases dropped it silently)."""
    if isinstance(sparsity, type) or not (sparsity is None or isinstance(sparsity, (int, float))):
        raise TypeError(f"prune(model, data, recipe): recipe must be a recipe such as CHITA(sparsity=0.5) (one "
                        f"of {', '.join(c.__name__ for c in RECIPES.values())}), got {sparsity!r}")
    options = dict(options)
    method = options.pop("method", "chita++")
    if "sparsity" in options and sparsity is not None:
        raise TypeError("prune() got sparsity twice (as the third argument and by keyword)")
    options.setdefault("sparsity", sparsity)
    cls = recipe_class(method)
    # None meant "the default" in the old signature: leave it to the recipe
    given = {name: value for name, value in options.items() if value is not None or name not in option_names(cls)}
    try:
        recipe = cls(**given)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"prune(method={method!r}): {exc}") from None
    return recipe, f"prune(model, data, sparsity, method={method!r}, ...)"


def toml_option_rules(methods):
    """``{option: rule}`` of the options a TOML recipe can give to the recipes of ``methods``."""
    return {f.name: f.metadata["toml"] for method in methods for f in fields(recipe_class(method))
            if f.metadata["toml"] is not False}

