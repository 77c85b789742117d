"""Losses as users have them, and ready-made ones for classifiers, causal language models and distillation.

:func:`as_loss` turns what the user passed as ``loss_fn`` into a :class:`Loss`: a callable
``loss(model, batch) -> losses`` that runs the forward pass itself and returns per-sample losses ``(B,)``
or one scalar (the batch mean; each Fisher row is then the gradient of one mini-batch).  Accepted forms:

- ``None``: cross-entropy for classifiers with integer targets (float targets are refused: pass a loss);
- ``closure(fn)``: ``fn(model, batch)`` runs the forward pass itself, whatever its parameters are named
  (``lambda m, b: ...``, ``functools.partial(...)``); as a convenience an undeclared function whose first
  parameter is named ``model`` is taken as a closure too;
- ``output_target(fn)``, or any other callable: ``fn(output, target)`` (the classic form: the batch is split
  into inputs and target, see :func:`chita_nn.core.batches.split`).

Which form was assumed is in :attr:`Loss.assumed`, and in the error when the loss fails on the first batch.

A loss may have a separate Fisher form ``rows(model, batch)``, used for the rows of ``A`` while the loss
itself judges the step search:

- the distillation losses are zero with zero gradient at the dense model, so their rows are
  ``∇_w ⟨f_s(w), z_s⟩`` plus the loss gradient, with ``z_s`` Gaussian of covariance ``∇²d`` (the Hessian of
  the distance at ``f_s = t_s``): the gradient of the distance to the dense output *plus Gaussian noise* of
  that covariance, whose second moment is the Gauss–Newton matrix ``J_sᵀ ∇²d J_s``;
- ``cross_entropy(fisher="true")`` and ``causal_lm(fisher="true")`` draw the targets of the rows from the
  model's own prediction (the true Fisher, :class:`SampledFisher`).
"""
import copy
import inspect
from collections.abc import Mapping

import torch
import torch.nn.functional as F

from .batches import forward, split

IGNORE_INDEX = -100


class Loss:
    """``loss(model, batch)`` → per-sample losses ``(B,)`` or a scalar; ``rows`` is its Fisher form.

    ``rows_are_gradients``: whether the rows are the loss's own gradients (their mean is the loss gradient,
    which CHITA's gradient term uses); False for rows from sampled targets or Gaussian probes.
    """

    rows_are_gradients = True
    #: For a user's function: how it is called and why, with the way to declare the other form (else None).
    assumed = None

    def __init__(self, fn, description):
        self.fn, self.description = fn, description

    def __call__(self, model, batch):
        return self.fn(model, batch)

    def rows(self, model, batch):
        return self(model, batch)

    def bind(self, model):
        """A copy ready for ``model`` (distillation keeps a frozen copy of the dense model)."""
        return self

    def __repr__(self):
        return f"Loss({self.description})"


def output_tensor(output, key=None):
    """The tensor inside a model output: ``output[key]`` / ``output.key`` if given, else the logits of a
    Hugging Face output, the ``sentence_embedding`` of a sentence-transformer, or the first element."""
    if isinstance(output, torch.Tensor):
        return output
    keys = [key] if key is not None else ["logits", "sentence_embedding", "pooler_output", "last_hidden_state"]
    for name in keys:
        if isinstance(output, Mapping) and name in output:
            return output[name]
        if not isinstance(output, Mapping) and getattr(output, name, None) is not None:
            return getattr(output, name)
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor) and key is None:
        return output[0]
    raise ValueError(f"cannot find {'the ' + repr(key) if key else 'a tensor'} in the model output "
                     f"({type(output).__name__}); pass loss_fn=... that handles it")


