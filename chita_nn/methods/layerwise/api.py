"""``prune_layerwise``: one-shot pruning by layer-wise reconstruction, block by block (SparseGPT's setting).

Every selected ``Linear`` (or Hugging Face ``Conv1D``) of rows W̄ (r × p) is pruned to keep its outputs on
the calibration data: with X its inputs (all tokens, padding excluded) and ``H = XᵀX / n``, the methods
minimise (CHITA, SparseGPT) or heuristically reduce (Wanda, magnitude) ``tr((W̄ − W) H (W̄ − W)ᵀ)`` under
the layer's budget.  The model's repeated blocks are processed in order: block l's layers see the outputs
of the already pruned blocks before it (sequential pruning), from hidden states cached at block 0 and
pushed through each pruned block in turn.  Layers outside the blocks (and every layer of a model without
repeated blocks) are pruned afterwards one at a time, each from a forward pass of the partly pruned model
that stops at the layer.  Nothing is left changed if anything fails.  With ``checkpoint_dir`` every finished
block (and layer outside the blocks) is checkpointed, and a call stopped anywhere resumes from there with the
same result bit for bit (:mod:`.resume`).
"""
import logging
import math
import time
from contextlib import contextmanager

import torch
from tqdm.auto import tqdm

from ...core.batches import Calibration, forward
from ...core.data_checks import check_inputs
from ...core.params import DEFAULT_IGNORE, select_parameters
from ...core.patterns import Pattern
from ...core.report import LayerReport, PruneReport
from ...core.runtime import eval_mode, model_device
from ...core.writeback import write_weights_atomic
from .blocks import capture, find_blocks, iterate_inputs, run_block, token_mask
from .budget import Budget
from .chita import chita, penalty_path_eigh
from .damping import corrected_target
from .error import relative_error
from .gram_hooks import GramCollector, StopForward
from .magnitude import magnitude
from .options import check_solver_options
from .owl import outlier_ratio, owl_sparsities
from .resume import BLOCK, LAYER, Checkpoints, fingerprint, restored_report
from .sparsegpt import inverse_cholesky, sparsegpt
from .wanda import wanda
from .weights import SUPPORTED, Snapshot, as_stored, install, kind, rows

logger = logging.getLogger(__name__)

#: method name -> function ``(W̄, H, budget, **options) -> (W, keep)`` on rows (float64).
METHODS = {"chita": chita, "sparsegpt": sparsegpt, "wanda": wanda, "magnitude": magnitude}
#: Factorisations of H that a method reads (keyword -> function of ``(H, dampening)``), computed once per H and
#: shared by the layers with the same inputs (q/k/v, gate/up).
_FACTORIZATIONS = {"factor": inverse_cholesky, "eig": penalty_path_eigh}
_FACTORS = {"chita": ("factor", "eig"), "sparsegpt": ("factor",)}
BUDGETS = ("uniform", "owl")


def _factors(method, solver_options):
    """The factorisations ``method`` reads: chita's penalty path (and so its eigendecomposition) is not run when
    ``solver_options`` gives the start."""
    return tuple(name for name in _FACTORS.get(method, ()) if not (name == "eig" and "start" in solver_options))
#: Default targets: every Linear (and GPT-2's Conv1D); the output head stays dense (``DEFAULT_IGNORE``).
LAYERWISE_TARGETS = SUPPORTED


