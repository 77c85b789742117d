"""One-shot pruning of a PyTorch model: magnitude pruning, CHITA and CHITA++.

Around the current weights ``w̄`` (the selected tensors flattened and
concatenated, ``p`` entries) the training loss is modelled by the quadratic
with the empirical Fisher ``(1/n)AᵀA`` as Hessian, where row ``i`` of ``A`` is
the loss gradient on mini-batch ``i`` of ``m`` samples.  Keeping
``k = ⌊(1 − s)p⌋`` weights is then the l0reg problem::

    min_w ½‖b − A w‖² + (nλ/2)‖w − w̄‖²   s.t. ‖w‖₀ ≤ k,
    b = A w̄ − e/m  (gradient term, e = ones)   or   b = A w̄

(:func:`chita_nn.methods.blocks.gradient_weight` derives the ``1/m``).  With the
gradient term the solution is a damped Newton step on the loss model as well
as a pruning step.  CHITA solves it once; CHITA++ raises the sparsity over a
schedule ``s_1 < … < s_T = s`` and at each stage recomputes ``A`` at the
current pruned weights and re-centres the problem there; its last
``hold_stages`` stages stay at ``s`` (Newton steps on the final support
pattern, which may still change).  Each stage's solution ``w*`` (support
``S``) may be damped by a line search on the training loss over
``w(α) = P_S(w̄) + α (w* − P_S(w̄))``, a trust region on the quadratic model.
"""
import logging
import numbers
import time
import warnings

import numpy as np
from torch import nn
from tqdm.auto import tqdm

import l0reg

from ..core.batches import Calibration
from ..core.fisher import empirical_fisher
from ..core.losses import as_loss
from ..core.memory import check_global_solve_memory
from ..core.params import DEFAULT_IGNORE, DEFAULT_TARGETS, ParamLayout, select_parameters
from ..core.patterns import Pattern, pattern_keep, row_length
from ..core.report import LayerReport, PruneReport, StageReport
from ..core.solve_cost import forecast_global_solve, solve_progress
from ..core.writeback import recompute_batchnorm as _recompute_batchnorm
from ..core.writeback import write_weights_atomic
from .blocks import (allocate_budgets, gradient_shares, gradient_weight, layer_budgets, make_blocks, rhs,
                     screening_scores, solve_blocks)
from .safeguard import LossProbe, WorkingCopy, check_curvature, describe_kept, report_fallbacks, step_search
from .schedules import sparsity_schedule

logger = logging.getLogger(__name__)

#: The global methods (a gradual run's prune events use one of them); every method: ``recipe_types.RECIPES``.
METHODS = ("magnitude", "chita", "chita++")
SCOPES = ("global", "layerwise")
SUPPORTED_DEVICES = ("cpu", "cuda")

#: Defaults of the CHITA / CHITA++ recipes, chosen on MLPNet/MNIST at 0.9 sparsity (see the README's "Choosing
#: the settings" and benchmarks/table1.py): with the gradient term and λ = 1e-3 each CHITA++ stage lowers the
#: training loss, and 15 stages of which 3 at the target sparsity reach the paper's CHITA++ accuracies.
DEFAULTS = {
    "n_rows": 1000,
    "samples_per_row": 16,
    "lam": 1e-3,
    "gradient_term": True,
    "n_stages": 15,  # hold_stages defaults to n_stages // 5 (with the gradient term)
    "line_search": (0.0, 0.25, 0.5, 0.75, 1.0),
    "loss_samples": 5000,
    # The solver's swap/greedy phase is for small best-subset problems; on Fisher problems it did not lower
    # the objective (digits MLP, n = 100, k = 3232: same objective) at many times the cost, so it is off.
    "solver_options": {"swaps": False},
    # IHT steps per CHITA++ stage: a stage is one step of the outer loop, and 10 steps (plus the exact
    # refit) gave the same accuracy as 200 at a quarter of the time (MLPNet 0.5: 95.95 vs 96.05).
    "stage_max_iter": 10,
}