def check_class_targets(target, n_classes, name="loss_fn"):
    """Targets for cross-entropy: integer class indices in ``[0, n_classes)`` (or the ignore index)."""
    if target is None:
        raise ValueError(f"{name}: the data has no targets; pass a loss that needs none, e.g. "
                         f"loss_fn=chita_nn.losses.distillation()")
    if target.is_floating_point() or target.dtype == torch.bool:
        raise ValueError(f"{name}: the targets are {target.dtype}, not class indices; the default loss is "
                         f"cross-entropy for classifiers: pass loss_fn=... (e.g. a per-sample MSE) for regression")
    valid = target[target != IGNORE_INDEX]
    if valid.numel() == 0:
        raise ValueError(f"{name}: every target equals the ignore index {IGNORE_INDEX}: there is nothing to fit")
    if int(valid.min()) < 0 or int(valid.max()) >= n_classes:
        raise ValueError(f"{name}: targets must be class indices in [0, {n_classes}), got values in "
                         f"[{int(valid.min())}, {int(valid.max())}]")


def _mean_over_tokens(per_token, keep):
    """Per-sample mean of ``per_token`` (B, T) over the kept tokens."""
    keep = keep.to(per_token.dtype)
    return (per_token * keep).sum(dim=1) / keep.sum(dim=1).clamp_min(1.0)


def cross_entropy_output(output, target):
    """Per-sample cross-entropy of logits ``(B, C)`` (or ``(B, T, C)`` against ``(B, T)``, averaged over the
    tokens that are not the ignore index)."""
    logits = output_tensor(output)
    check_class_targets(target, logits.shape[-1])
    target = target.to(logits.device).long()
    if logits.dim() == 2:
        if target.shape != logits.shape[:1]:
            raise ValueError(f"loss_fn: targets of shape {tuple(target.shape)} for logits of shape "
                             f"{tuple(logits.shape)}: expected ({logits.shape[0]},) class indices")
        return F.cross_entropy(logits, target, reduction="none", ignore_index=IGNORE_INDEX)
    per_token = F.cross_entropy(logits.flatten(0, -2), target.reshape(-1), reduction="none",
                                ignore_index=IGNORE_INDEX).reshape(target.shape)
    return _mean_over_tokens(per_token.reshape(len(target), -1), (target != IGNORE_INDEX).reshape(len(target), -1))


def _output_target_loss(fn, description):
    def loss(model, batch):
        inputs, target = split(batch)
        return fn(forward(model, inputs), target)
    return Loss(loss, description)


FISHERS = ("empirical", "true")


class SampledFisher(Loss):
    """A cross-entropy loss whose Fisher rows use targets drawn from the model's own prediction.

    Row ``s`` is ``∇_w ℓ(f_s(w), ŷ_s)`` with ``ŷ_s ~ softmax(f_s(w))`` (one draw per sample or token): its
    second moment is the true Fisher information ``E_ŷ[∇ℓ ∇ℓᵀ] = J_sᵀ(diag(π_s) − π_sπ_sᵀ)J_s``, the
    Gauss–Newton matrix of the cross-entropy, which does not vanish where the training loss does, unlike the
    empirical Fisher's ``∇ℓ(f_s, y_s)``.  The loss itself (the step search) stays the one against ``y``.
    ``logits(model, batch)`` returns ``(logits (B, T, C), keep (B, T) bool)``.
    """

    rows_are_gradients = False

    def __init__(self, base, logits, seed=0):
        super().__init__(base.fn, f"{base.description}, true Fisher (sampled targets)")
        self.logits, self.seed = logits, seed
        self._generator = None

    def rows(self, model, batch):
        logits, keep = self.logits(model, batch)
        if self._generator is None:
            self._generator = torch.Generator().manual_seed(self.seed)
        flat = logits.flatten(0, -2)
        with torch.no_grad():
            probs = torch.softmax(flat.detach().double().cpu(), dim=-1)
            drawn = torch.multinomial(probs, 1, generator=self._generator).squeeze(1).to(flat.device)
        per_token = F.cross_entropy(flat, drawn, reduction="none").reshape(keep.shape)
        return _mean_over_tokens(per_token, keep)