def prune_layerwise(model, data, sparsity=None, *, method="chita", pattern=None, targets=LAYERWISE_TARGETS,
                    ignore=DEFAULT_IGNORE, dampening=0.01, budgets="uniform", owl_threshold=5.0, owl_lambda=0.08,
                    per_row=True, block_size=128, gram_dtype=torch.float64, solver_options=None,
                    error_correction=False, progress=False, mask=True, checkpoint_dir=None, resume=True):
    """Prune ``model`` in place by layer-wise reconstruction on the calibration ``data``; returns a
    :class:`PruneReport` whose layers carry ``reconstruction_error`` (relative, on the calibration inputs).

    Parameters
    ----------
    data : (X, y), TensorDataset, DataLoader or iterable of batches (tensors, tuples, dicts / BatchEncoding)
        Calibration inputs (targets are ignored), e.g. 32–128 token sequences; all of it is used.
    sparsity : float in [0, 1)
        Fraction of the weights of every layer pruned (None with an N:M pattern).
    method : 'chita', 'sparsegpt', 'wanda' or 'magnitude'
        'chita': :func:`l0reg.solve_gram` safeguarded by SparseGPT and Wanda (never worse than either).
    pattern : None / 'unstructured', or 'N:M' such as '2:4' or '4:8'
        N:M keeps n of every m consecutive weights of each row (along the input dimension).
    targets, ignore : see :func:`chita_nn.select_parameters` (only Linear / Conv1D layers are supported).
    dampening : float ≥ 0
        ``λ = dampening · mean(diag H)``: SparseGPT's dampening, CHITA's ridge.
    budgets : 'uniform' or 'owl'
        Same sparsity in every layer, or OWL's outlier-weighted sparsities per block (``owl_threshold`` M,
        ``owl_lambda`` the half-spread), averaging to ``sparsity``.
    per_row : bool
        Every row keeps the same number of weights (as SparseGPT and Wanda), or the whole layer shares its
        budget.
    block_size : int
        Columns per lazy-update block of the SparseGPT sweep.
    gram_dtype : torch dtype
        Precision of the ``XᵀX`` products (summed in float64).
    solver_options : dict, optional
        Keyword arguments of :func:`l0reg.solve_gram` (``max_iter``, ``swaps``, ...) for 'chita', over its
        defaults here (``chita.SOLVER_DEFAULTS``: 6 IHT steps, no swaps).
    error_correction : bool
        Inside the repeated blocks, fit the dense model's outputs from the pruned model's inputs,
        ``min ‖X_d W̄ᵀ − X_p Wᵀ‖²`` (``X_d``: the layer's inputs in the dense model, ``X_p``: in the model pruned
        so far), instead of ``‖X_p (W̄ − W)ᵀ‖²``: the layer then also corrects the error of the blocks before
        it.  Equivalently each method prunes ``W*`` of ``(H + λI) W*ᵀ = (G + λI) W̄ᵀ`` (``G = X_pᵀX_d / n``)
        under ``H`` (:func:`~.damping.corrected_target`).
    progress : bool
        A tqdm bar over blocks.
    mask : bool
        Install ``torch.nn.utils.prune`` masks (``weight_mask``), or only write the zeros.
    checkpoint_dir : str or Path, optional
        A folder (created if needed) where every finished block, and every layer pruned outside the blocks, is
        checkpointed as it finishes (:mod:`.resume`: atomic files with a checksum, one per block).  A call that
        stops anywhere (killed, a failure) resumes from there when called again with the same folder: the result
        is bit-identical to an uninterrupted run's (with the same torch thread count).  The files stay after
        the call; delete the folder when done.
    resume : bool
        With ``checkpoint_dir``: continue from the checkpoints in it (none: start from the first block), refusing
        them (``ValueError`` naming the difference) if they were written with other settings, calibration data
        or model; ``False`` deletes them and starts over.
    """
    t_start = time.perf_counter()
    parsed, sparsity = _check_arguments(method, pattern, sparsity, budgets, dampening, per_row, block_size,
                                        owl_threshold, owl_lambda, error_correction)
    solver_options = check_solver_options(solver_options, method)
    calibration = Calibration(data, "data")
    check_inputs(model, calibration)
    params = _select(model, targets, ignore, parsed)
    report = PruneReport(method=f"layerwise-{method}", target_sparsity=sparsity, settings=dict(
        method=method, pattern=str(parsed), dampening=dampening, budgets=budgets, per_row=per_row,
        block_size=block_size, calibration_samples=calibration.n_samples, solver_options=solver_options,
        error_correction=error_correction))
    if budgets == "owl":
        report.settings.update(owl_threshold=owl_threshold, owl_lambda=owl_lambda)
    store = None
    if checkpoint_dir is not None:
        if not isinstance(resume, bool):
            raise ValueError(f"resume must be True or False, got {resume!r}")
        settings = dict(report.settings, sparsity=sparsity, gram_dtype=str(gram_dtype),
                        layers=[pp.name for pp in params])
        store = Checkpoints(checkpoint_dir, fingerprint(settings, calibration, model), model_device(model), resume)
    run = _Run(model, calibration, METHODS[method], dict(
        dampening=dampening, block_size=block_size, solver_options=solver_options),
        _factors(method, solver_options), gram_dtype, report, error_correction, store)
    snapshot = Snapshot(model, params)
    try:
        with eval_mode(model), _no_cache(model), torch.no_grad():
            groups, outside = _plan(model, params, calibration, run)
            sparsities = _layer_sparsities(groups, outside, sparsity, budgets, owl_threshold, owl_lambda, run)
            budget_of = {pp.name: Budget(sparsities[pp.name], per_row or parsed.structured, parsed.n or 0,
                                         parsed.m or 0) for pp in params}
            if groups:
                run.blocks(groups, budget_of, progress)
            for index, pp in enumerate(tqdm(outside, desc="layers", disable=not progress or not outside)):
                run.alone(index, pp, budget_of[pp.name])
            write_weights_atomic(model, params, [pp.parameter.detach() for pp in params],
                                 [as_stored(pp, run.keeps[pp.name]) for pp in params], mask=mask)
    except BaseException:
        snapshot.restore()
        logger.warning("layer-wise pruning failed; the model is restored to its state before the call")
        raise
    report.layers = [run.layers[pp.name] for pp in params]
    report.time_total = time.perf_counter() - t_start
    logger.info("layer-wise %s: sparsity %.4f, mean relative error %.4g, %.1fs", method, report.sparsity,
                sum(layer.reconstruction_error for layer in report.layers) / len(report.layers),
                report.time_total)
    return report