def _check_sparsity(sparsity):
    if (isinstance(sparsity, bool) or not isinstance(sparsity, numbers.Real)
            or not np.isfinite(sparsity) or not 0.0 <= sparsity < 1.0):
        raise ValueError(f"sparsity must be a number in [0, 1), got {sparsity!r}")
    return float(sparsity)


def _check_choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_lam(lam):
    if isinstance(lam, bool) or not isinstance(lam, numbers.Real) or not (np.isfinite(lam) and lam >= 0.0):
        raise ValueError(f"lam must be a finite number >= 0, got {lam!r}")
    return float(lam)


def _check_steps(line_search):
    """The step sizes of ``line_search``: None (the defaults), False (none) or a list of numbers in [0, 1]."""
    steps = DEFAULTS["line_search"] if line_search is None else (line_search or ())
    if not isinstance(steps, (list, tuple)) or any(
            isinstance(a, bool) or not (isinstance(a, numbers.Real) and 0.0 <= a <= 1.0) for a in steps):
        raise ValueError(f"line_search must be False or a list of step sizes in [0, 1], got {line_search!r}")
    return tuple(steps)


def _check_model(model):
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    devices = {t.device.type for t in model.parameters()} | {t.device.type for t in model.buffers()}
    unsupported = devices - set(SUPPORTED_DEVICES)
    if unsupported:
        raise ValueError(f"model is on an unsupported device {sorted(unsupported)}; "
                         f"move it to one of {SUPPORTED_DEVICES} first")


def _check_finite_weights(params, w, layout):
    if not np.isfinite(w).all():
        bad = [pp.name for pp, sl in layout.slices() if not np.isfinite(w[sl]).all()]
        raise ValueError(f"model has non-finite weights (NaN or inf) in {bad}: nothing sensible can be pruned")


def resolve_gradient_term(gradient_term, loss, default):
    """``gradient_term`` or, if None, ``default`` where the loss's Fisher rows are its gradients (rows from
    sampled targets average to noise, not to the loss gradient); True with such rows is refused."""
    if gradient_term is None:
        return bool(default and loss.rows_are_gradients)
    if gradient_term and not loss.rows_are_gradients:
        raise ValueError(f"gradient_term=True needs Fisher rows that are the loss's gradients, but "
                         f"{loss.description} draws its rows from sampled targets; leave gradient_term unset")
    return bool(gradient_term)


def _budget(sparsity, p):
    return int(np.floor((1.0 - sparsity) * p + 1e-9))


def _finish(model, params, layout, w, keep, *, pattern, mask, report, recompute_batchnorm, t_start):
    """Write ``w`` restricted to ``keep`` into ``model`` (atomically, BatchNorm re-estimation included) and
    complete ``report``."""
    if not pattern.holds(keep, layout.offsets, [pp.shape for pp in params]):
        raise RuntimeError(f"internal error: the result does not satisfy pattern='{pattern}'; model unchanged")
    then = None if recompute_batchnorm is None else (lambda m: _recompute_batchnorm(m, recompute_batchnorm))
    write_weights_atomic(model, params, layout.split(w * keep), layout.split(keep), mask=mask, then=then)
    report.layers = [LayerReport(p.name, tuple(p.shape), e - s, int(keep[s:e].sum()))
                     for p, (s, e) in zip(params, layout.offsets)]
    report.time_total = time.perf_counter() - t_start
    logger.info("pruned to sparsity %.4f with %s in %.2fs", report.sparsity, report.method, report.time_total)
    return report


def _select(model, targets, ignore, pattern):
    params = select_parameters(model, targets=targets, ignore=ignore)
    pattern.check_params(params)
    return params, ParamLayout(params)


def magnitude_keep(w, slices, sparsity, scope="global", pattern=None, shapes=None):
    """Boolean support of magnitude pruning: global top-k of ``|w|``, per-layer top-``k_l``, or the
    ``pattern``'s projection of ``|w|`` (N:M, channels; ``shapes`` gives each layer's row length)."""
    if pattern is not None and pattern.structured:
        return pattern_keep(pattern, np.abs(w), slices, shapes, sparsity)
    blocks = make_blocks(slices)
    if scope == "global":
        return allocate_budgets(blocks, np.abs(w), k=_budget(sparsity, w.size))[1]
    return allocate_budgets(blocks, np.abs(w), per_layer=layer_budgets(slices, sparsity))[1]