def _with_fisher(base, logits, fisher, seed):
    if fisher not in FISHERS:
        raise ValueError(f"fisher must be one of {FISHERS}, got {fisher!r}")
    return base if fisher == "empirical" else SampledFisher(base, logits, seed)


def _classifier_logits(model, batch):
    """``(logits (B, T, C), keep)`` of a classifier (T = 1) or a token classifier (targets ≠ ignore index)."""
    inputs, target = split(batch)
    logits = output_tensor(forward(model, inputs))
    if logits.dim() == 2:
        return logits.unsqueeze(1), torch.ones(len(logits), 1, dtype=torch.bool, device=logits.device)
    keep = (torch.ones(logits.shape[:-1], dtype=torch.bool) if target is None else target != IGNORE_INDEX)
    return logits.reshape(len(logits), -1, logits.shape[-1]), keep.reshape(len(logits), -1).to(logits.device)


def cross_entropy(fisher="empirical", seed=0):
    """Cross-entropy of a classifier's logits against integer targets (per sample).

    ``fisher="true"``: the Fisher rows use targets sampled from the model's prediction (see
    :class:`SampledFisher`; for a model that fits its calibration data almost exactly).
    """
    return _with_fisher(_output_target_loss(cross_entropy_output, "cross-entropy"), _classifier_logits,
                        fisher, seed)


def _causal_logits(model, batch):
    """``(logits at 0..T-2, next tokens, keep)`` of a causal language model on a dict batch."""
    if not isinstance(batch, Mapping) or "input_ids" not in batch:
        raise ValueError("loss_fn: causal_lm needs dict batches with 'input_ids' (and optionally "
                         "'attention_mask' and 'labels')")
    inputs, labels = split(batch)
    labels = inputs["input_ids"] if labels is None else labels
    logits = output_tensor(forward(model, inputs))
    shifted = labels[:, 1:].to(logits.device).long()
    keep = shifted != IGNORE_INDEX
    if "attention_mask" in inputs:
        keep &= inputs["attention_mask"][:, 1:].to(logits.device).bool()
    if not keep.any():
        raise ValueError("loss_fn: causal_lm found no token to predict (all padding or ignore index)")
    return logits[:, :-1], shifted, keep


def causal_lm(fisher="empirical", seed=0):
    """Next-token loss of a causal language model, per sequence: the logits at ``t`` predict token ``t + 1``
    of ``labels`` (default: ``input_ids``); padding (``attention_mask == 0``) and the ignore index are left out.
    ``fisher="true"``: Fisher rows from next tokens sampled from the model (:class:`SampledFisher`)."""
    def loss(model, batch):
        logits, shifted, keep = _causal_logits(model, batch)
        per_token = F.cross_entropy(logits.flatten(0, 1), shifted.clamp_min(0).reshape(-1),
                                    reduction="none").reshape(shifted.shape)
        return _mean_over_tokens(per_token, keep)

    def logits(model, batch):
        out, _, keep = _causal_logits(model, batch)
        return out, keep
    return _with_fisher(Loss(loss, "causal-lm next-token cross-entropy"), logits, fisher, seed)