def _check_arguments(method, pattern, sparsity, budgets, dampening, per_row, block_size, owl_threshold,
                     owl_lambda, error_correction):
    """``(Pattern, sparsity)`` after validating every scalar argument (``ValueError`` naming it)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    parsed = Pattern.parse(pattern)
    if parsed.kind == "channel":
        raise ValueError("pattern='channel' is not supported by layer-wise pruning; use None or 'N:M'")
    sparsity = parsed.sparsity(sparsity)
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must be a number in [0, 1), got {sparsity!r}")
    if budgets not in BUDGETS:
        raise ValueError(f"budgets must be one of {BUDGETS}, got {budgets!r}")
    if budgets == "owl" and parsed.structured:
        raise ValueError(f"budgets='owl' needs an unstructured pattern (N:M fixes every layer's sparsity), "
                         f"got pattern='{parsed}'")
    for name, value, low in (("dampening", dampening, 0.0), ("owl_threshold", owl_threshold, 0.0),
                             ("owl_lambda", owl_lambda, 0.0)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or value < low:
            raise ValueError(f"{name} must be a finite number >= {low}, got {value!r}")
    if not isinstance(per_row, bool):
        raise ValueError(f"per_row must be True or False, got {per_row!r}")
    if not isinstance(error_correction, bool):
        raise ValueError(f"error_correction must be True or False, got {error_correction!r}")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")
    return parsed, float(sparsity)


def _select(model, targets, ignore, parsed):
    """The selected parameters; ``ValueError`` for unsupported layer types and N:M-incompatible widths."""
    params = select_parameters(model, targets=targets, ignore=ignore)
    unsupported = [f"{pp.name} ({type(pp.module).__name__})" for pp in params if kind(pp) is None]
    if unsupported:
        raise ValueError(f"layer-wise pruning supports {SUPPORTED} layers; targets also selected "
                         f"{', '.join(unsupported)}: narrow targets or add them to ignore")
    if parsed.structured:
        for pp in params:
            width = rows(pp).shape[1]
            if width % parsed.m:
                raise ValueError(f"pattern='{parsed}' needs layers whose input width is a multiple of {parsed.m}, "
                                 f"but {pp.name} has {width} inputs; leave it out with ignore=[{pp.module_name!r}]")
    return params


def _plan(model, params, calibration, run):
    """``(groups, outside)``: ``[(block, [params in it])]`` for the repeated blocks (empty when there are
    none or they cannot be run one by one) and the other parameters."""
    found = find_blocks(model)
    if found is None:
        return [], list(params)
    prefix, blocks = found
    members = [[pp for pp in params if pp.module_name.startswith(f"{prefix}.{i}.")] for i in range(len(blocks))]
    if not any(members):
        return [], list(params)
    try:
        run.calls = capture(model, blocks, calibration, run.device)
    except ValueError as err:
        logger.warning("%s (%s); pruning layer by layer from full forward passes instead", err, prefix)
        return [], list(params)
    inside = {pp.name for group in members for pp in group}
    run.report.settings["blocks"] = f"{prefix} ({len(blocks)})"
    return list(zip(blocks, members)), [pp for pp in params if pp.name not in inside]


def _layer_sparsities(groups, outside, sparsity, budgets, threshold, lambda_, run):
    """``{name: sparsity}``: uniform, or OWL per block (per layer without blocks; ``outside`` layers of a
    blocked model keep ``sparsity``)."""
    members = [layers for _, layers in groups if layers] or [[pp] for pp in outside]
    sparsities = {pp.name: sparsity for layers in members for pp in layers}
    sparsities.update({pp.name: sparsity for pp in outside})
    if budgets == "owl":
        norms = run.column_norms([pp for layers in members for pp in layers])
        ratios = [outlier_ratio([rows(pp).double() for pp in layers], [norms[pp.name] for pp in layers], threshold)
                  for layers in members]
        for layers, value in zip(members, owl_sparsities(ratios, sparsity, lambda_)):
            sparsities.update({pp.name: value for pp in layers})
        run.report.settings["owl_sparsities"] = owl_sparsities(ratios, sparsity, lambda_)
    return sparsities


@contextmanager
def _no_cache(model):
    """``config.use_cache = False`` on every (Hugging Face) config of the model while open."""
    configs = {id(m.config): m.config for m in model.modules()
               if getattr(getattr(m, "config", None), "use_cache", None) is not None}
    saved = {key: config.use_cache for key, config in configs.items()}
    for config in configs.values():
        config.use_cache = False
    try:
        yield
    finally:
        for key, config in configs.items():
            config.use_cache = saved[key]


class _Run:
    """State of one call: the calibration inputs, the pruning of each layer and its report."""

    def __init__(self, model, calibration, prune_rows, options, factors, gram_dtype, report, correction, store):
        self.model, self.calibration, self.prune_rows, self.options = model, calibration, prune_rows, options
        self.factors, self.gram_dtype, self.report, self.correction = factors, gram_dtype, report, correction
        self.device = model_device(model)
        self.calls, self.keeps, self.layers = None, {}, {}
        self.store = store
        self.resuming = store is not None  # until the first unit without a checkpoint

    def _saved(self, kind, index):
        """The checkpointed state of unit ``index`` of ``kind`` (a block, a layer outside the blocks) if an
        earlier run finished it and every unit before it, else None."""
        state = self.store.load(kind, index) if self.resuming else None
        self.resuming = state is not None
        return state

    def _restore(self, layers, state):
        """Install the pruned rows of a checkpointed unit, with their masks and reports."""
        for pp in layers:
            install(pp, state["weights"][pp.name])
            self.keeps[pp.name] = state["keeps"][pp.name]
            self.layers[pp.name] = restored_report(state["layers"][pp.name])

    def _finished(self, kind, index, layers):
        """Checkpoint unit ``index`` of ``kind`` (if there is a checkpoint folder)."""
        if self.store is not None:
            self.store.save(kind, index, layers, self.keeps, self.layers)

    def _forward_all(self, collector):
        """Every calibration batch through the whole model (stopped early by the collector if it says so)."""
        for inputs in iterate_inputs(self.calibration, self.device):
            collector.batch(token_mask(inputs))
            try:
                forward(self.model, inputs)
            except StopForward:
                pass

    def column_norms(self, params):
        """``{name: diag H}`` of ``params`` from one pass of the dense model."""
        with GramCollector({pp.name: pp.module for pp in params}, dtype=self.gram_dtype, diagonal=True) as c:
            self._forward_all(c)
        return {pp.name: c.gram(pp.name) for pp in params}

    def blocks(self, groups, budget_of, progress):
        """Prune the blocks in order, each on the outputs of the pruned blocks before it (and, with error
        correction, towards the dense model's outputs, carried along as ``dense`` hidden states)."""
        dense = list(self.calls) if self.correction else None
        for index, (block, layers) in enumerate(tqdm(groups, desc="blocks", disable=not progress)):
            saved = self._saved(BLOCK, index)
            if layers and saved is None:
                t0 = time.perf_counter()
                with GramCollector({pp.name: pp.module for pp in layers}, dtype=self.gram_dtype,
                                   cross=self.correction) as collector:
                    for i, call in enumerate(self.calls):
                        collector.batch(call.token_mask)
                        if dense is not None:
                            reference = dense[i]
                            dense[i] = reference.with_hidden(collector.reference(lambda: run_block(block, reference)))
                        run_block(block, call)
                self.report.time_gradients += time.perf_counter() - t0
                self._prune(layers, collector, budget_of)
                logger.info("block %d/%d: %d layers, relative errors %s", index + 1, len(groups), len(layers),
                            ", ".join(f"{self.layers[pp.name].reconstruction_error:.3g}" for pp in layers))
            elif dense is not None:  # the dense block's outputs, as the reference pass computes them
                dense = [call.with_hidden(run_block(block, call)) for call in dense]
            if saved is None:
                self._finished(BLOCK, index, layers)
            else:  # after the dense pass above: the block's pruned outputs are computed below, as when pruned
                self._restore(layers, saved)
            if index + 1 < len(groups):
                t0 = time.perf_counter()
                self.calls = [call.with_hidden(run_block(block, call)) for call in self.calls]
                self.report.time_gradients += time.perf_counter() - t0
        self.calls = None

    def alone(self, index, pp, budget):
        """Prune layer ``index`` outside the blocks from full forward passes of the model pruned so far."""
        saved = self._saved(LAYER, index)
        if saved is not None:
            self._restore([pp], saved)
            return
        t0 = time.perf_counter()
        with GramCollector({pp.name: pp.module}, dtype=self.gram_dtype, stop_when_done=True) as collector:
            self._forward_all(collector)
        self.report.time_gradients += time.perf_counter() - t0
        self._prune([pp], collector, {pp.name: budget})
        self._finished(LAYER, index, [pp])

    def _prune(self, layers, collector, budget_of):
        """Prune ``layers`` from their Gram matrices and install the new weights (masks at the very end)."""
        t0 = time.perf_counter()
        shared = {}
        for pp in layers:
            H = collector.gram(pp.name)
            owner = collector.owner[pp.name]
            if owner not in shared:
                shared[owner] = {name: _FACTORIZATIONS[name](H, self.options["dampening"]) for name in self.factors}
            W_bar = rows(pp).to(torch.float64)
            if collector.cross:
                W_bar = corrected_target(W_bar, H, collector.cross_gram(pp.name), self.options["dampening"])
            W, keep = self.prune_rows(W_bar, H, budget_of[pp.name], **shared[owner], **self.options)
            install(pp, W.to(pp.parameter.dtype))
            self.keeps[pp.name] = keep
            self.layers[pp.name] = LayerReport(pp.name, tuple(pp.shape), pp.numel, int(keep.sum()),
                                               relative_error(W_bar, W, H))
        self.report.time_solve += time.perf_counter() - t0