def magnitude_prune(model, sparsity=None, *, scope="global", pattern=None, targets=DEFAULT_TARGETS,
                    ignore=DEFAULT_IGNORE, mask=True, recompute_batchnorm=None):
    """Magnitude pruning (MP): keep the ``k = ⌊(1 − s)p⌋`` largest ``|w̄_j|`` (per layer if layerwise), or
    the largest of every group of the ``pattern`` (``"2:4"``: top-2 of every 4; ``"channel"``: rows)."""
    t_start = time.perf_counter()
    pattern = Pattern.parse(pattern)
    sparsity = _check_sparsity(pattern.sparsity(sparsity))
    _check_choice("scope", scope, SCOPES)
    _check_model(model)
    params, layout = _select(model, targets, ignore, pattern)
    w = layout.gather(np.float64)
    _check_finite_weights(params, w, layout)
    keep = magnitude_keep(w, layout.offsets, sparsity, scope, pattern, [pp.shape for pp in params])
    report = PruneReport("magnitude", sparsity, settings={"scope": scope, "pattern": str(pattern)})
    return _finish(model, params, layout, w, keep, pattern=pattern, mask=mask, report=report,
                   recompute_batchnorm=recompute_batchnorm, t_start=t_start)


def _stage_constraint(pattern, s_t, sparsity, scope, blocks, slices, shapes, scores):
    """``(budgets, keep0, projections)`` of one stage: the screening support and, for patterned stages, one
    projection per block.  N:M stages below the target sparsity are unstructured (the ramp of CHITA++)."""
    if pattern.kind == "nm" and s_t < sparsity - 1e-12:
        pattern = Pattern.parse(None)
    if not pattern.structured:
        if scope == "global":
            budgets, keep0 = allocate_budgets(blocks, scores, k=_budget(s_t, scores.size))
        else:
            budgets, keep0 = allocate_budgets(blocks, scores, per_layer=layer_budgets(slices, s_t))
        return budgets, keep0, None
    rows = [row_length(shape) for shape in shapes]
    projections = [pattern.projection(start, end, rows[li], 1.0 - s_t) for start, end, li in blocks]
    keep0 = np.zeros(scores.size, dtype=bool)
    for (start, end, _), projection in zip(blocks, projections):
        keep0[start:end] = l0reg.projection_mask(projection, scores[start:end])
    return [int(keep0[s:e].sum()) for s, e, _ in blocks], keep0, projections


def prune(model, data, recipe=None, *, progress=False, **deprecated):
    """Prune ``model`` in place as ``recipe`` says and return a :class:`PruneReport`.

    Parameters
    ----------
    model : nn.Module on CPU or CUDA
    data : ``(X, y)``, a TensorDataset, a DataLoader or any iterable of batches (tensors, tuples, dicts /
        Hugging Face ``BatchEncoding``): the calibration data (unused by :class:`~.recipe_types.Magnitude`).
    recipe : a recipe of :mod:`chita_nn.methods.recipe_types`
        The method and its options, checked when the recipe was built: ``Magnitude``, ``CHITA``,
        ``CHITAPlusPlus`` (the empirical-Fisher methods), ``LayerwiseCHITA``, ``SparseGPT``, ``Wanda`` (layer by
        layer, :func:`chita_nn.methods.layerwise.prune_layerwise`).
    progress : bool
        A progress bar (CHITA++ stages, layer-wise blocks).

    The call form of earlier releases, ``prune(model, data, sparsity, method="chita++", n_rows=..., ...)``, still
    works for one release with a ``DeprecationWarning`` naming the recipe to use instead; an option that the
    method does not have is a ``TypeError`` there too.
    """
    from .recipe_types import PruneRecipe, legacy_recipe

    if isinstance(recipe, PruneRecipe):
        if deprecated:
            raise TypeError(f"prune(model, data, recipe) takes the options in the recipe, got "
                            f"{', '.join(sorted(deprecated))}: {type(recipe).__name__}(..., "
                            f"{sorted(deprecated)[0]}=...)")
        return recipe.run(model, data, progress=progress)
    recipe, old = legacy_recipe(recipe, deprecated)
    warnings.warn(f"{old} is deprecated and will be removed in the next release: use "
                  f"prune(model, data, {recipe!r}) (from chita_nn import {type(recipe).__name__})",
                  DeprecationWarning, stacklevel=2)
    return recipe.run(model, data, progress=progress)