class Distillation(Loss):
    """Distance of the model's outputs to the dense model's, per sample: ``"mse"`` (mean squared difference)
    or ``"cosine"`` (``1 − cos``, for embeddings).  ``bind(model)`` freezes a copy of the dense model."""

    KINDS = ("mse", "cosine")
    rows_are_gradients = False

    def __init__(self, kind="cosine", output=None, teacher=None, seed=0):
        if kind not in self.KINDS:
            raise ValueError(f"kind must be one of {self.KINDS}, got {kind!r}")
        super().__init__(self._value, f"distillation ({kind})")
        self.kind, self.output, self.teacher, self.seed = kind, output, teacher, seed
        self._generator = None

    def bind(self, model):
        if self.teacher is not None:
            return self
        teacher = copy.deepcopy(model).eval()
        for param in teacher.parameters():
            param.requires_grad_(False)
        return Distillation(self.kind, self.output, teacher, self.seed)

    def _outputs(self, model, batch):
        if self.teacher is None:
            raise RuntimeError("distillation loss used before bind(dense_model)")
        inputs, _ = split(batch)
        student = output_tensor(forward(model, inputs), self.output)
        with torch.no_grad():
            target = output_tensor(forward(self.teacher, inputs), self.output)
        return student.reshape(len(student), -1), target.reshape(len(target), -1).to(student)

    def _value(self, model, batch):
        return _distance(*self._outputs(model, batch), self.kind)

    def rows(self, model, batch):
        """``⟨f_s, z_s⟩ + d(f_s, t_s)``: see :func:`gauss_newton_rows`."""
        if self._generator is None:
            self._generator = torch.Generator().manual_seed(self.seed)
        return gauss_newton_rows(*self._outputs(model, batch), self.kind, self._generator)


def _distance(student, target, kind):
    if kind == "mse":
        return ((student - target) ** 2).mean(dim=1)
    return 1.0 - F.cosine_similarity(student, target, dim=1)


def gauss_newton_rows(student, target, kind, generator):
    """``⟨f_s, z_s⟩ + d(f_s, t_s)`` per sample, ``z_s ~ N(0, ∇²d)`` (``∇²d`` at ``f_s = t_s``): gradient rows
    whose second moment is the Gauss–Newton matrix ``J_sᵀ ∇²d J_s`` plus the gradient outer product.

    Equivalently the gradient of ``d`` against the target plus Gaussian noise: for ``"mse"``
    (``d = ‖f − t‖²/D``) the noise is ``N(0, (D/2) I)``; for ``"cosine"`` it is projected orthogonally to
    ``t`` and scaled by ``1/‖t‖``.
    """
    z = torch.randn(student.shape, generator=generator).to(student)
    if kind == "mse":
        z = z * (2.0 / student.shape[1]) ** 0.5
    else:
        norm = target.norm(dim=1, keepdim=True).clamp_min(1e-12)
        unit = target / norm
        z = (z - (z * unit).sum(dim=1, keepdim=True) * unit) / norm
    return (student * z).sum(dim=1) + _distance(student, target, kind)


def distillation(kind="cosine", output=None, seed=0):
    """Distillation to the dense model's outputs (for models without labels), see :class:`Distillation`."""
    return Distillation(kind, output, seed=seed)


class MeanSquaredError(Loss):
    """Per-sample mean squared error ``‖f(x) − y‖²/D`` of a regression model with float targets ``y``.

    ``fisher="true"``: the Fisher rows use Gaussian targets ``ŷ = f(x) + ε``, ``ε ~ N(0, (D/2) I)`` (the
    predictive distribution whose Fisher is the loss's Gauss–Newton matrix, :func:`gauss_newton_rows`), so
    they do not vanish on a model that fits its data exactly; the empirical rows ``∇ℓ(f(x), y)`` do.
    """

    def __init__(self, fisher="empirical", seed=0):
        if fisher not in FISHERS:
            raise ValueError(f"fisher must be one of {FISHERS}, got {fisher!r}")
        suffix = ", true Fisher (Gaussian targets)" if fisher == "true" else ""
        super().__init__(self._value, f"mean squared error{suffix}")
        self.fisher, self.seed, self._generator = fisher, seed, None
        self.rows_are_gradients = fisher == "empirical"

    @staticmethod
    def _outputs(model, batch):
        inputs, target = split(batch)
        if target is None or not target.is_floating_point():
            raise ValueError("loss_fn: mean squared error needs float targets")
        output = output_tensor(forward(model, inputs))
        output = output.reshape(len(output), -1)
        target = target.reshape(len(target), -1).to(output)
        if output.shape != target.shape:
            raise ValueError(f"loss_fn: targets of shape {tuple(target.shape)} for outputs of shape "
                             f"{tuple(output.shape)}")
        return output, target

    def _value(self, model, batch):
        return _distance(*self._outputs(model, batch), "mse")

    def rows(self, model, batch):
        if self.fisher == "empirical":
            return self(model, batch)
        if self._generator is None:
            self._generator = torch.Generator().manual_seed(self.seed)
        output, target = self._outputs(model, batch)
        return gauss_newton_rows(output, target, "mse", self._generator)


