"""The safeguard every CHITA path shares: a stage's result is kept only if it does not raise the loss.

A stage's solver result ``w*`` (support ``S``) comes from a quadratic model of the loss, which may be wrong
far from ``w̄``.  The step search measures the loss (on a fixed probe subset of the calibration data) at

    w(α) = P_S(w̄) + α (w* − P_S(w̄))   for α in ``steps``   (a trust region on the model),

and at the magnitude solution of the same stage under the same pattern; the lowest loss wins.  When the
magnitude solution wins, the stage *fell back*: it is recorded (``StageReport.kept == "magnitude"``), counted
in :attr:`chita_nn.core.report.PruneReport.fallbacks` and logged by :func:`report_fallbacks` (a warning, and
another one when every stage fell back, i.e. the run returned magnitude pruning).

Before a solve, :func:`check_curvature` refuses Fisher rows that are all zero and warns (in the log and in
``PruneReport.warnings``) when they are negligible: ``ρ = ‖A‖_F ‖w̄‖ / √n`` (a bound on the RMS over rows of
the first-order loss change ``|a_iᵀ w̄|`` from removing every weight) below :data:`FLAT_CURVATURE`.  That is
the case of a loss at its minimum, e.g. a distillation loss without its Fisher form at the dense model
(measured on the digits MLP: ρ = 0 for MSE, 1.8e-6 for 1 − cos; 1.1 for the cross-entropy).
"""
import copy
import logging

import numpy as np
import torch

from ..core.batches import batch_size as samples_in
from ..core.batches import to_device
from ..core.losses import check_losses
from ..core.runtime import eval_mode, model_device
from ..core.writeback import strip_reparametrization, write_weights

logger = logging.getLogger(__name__)

FLAT_CURVATURE = 1e-4
_FLAT_ADVICE = ("the loss has (almost) no gradient at these weights, so the solve could only return magnitude "
                "pruning; use a loss whose Fisher rows carry curvature: chita_nn.losses.distillation() for "
                "distilling to the dense model, cross_entropy(fisher='true') / causal_lm(fisher='true') for a "
                "model that fits its data")


def check_curvature(col_sq, n_rows, w_bar, report, stage):
    """``ρ = ‖A‖_F ‖w̄‖ / √n`` of stage ``stage`` from the column norms ``col_sq = ‖A_{:,j}‖²``; ``ValueError``
    if ``A`` is zero, a warning if ``ρ`` is tiny."""
    rho = float(np.sqrt(col_sq.sum()) * np.linalg.norm(w_bar) / np.sqrt(n_rows))
    if rho == 0.0:
        raise ValueError(f"stage {stage}: every Fisher row is zero ({report.settings.get('loss', 'loss_fn')}): "
                         f"{_FLAT_ADVICE}; model unchanged")
    if rho < FLAT_CURVATURE:
        message = (f"stage {stage}: the Fisher rows are negligible (ρ = ‖A‖‖w̄‖/√n = {rho:.3g} < "
                   f"{FLAT_CURVATURE:g}): {_FLAT_ADVICE}")
        logger.warning(message)
        report.warnings.append(message)
    return rho


class WorkingCopy:
    """A plain (un-reparametrised) deep copy of a model, so that the user's model is untouched until the
    write-back; ``select(model) -> (params, layout)`` picks its pruned tensors, :meth:`put` writes into them."""

    def __init__(self, model, select):
        self.model = strip_reparametrization(copy.deepcopy(model))
        self.params, self.layout = select(self.model)

    def put(self, vec, support):
        """Write the flat weights ``vec`` restricted to ``support`` (no masks)."""
        write_weights(self.params, self.layout.split(vec), self.layout.split(support), mask=False)


class LossProbe:
    """Mean loss of ``model`` on ``n`` samples of ``calibration`` drawn once with ``seed``."""

    def __init__(self, model, calibration, n, loss, seed):
        generator = torch.Generator().manual_seed(seed + 7919)
        self.index = torch.randperm(calibration.n_samples, generator=generator)[:n].sort().values
        self.calibration, self.model, self.loss = calibration, model, loss

    @torch.no_grad()
    def __call__(self, batch_size=1000):
        device = model_device(self.model)
        total, count = 0.0, 0
        with eval_mode(self.model):
            for batch in self.calibration.samples(self.index, batch_size):
                n = samples_in(batch)
                losses = self.loss(self.model, to_device(batch, device))
                per_sample = check_losses(losses, n)
                total += losses.double().sum().item() if per_sample else losses.item() * n
                count += n
        return total / count


def step_search(put, probe, w_bar, w_star, keep, magnitude, steps, stage):
    """Pick a stage's weights by loss; returns ``(w, keep)``, written into the working model by ``put``.

    ``put(vec, support)`` writes a candidate into the model that ``probe()`` measures; ``magnitude`` is the
    stage's magnitude solution ``(w_mp, keep_mp)``.  Sets ``stage.train_loss``, ``stage.step`` (nan for the
    magnitude fallback) and ``stage.kept``.  Without ``steps``, ``w*`` is taken as is (``kept = "solver"``).
    """
    if not steps:
        stage.kept = "solver"
        put(w_star, keep)
        return w_star, keep
    w_base = w_bar * keep
    candidates = [(alpha, w_base + alpha * (w_star - w_base), keep) for alpha in steps]
    candidates.append((float("nan"), *magnitude))
    best = None
    for alpha, vec, support in candidates:
        put(vec, support)
        loss = probe()
        if not np.isfinite(loss):
            continue
        if best is None or loss < best[0]:
            best = (loss, alpha, vec, support)
    if best is None:
        raise ValueError("the loss is not finite (NaN or inf) at every candidate of the step search; "
                         "model unchanged")
    stage.train_loss, stage.step, w, keep = best
    stage.kept = "magnitude" if np.isnan(stage.step) else f"α={stage.step:g}"
    put(w, keep)
    return w, keep


def describe_kept(kept):
    """A stage's ``kept`` (:func:`step_search`) in words, for the log."""
    if kept == "magnitude":
        return "kept the magnitude solution (its loss was below every step toward the solver's)"
    if kept == "solver":
        return "kept the solver's weights"
    return f"kept the solver's weights at step {kept}"


def report_fallbacks(report):
    """Log a warning when stages of ``report`` kept the magnitude solution (see the module docstring)."""
    fallbacks, total = report.fallbacks, len(report.stages)
    if fallbacks and fallbacks == total:
        logger.warning("%s: every stage (%d) kept the magnitude solution: this run's result is magnitude "
                       "pruning (the quadratic model's step raised the loss)", report.method, total)
    elif fallbacks:
        logger.warning("%s: %d of %d stages kept the magnitude solution (the quadratic model's step raised "
                       "the loss)", report.method, fallbacks, total)