def fisher_prune(model, data, recipe, *, n_stages, hold_stages, schedule, stage_max_iter=None, progress=False):
    """CHITA (one stage) or CHITA++ for a :class:`~.recipe_types.CHITA` / ``CHITAPlusPlus`` recipe (its options
    checked when it was built): ``hold_stages`` None is ``n_stages // 5`` with the gradient term, else 0;
    ``stage_max_iter`` the solver's ``max_iter`` unless ``solver_options`` set it."""
    t_start = time.perf_counter()
    method, pattern, sparsity = recipe.method, Pattern.parse(recipe.pattern), recipe.sparsity
    sparsity = pattern.sparsity(sparsity)
    scope, block_size, targets, ignore, score = (recipe.scope, recipe.block_size, recipe.targets, recipe.ignore,
                                                 recipe.score)
    if pattern.kind == "channel":
        scope, block_size = "layerwise", "layer"
    _check_model(model)
    seed, n_rows, samples_per_row, lam = recipe.seed, recipe.n_rows, recipe.samples_per_row, recipe.lam
    calibration = Calibration(data, "data")
    if samples_per_row is None:
        n_rows = min(n_rows, calibration.max_rows(1))
        samples_per_row = max(1, min(DEFAULTS["samples_per_row"], calibration.n_samples // n_rows))
        while calibration.max_rows(samples_per_row) < n_rows:
            samples_per_row -= 1
    loss = as_loss(recipe.loss_fn).bind(model)
    gradient_term = resolve_gradient_term(recipe.gradient_term, loss, DEFAULTS["gradient_term"])
    gradient = gradient_weight(gradient_term, samples_per_row)
    if hold_stages is None:  # without the gradient term a stage at an unchanged sparsity has nothing to do
        hold_stages = n_stages // 5 if gradient_term else 0
    options = {**DEFAULTS["solver_options"], **(recipe.solver_options or {})}
    if stage_max_iter is not None:
        options.setdefault("max_iter", stage_max_iter)
    steps = _check_steps(recipe.line_search)
    loss_samples, max_bytes = recipe.loss_samples, recipe.max_bytes
    params, layout = _select(model, targets, ignore, pattern)
    slices, shapes = layout.offsets, [pp.shape for pp in params]
    p = layout.p
    w = layout.gather(np.float64)
    _check_finite_weights(params, w, layout)

    work = WorkingCopy(model, lambda m: _select(m, targets, ignore, pattern))
    start = float(np.mean(w == 0.0))
    ramp = n_stages - hold_stages
    stages = [sparsity] if start >= sparsity else sparsity_schedule(sparsity, ramp, schedule, start=start)
    stages += [sparsity] * hold_stages
    global_solve = block_size is None and scope == "global"
    if global_solve:  # one solve over all p weights: A + solver, checked before A
        calibration.rows(n_rows, samples_per_row, seed)  # enough data for the rows? (its error comes first)
        solve_bytes = max(check_global_solve_memory(n_rows, p, k_t, max_bytes=max_bytes)
                          for k_t in sorted({_budget(s_t, p) for s_t in stages}))
    align = pattern.m if pattern.kind == "nm" else 1
    if global_solve:
        blocks = [(0, p, 0)]
    else:
        blocks = make_blocks(slices, None if block_size in (None, "layer") else block_size, align=align)
    probe = LossProbe(work.model, calibration, min(calibration.n_samples, loss_samples), loss, seed) if steps else None
    report = PruneReport(method, sparsity, settings=dict(
        n_rows=n_rows, samples_per_row=samples_per_row, lam=lam, gradient_term=gradient_term,
        n_stages=len(stages), hold_stages=hold_stages, schedule=schedule, scope=scope, block_size=block_size,
        score=score, line_search=list(steps), seed=seed, pattern=str(pattern), loss=loss.description))

    A = None
    predicted = [0.0] * len(stages)  # seconds of each global solve, forecast at the first stage
    for t, s_t in enumerate(tqdm(stages, desc=f"{method} stages", disable=not progress, leave=False)):
        t0 = time.perf_counter()
        fisher = empirical_fisher(work.model, work.params, calibration, n_rows=n_rows, samples_per_row=samples_per_row,
                                  loss_fn=loss, out=A, max_bytes=max_bytes, seed=seed + t)
        A = fisher.A
        if not np.isfinite(fisher.grad).all():
            raise ValueError(f"stage {t + 1}: the loss gradient is not finite (NaN or inf); model unchanged")
        t_read = time.perf_counter()
        col_sq = l0reg.column_norms_sq(A)  # one read of A for the curvature check and the screening score
        if global_solve and t == 0:  # that read times the solve's steps
            predicted = forecast_global_solve(
                time.perf_counter() - t_read, n_rows=n_rows, samples_per_row=samples_per_row, p=p,
                budgets=[_budget(s, p) for s in stages], memory_bytes=solve_bytes, max_iter=options.get("max_iter"),
                fisher_seconds=t_read - t0)
        check_curvature(col_sq, n_rows, w, report, t + 1)
        report.settings["rows"] = "per-sample" if fisher.per_sample else "mini-batch (batch-mean loss)"
        t_grad = time.perf_counter() - t0
        scores = screening_scores(w, score, col_sq)
        budgets, keep0, projections = _stage_constraint(pattern, s_t, sparsity, scope, blocks, slices, shapes,
                                                        scores)
        b = rhs(A, w, gradient)
        w0 = w * keep0
        keep_mp = magnitude_keep(w, slices, s_t, scope, pattern if projections else None, shapes)
        w_mp = w * keep_mp
        # Blocks share the gradient term by their part of the Fisher trace: their steps add up to one Newton step.
        shares = gradient * gradient_shares(blocks, col_sq) if len(blocks) > 1 else gradient
        with solve_progress(options, predicted[t], progress) as stage_options:
            solution = solve_blocks(A, w, blocks, budgets, gradient=shares, lam=lam,
                                    w_init=w0, solver_options=stage_options, projections=projections)
        w_star, keep, t_solve = solution
        w_star *= keep
        refit = (solution.objective_start if solution.w_start is None
                 else l0reg.objective(A, b, solution.w_start, lam=lam, w_bar=w))
        objective = (solution.objective if np.isfinite(solution.objective)
                     else l0reg.objective(A, b, w_star, lam=lam, w_bar=w))
        stage = StageReport(s_t, int(keep.sum()), l0reg.objective(A, b, w_mp, lam=lam, w_bar=w), objective,
                            time_gradients=t_grad, time_solve=t_solve, objective_refit=refit,
                            overlap=float((keep & keep_mp).sum() / max(1, keep_mp.sum())))
        w, keep = step_search(work.put, probe, w, w_star, keep, (w_mp, keep_mp), steps, stage)
        report.stages.append(stage)
        report.time_gradients += t_grad
        report.time_solve += t_solve
        logger.info("stage %d/%d: sparsity %.4f, objective %.6g -> %.6g, %s%s", t + 1, len(stages), s_t,
                    stage.objective_start, stage.objective, describe_kept(stage.kept),
                    f", loss {stage.train_loss:.4g}" if steps else "")  # no loss measured without a line search
    report_fallbacks(report)
    return _finish(model, params, layout, w, keep, pattern=pattern, mask=recipe.mask, report=report,
                   recompute_batchnorm=recipe.recompute_batchnorm, t_start=t_start)