def mse(fisher="empirical", seed=0):
    """Mean squared error for regression, see :class:`MeanSquaredError`."""
    return MeanSquaredError(fisher, seed)


def _callable(fn, name):
    """``fn`` if it is a function to declare (not a :class:`Loss`, which has its form already)."""
    if isinstance(fn, Loss) or not callable(fn):
        what = "a Loss, which needs no declaration" if isinstance(fn, Loss) else type(fn).__name__
        raise TypeError(f"{name} must be a function, got {what}")
    return fn


def _user_loss(fn, takes_model, assumed):
    """The :class:`Loss` calling the user's ``fn`` as ``fn(model, batch)`` or ``fn(output, target)``."""
    name = getattr(fn, "__name__", None) or getattr(getattr(fn, "func", None), "__name__", None)  # a partial's
    if takes_model:
        loss = Loss(fn, name or "closure")
    else:
        loss = _output_target_loss(fn, name or "output-target loss")
    loss.assumed = assumed
    return loss


def closure(fn):
    """Declare ``fn`` a loss closure ``fn(model, batch) -> losses``, whatever its parameters are named
    (``lambda m, b: ...``, ``def loss(net, batch)``, ``functools.partial``); it runs the forward pass itself.
    Usable as a decorator; returns a :class:`Loss`."""
    return _user_loss(_callable(fn, "closure(fn): fn"), True, "fn(model, batch), declared by losses.closure")


def output_target(fn):
    """Declare ``fn`` a loss ``fn(output, target) -> losses`` of the model's output and the batch's target
    (needed only when its first parameter is named ``model``); returns a :class:`Loss`."""
    return _user_loss(_callable(fn, "output_target(fn): fn"), False,
                      "fn(output, target), declared by losses.output_target")


def _first_parameter_is_model(fn):
    try:
        params = [p for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return False
    return bool(params) and params[0].name == "model"


def as_loss(loss_fn, name="loss_fn"):
    """The :class:`Loss` for what the user passed (see the module docstring)."""
    if loss_fn is None:
        return _output_target_loss(cross_entropy_output, "cross-entropy (default)")
    if isinstance(loss_fn, Loss):
        return loss_fn
    if not callable(loss_fn):
        raise TypeError(f"{name} must be callable, got {type(loss_fn).__name__}")
    if _first_parameter_is_model(loss_fn):
        return _user_loss(loss_fn, True, "fn(model, batch), as its first parameter is named model; if it takes "
                                         "(output, target), pass chita_nn.losses.output_target(fn)")
    return _user_loss(loss_fn, False, "fn(output, target); if it takes (model, batch), pass "
                                      "chita_nn.losses.closure(fn)")


def check_losses(losses, n_samples, name="loss_fn"):
    """``losses`` as returned by a loss: per-sample ``(n_samples,)`` → True, a scalar → False; anything else,
    or a non-finite value, raises ``ValueError`` naming ``name``."""
    if not isinstance(losses, torch.Tensor):
        raise ValueError(f"{name} must return a tensor, got {type(losses).__name__}")
    if losses.dim() == 0:
        per_sample = False
    elif losses.shape == (n_samples,):
        per_sample = True
    else:
        raise ValueError(f"{name} must return per-sample losses of shape ({n_samples},) (reduction='none') "
                         f"or a scalar (the batch mean), got shape {tuple(losses.shape)}")
    if not torch.isfinite(losses.detach()).all():
        raise ValueError(f"{name} returned a non-finite loss (NaN or inf): check the model's weights "
                                 f"and inputs")
    return per_sample
