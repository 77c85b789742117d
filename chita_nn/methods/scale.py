"""Memory-bounded block-mode CHITA for networks whose Fisher matrix ``A`` (``n × p``) does not fit in memory.

The Fisher is approximated by its block diagonal over column blocks ``B`` (see :mod:`chita_nn.methods.blocks`), so only
one ``A_B`` (``n × p_B``) is ever needed in float32 at a time.  The pipeline:

1. **plan**: bytes needed in RAM and in the block store are predicted (:func:`plan_memory`); a ``MemoryError`` is
   raised before anything large is allocated if they exceed ``max_bytes`` (default 80% of the available memory)
   or the free space of the store folder;
2. **gradients**: Fisher rows are computed ``chunk_rows`` at a time with :func:`chita_nn.core.fisher.empirical_fisher`
   into a ``chunk_rows × p`` float32 buffer and streamed to one file per block, float16 with a per-row scale
   (``A_B[i] = s_i Q_B[i]``, ``s_i = max_j |A_B[i, j]|``) or float32; the column norms ``‖A_{:,j}‖²`` used by
   the screening score ``w̄_j² ‖A_{:,j}‖²`` are accumulated exactly on the way;
3. **solve**: budgets ``k_B`` (or, with a ``pattern``, one projection per block) from the screening score, then
   one l0reg problem per block,
   ``min ½‖A_B w̄_B − γ_B e − A_B w‖² + (nλ/2)‖w − w̄_B‖²`` s.t. ``‖w‖₀ ≤ k_B``, one after another or in
   ``workers`` processes (each reads its own block).  The gradient term is split over the blocks,
   ``γ_B = γ ‖A_B‖²_F / ‖A‖²_F`` (:func:`gradient_shares`): with ``n < p_B`` every block alone can fit the whole
   Newton target ``A_B d_B = −γ e``, so the full ``γ`` in every block made the summed step
   ``A d = Σ_B A_B d_B`` about ``#blocks`` times the Newton step (ResNet18, 122 blocks: outputs 10¹⁶ times
   their size);
4. **safeguard**: the step search of :mod:`chita_nn.methods.safeguard` on the loss of ``loss_samples``
   calibration samples picks ``w(α) = P_S(w̄) + α (w* − P_S(w̄))`` or magnitude pruning;
5. **write-back** of the chosen weights as ``torch.nn.utils.prune`` masks (the model is untouched before).

The store folder is a disk folder (``store_dir``) or, by default, a RAM-backed one under ``/dev/shm``; either
way blocks are read and written with plain file I/O, so they never inflate the process RSS.
"""
import concurrent.futures
import logging
import multiprocessing
import numbers
import resource
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..core.batches import Calibration, forward, split, to_device
from ..core.fisher import (
    DEFAULT_MEMORY_FRACTION,
    available_memory_bytes,
    empirical_fisher,
)
from ..core.losses import as_loss
from ..core.params import DEFAULT_IGNORE, DEFAULT_TARGETS
from ..core.patterns import Pattern
from ..core.report import PruneReport, StageReport
from ..core.runtime import eval_mode, model_device
from . import _scale_worker
from .blocks import gradient_shares, gradient_weight, make_blocks
from .oneshot import (
    DEFAULTS,
    _check_finite_weights,
    _check_lam,
    _check_model,
    _check_positive_int,
    _check_sparsity,
    _check_steps,
    _finish,
    _select,
    _stage_constraint,
    magnitude_keep,
    resolve_gradient_term,
)
from .safeguard import LossProbe, WorkingCopy, check_curvature, report_fallbacks, step_search

logger = logging.getLogger(__name__)

STORE_DTYPES = {"float16": np.float16, "float32": np.float32}
#: Block mode's default for the gradient term: off.  The Newton step of a block-diagonal Fisher estimated from
#: few rows overshoots even when split over the blocks (:func:`gradient_shares`): on ResNet18 and
#: MobileNetV3-small (benchmarks/block_safeguard.py) it moved the outputs 4.4 and 19.5 times their size where
#: magnitude pruning moves them 0.10 and 0.38.
BLOCK_GRADIENT_TERM = False
RAM_STORE_ROOT = "/dev/shm"
# float64 / bool vectors of length p the main process holds through the run (w̄, the column norms, keep0, the
# solution w and keep, the magnitude support).
_VECTOR_BYTES_PER_WEIGHT = 3 * 8 + 3
# The solver's working memory on an n × p_B block beyond the float32 copy of A_B (and the stored block being read),
# per entry and per column (measured on ResNet20 and MLPs, 64 to 256 rows x 270k-300k: about 0 per entry, 0-150 bytes
# per column:
# w̄_B, w_init, w_mp, w, the refit, the screening and gradient vectors, in float64), and a worker process's own
# footprint (interpreter, numba, numpy; torch too when the main script imports it).
_SOLVER_BYTES_PER_ENTRY = 0
_SOLVER_BYTES_PER_COLUMN = 64
_WORKER_BASE_BYTES = 512 * 2 ** 20


def _proc_status_bytes(key):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"{key} not found in /proc/self/status")


def _peak_rss_reset():
    """Reset the kernel's peak-RSS counter (VmHWM) of this process, where Linux allows it."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def peak_rss_bytes():
    """Peak resident set size (VmHWM) of this process, in bytes."""
    return _proc_status_bytes("VmHWM")


def rss_bytes():
    """Current resident set size (VmRSS) of this process, in bytes."""
    return _proc_status_bytes("VmRSS")


@dataclass
class MemoryPlan:
    """Predicted bytes above the RSS at the start of the call: ``ram`` is the peak of the phases (this process
    plus workers, RAM-backed store included), each phase's own bytes are listed; ``store`` the block files.

    ``gradients_bytes``: the ``chunk_rows × p`` buffer, the autograd activations of one chunk, the float32 copy
    and float16 encoding of one block's rows; ``solve_bytes``: per worker the stored block, its float32 copy and
    the solver's working memory; ``safeguard_bytes``: a copy of the model, the step-search candidates and the
    probe's activations (``probe_batch`` samples per forward); ``writeback_bytes``: the saved state dict and the
    masks.  ``process_bytes`` is the part that shows in this process's RSS (neither a RAM-backed store, which
    lives in /dev/shm, nor the workers): compare it with :attr:`ScaleReport.peak_rss_increase`.
    """

    n_rows: int
    p: int
    n_blocks: int
    max_block_columns: int
    store_bytes: int
    store_in_ram: bool
    model_bytes: int
    vector_bytes: int
    gradients_bytes: int
    solve_bytes: int
    safeguard_bytes: int
    writeback_bytes: int
    probe_batch: int
    process_bytes: int
    ram_bytes: int

    def as_dict(self):
        return dict(self.__dict__)


def _layer_sizes(model, sample):
    """Per leaf module, the entries of its input and output for one sample; the largest conv unfold."""
    sizes, unfold = [], [0]

    def hook(module, inputs, output):
        if isinstance(inputs[0], torch.Tensor) and isinstance(output, torch.Tensor):
            sizes.append((inputs[0][:1].numel(), output[:1].numel()))
        if isinstance(module, nn.Conv2d):
            k = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            unfold[0] = max(unfold[0], k * output.shape[-1] * output.shape[-2])

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad(), eval_mode(model):
            forward(model, split(to_device(sample, model_device(model)))[0])
    finally:
        for handle in handles:
            handle.remove()
    return sizes, unfold[0]


def _activations(sizes, unfold, batch):
    """Bytes autograd keeps for a Fisher pass of ``batch`` samples: the layers' inputs and outputs (in-place
    activations share theirs) and twice the largest conv's unfolded input (measured on ResNet20: about 0.8 of
    this)."""
    return 4 * batch * (sum(i + o for i, o in sizes) + 2 * unfold)


def _probe_batch(sizes, unfold, chunk):
    """Samples per forward of the loss probe: as many as keep its no-grad activations (about twice the largest
    layer's input and output per sample: a residual block keeps its input) within those of one Fisher chunk of
    ``chunk`` samples; at least ``chunk``, at most 1000."""
    largest = max(i + o for i, o in sizes)
    return int(min(1000, max(chunk, _activations(sizes, unfold, chunk) // (8 * largest))))


def probe_batch(model, sample, chunk):
    """:func:`_probe_batch` of ``model`` on one ``sample`` batch."""
    return _probe_batch(*_layer_sizes(model, sample), chunk)


def plan_memory(model, layout, blocks, n_rows, *, sample, chunk_rows, samples_per_row, store_dtype, workers,
                store_in_ram, steps=None):
    """Predict the bytes of a :func:`block_prune` run above the RSS at its start (see :class:`MemoryPlan`);
    ``sample`` is one batch of the data (its first sample is run), ``steps`` the number of step-search steps.

    Per phase: gradients ``act + 4cp + 8c·p_B + 8c·p_l + 16p`` (``c = chunk_rows``, ``p_B`` / ``p_l`` the largest
    block / layer), solve ``workers · (n p_B (s + 4) + 64 p_B)`` (``s`` the store's bytes per entry), safeguard
    ``M + 8p (steps + 4) + 8 b ℓ`` (``M`` the model's bytes, ``b`` the probe batch, ``ℓ`` its largest layer
    input + output), write-back ``M + 16p``; plus ``27p`` of vectors held throughout, and the store if in RAM.
    """
    p = layout.p
    steps = len(DEFAULTS["line_search"]) if steps is None else steps
    max_cols = max(end - start for start, end, _ in blocks)
    max_layer = max(end - start for start, end in layout.offsets)
    itemsize = np.dtype(STORE_DTYPES[store_dtype]).itemsize
    store = n_rows * p * itemsize + 4 * n_rows * len(blocks)
    model_bytes = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    sizes, unfold = _layer_sizes(model, sample)
    chunk = chunk_rows * samples_per_row
    # the chunk buffer, its block's float32 / float16 encodings, a layer's per-row gradients, the mean gradient
    gradients = (_activations(sizes, unfold, chunk) + 4 * chunk_rows * p + 8 * chunk_rows * max_cols
                 + 8 * chunk_rows * max_layer + 16 * p)
    per_block = n_rows * max_cols * (itemsize + 4 + _SOLVER_BYTES_PER_ENTRY) + _SOLVER_BYTES_PER_COLUMN * max_cols
    solve = workers * per_block + (workers * _WORKER_BASE_BYTES if workers > 1 else 0)
    batch = _probe_batch(sizes, unfold, chunk)
    safeguard = 0
    if steps:  # the model copy, the candidates w(α), w_mp and w_base (float64), the split vectors, the forward
        safeguard = model_bytes + (steps + 4) * 8 * p + 8 * batch * max(i + o for i, o in sizes)
    writeback = model_bytes + 16 * p  # the saved state dict; values and masks (float32), the masked weights
    vectors = _VECTOR_BYTES_PER_WEIGHT * p
    process = vectors + max(gradients, solve if workers == 1 else 0, safeguard, writeback)
    ram = vectors + max(gradients, solve, safeguard, writeback) + (store if store_in_ram else 0)
    return MemoryPlan(n_rows, p, len(blocks), max_cols, store, store_in_ram, model_bytes, vectors, gradients,
                      solve, safeguard, writeback, batch, process, ram)


def check_plan(plan, root, max_bytes):
    """Raise ``MemoryError`` (naming ``max_bytes``) if ``plan`` exceeds the RAM budget or the store's folder."""
    if max_bytes is None:
        available = available_memory_bytes()
        max_bytes = None if available is None else int(DEFAULT_MEMORY_FRACTION * available)
    if max_bytes is not None and plan.ram_bytes > max_bytes:
        raise MemoryError(
            f"block-mode CHITA needs about {plan.ram_bytes / 2**30:.2f} GiB of RAM ({plan.n_blocks} blocks of at "
            f"most {plan.max_block_columns} columns, n = {plan.n_rows}, store {plan.store_bytes / 2**30:.2f} GiB "
            f"{'in RAM' if plan.store_in_ram else 'on disk'}) but the budget is {max_bytes / 2**30:.2f} GiB "
            f"(max_bytes); use a smaller block_size or chunk_rows, fewer workers, store_dtype='float16', or "
            f"store_dir=<a disk folder>")
    free = shutil.disk_usage(root).free
    if plan.store_bytes > free:
        raise MemoryError(f"the block store needs {plan.store_bytes / 2**30:.2f} GiB but {root} has only "
                          f"{free / 2**30:.2f} GiB free; pass store_dir=<a larger folder> or use fewer rows")
    logger.info("memory plan: %.2f GiB RAM, store %.2f GiB (%s), %d blocks", plan.ram_bytes / 2**30,
                plan.store_bytes / 2**30, "RAM" if plan.store_in_ram else "disk", plan.n_blocks)


class BlockStore:
    """One row-major file per column block holding ``A_B`` (float32, or float16 with per-row scales)."""

    def __init__(self, folder, blocks, n_rows, store_dtype, name="block"):
        self.folder = Path(folder)
        self.blocks, self.n_rows = blocks, n_rows
        self.dtype = np.dtype(STORE_DTYPES[store_dtype])
        self.scaled = self.dtype == np.float16
        self.scales = np.ones((len(blocks), n_rows), dtype=np.float32) if self.scaled else None
        self.paths = [self.folder / f"{name}{b:05d}.bin" for b in range(len(blocks))]
        for path in self.paths:
            path.touch()

    def write_rows(self, row0, rows):
        """Store rows ``row0 … row0 + len(rows) − 1`` of ``A`` (float32, all ``p`` columns)."""
        for b, (start, end, _) in enumerate(self.blocks):
            part = rows[:, start:end]
            scale = None
            if self.scaled:
                scale = np.abs(part).max(axis=1)
                scale[scale == 0] = 1.0
                part = part / scale[:, None]
            self.write_raw(b, row0, np.asarray(part, dtype=self.dtype), scale)

    def write_raw(self, b, row0, values, scales=None):
        """Write stored values (``self.dtype``) and their row scales for rows ``row0 …`` of block ``b``."""
        if self.scaled:
            self.scales[b, row0:row0 + len(values)] = scales
        with open(self.paths[b], "r+b") as fh:
            fh.seek(row0 * values.shape[1] * self.dtype.itemsize)
            fh.write(np.ascontiguousarray(values, dtype=self.dtype).tobytes())

    def read_raw(self, b):
        """Block ``b`` as stored: ``(values, row scales or None)``."""
        start, end, _ = self.blocks[b]
        values = np.fromfile(self.paths[b], dtype=self.dtype).reshape(self.n_rows, end - start)
        return values, None if self.scales is None else self.scales[b]

    def task(self, b):
        """Where block ``b`` is and how to decode it (for :func:`chita_nn.methods._scale_worker.read_block`)."""
        start, end, _ = self.blocks[b]
        return dict(path=str(self.paths[b]), n_rows=self.n_rows, n_cols=end - start, dtype=self.dtype.str,
                    scales=None if self.scales is None else self.scales[b])

    def read(self, b):
        """``A_B`` as float32."""
        task = self.task(b)
        return _scale_worker.read_block(task["path"], task["n_rows"], task["n_cols"], task["dtype"],
                                        task["scales"])


@dataclass
class Phase:
    seconds: float
    peak_rss: int


@dataclass
class ScaleReport:
    """A :class:`PruneReport` plus the memory plan and, per phase, wall time and peak RSS of this process
    (``baseline_rss``: its RSS when the call started; ``workers_peak_rss``: the largest peak RSS of a worker
    process, if any)."""

    prune: PruneReport
    plan: MemoryPlan
    phases: dict = field(default_factory=dict)
    workers_peak_rss: int = 0
    loss: float = float("nan")
    baseline_rss: int = 0

    @property
    def peak_rss_increase(self):
        """Measured counterpart of ``plan.ram_bytes``: the largest phase peak RSS minus ``baseline_rss``."""
        return max(phase.peak_rss for phase in self.phases.values()) - self.baseline_rss

    def to_dict(self):
        return {"prune": self.prune.to_dict(), "plan": self.plan.as_dict(), "loss": self.loss,
                "phases": {k: v.__dict__ for k, v in self.phases.items()}, "workers_peak_rss": self.workers_peak_rss,
                "baseline_rss": self.baseline_rss, "peak_rss_increase": self.peak_rss_increase}


@contextmanager
def _phase(phases, name):
    _peak_rss_reset()
    t0 = time.perf_counter()
    yield
    phases[name] = Phase(time.perf_counter() - t0, peak_rss_bytes())
    logger.info("phase %s: %.1fs, peak RSS %.2f GiB", name, phases[name].seconds, phases[name].peak_rss / 2 ** 30)


def store_folder(store_dir):
    """The folder for block stores: ``store_dir`` (created if needed), or the RAM-backed /dev/shm."""
    root = Path(RAM_STORE_ROOT if store_dir is None else store_dir)
    root.mkdir(parents=True, exist_ok=True)
    return root


def block_list(layout, block_size, align=1):
    """``[(0, p, 0)]`` (one block: the global problem) for ``block_size=None``, one block per layer for
    ``"layer"``, else blocks of at most ``block_size`` columns within each layer, edges multiples of ``align``
    (:func:`chita_nn.methods.blocks.make_blocks`)."""
    if block_size is None:
        return [(0, layout.p, 0)]
    if block_size == "layer":
        return make_blocks(layout.offsets)
    return make_blocks(layout.offsets, _check_positive_int("block_size", block_size), align=align)


@dataclass
class BlockProblem:
    """The validated arguments of a block-mode run and what they imply (see :func:`block_prune`)."""

    sparsity: float
    pattern: Pattern
    calibration: Calibration
    loss: object
    params: list
    layout: object
    blocks: list
    w_bar: np.ndarray
    index: torch.Tensor  # sample numbers of the n_rows rows, samples_per_row consecutive ones per row
    n_rows: int
    samples_per_row: int
    lam: float
    gradient_term: bool
    steps: tuple
    loss_samples: int
    solver_options: dict
    targets: object
    ignore: object
    seed: int
    settings: dict

    @property
    def shapes(self):
        return [pp.shape for pp in self.params]

    def constraint(self, col_sq):
        """``(budgets, keep0, projections)`` from the screening score ``w̄² ‖A_{:,j}‖²`` (as :func:`prune`)."""
        return _stage_constraint(self.pattern, self.sparsity, self.sparsity, "global", self.blocks,
                                 self.layout.offsets, self.shapes, self.w_bar ** 2 * col_sq)

    def gradients(self, col_sq):
        """Per block, the weight ``γ_B`` of the gradient term (:func:`gradient_shares`)."""
        return gradient_weight(self.gradient_term, self.samples_per_row) * gradient_shares(self.blocks, col_sq)

    def magnitude_keep(self):
        return magnitude_keep(self.w_bar, self.layout.offsets, self.sparsity, "global",
                              self.pattern if self.pattern.structured else None, self.shapes)


def prepare(model, data, sparsity, *, n_rows, samples_per_row, pattern, loss_fn, lam, gradient_term, block_size,
            line_search, loss_samples, store_dtype, solver_options, targets, ignore, seed):
    """Validate the arguments shared by :func:`block_prune` and the distributed version; draw the rows."""
    pattern = Pattern.parse(pattern)
    sparsity = _check_sparsity(pattern.sparsity(sparsity))
    _check_model(model)
    n_rows = _check_positive_int("n_rows", n_rows)
    samples_per_row = _check_positive_int("samples_per_row", samples_per_row)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if store_dtype not in STORE_DTYPES:
        raise ValueError(f"store_dtype must be one of {sorted(STORE_DTYPES)}, got {store_dtype!r}")
    if pattern.kind == "channel":
        if block_size not in (None, "layer"):
            raise ValueError("block_size must be None or 'layer' with pattern='channel' (one block per layer)")
        block_size = "layer"
    lam = _check_lam(DEFAULTS["lam"] if lam is None else lam)
    loss = as_loss(loss_fn).bind(model)
    gradient_term = resolve_gradient_term(gradient_term, loss, BLOCK_GRADIENT_TERM)
    steps = _check_steps(line_search)
    loss_samples = _check_positive_int("loss_samples",
                                       DEFAULTS["loss_samples"] if loss_samples is None else loss_samples)
    calibration = Calibration(data, "data")
    index = calibration.rows(n_rows, samples_per_row, int(seed))
    params, layout = _select(model, targets, ignore, pattern)
    w_bar = layout.gather(np.float64)
    _check_finite_weights(params, w_bar, layout)
    blocks = block_list(layout, block_size, align=pattern.m if pattern.kind == "nm" else 1)
    settings = dict(n_rows=n_rows, samples_per_row=samples_per_row, lam=lam, gradient_term=gradient_term,
                    block_size=block_size, store_dtype=store_dtype, line_search=list(steps),
                    loss_samples=min(loss_samples, calibration.n_samples), seed=int(seed), pattern=str(pattern),
                    loss=loss.description)
    return BlockProblem(sparsity, pattern, calibration, loss, params, layout, blocks, w_bar, index, n_rows,
                        samples_per_row, lam, gradient_term, steps, loss_samples,
                        {**DEFAULTS["solver_options"], **(solver_options or {})}, targets, ignore, int(seed),
                        settings)


@dataclass
class StoredSolution:
    """What :func:`solve_stored_blocks` returns: ``w`` (float64, zero outside ``keep``), the support, the summed
    block objectives ``(at magnitude pruning, at w, at the refit of the start support)`` and the largest peak
    RSS of a worker process (0 without workers)."""

    w: np.ndarray
    keep: np.ndarray
    objectives: np.ndarray
    workers_peak_rss: int = 0


def solve_stored_blocks(store, w_bar, blocks, budgets, keep0, *, lam, gradients, solver_options, workers,
                        progress, projections=None, keep_mp=None, todo=None):
    """Solve the blocks ``todo`` (default all) of ``store``, warm-started at ``w̄ ⊙ keep0``, in ``workers``
    processes; ``gradients`` are the ``γ_B``, ``projections`` (or None) the blocks' patterns.  A block with
    ``k_B = 0`` is not solved (``w_B = 0``).  With ``keep_mp`` the block objectives
    ``½‖A_B w̄_B − γ_B e − A_B w_B‖² + (nλ/2)‖w_B − w̄_B‖²`` are summed (:class:`StoredSolution`)."""
    w, keep = np.zeros(w_bar.size), np.zeros(w_bar.size, dtype=bool)
    objectives = np.zeros(3)
    projections = projections or [None] * len(blocks)
    todo = [b for b in (range(len(blocks)) if todo is None else todo) if budgets[b] > 0 or keep_mp is not None]
    todo.sort(key=lambda b: blocks[b][0] - blocks[b][1])  # largest first: better load balance

    def task(b):
        start, end, _ = blocks[b]
        return dict(store.task(b), w_bar=w_bar[start:end], k=int(budgets[b]), projection=projections[b],
                    w_init=w_bar[start:end] * keep0[start:end], gradient=float(gradients[b]), lam=lam,
                    solver_options=solver_options,
                    w_mp=None if keep_mp is None else w_bar[start:end] * keep_mp[start:end])

    def put(b, result):
        start, end, _ = blocks[b]
        w[start:end], keep[start:end] = result["w"], result["keep"]
        objectives[:] += result["objectives"]

    bar = tqdm(total=len(todo), desc="block solves", unit="block", disable=not progress)
    peak = 0
    if workers == 1:
        for b in todo:
            put(b, _scale_worker.solve_block(task(b)))
            bar.update()
    else:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context,
                                                    initializer=_scale_worker.limit_threads) as pool:
            futures = {pool.submit(_scale_worker.solve_block, task(b)): b for b in todo}
            for future in concurrent.futures.as_completed(futures):
                put(futures[future], future.result())
                bar.update()
        # the largest peak RSS among this process's finished children (the pool's workers, now joined)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    bar.close()
    return StoredSolution(w * keep, keep, objectives, peak)


def safeguard(model, problem, solution, keep_mp, stage, *, batch_size):
    """The step search of :mod:`chita_nn.methods.safeguard` on a plain copy of ``model`` (``model`` itself is
    not touched); returns the chosen ``(w, keep)`` and fills ``stage``."""
    w_mp = problem.w_bar * keep_mp
    if not problem.steps:
        return step_search(lambda vec, support: None, None, problem.w_bar, solution.w, solution.keep,
                           (w_mp, keep_mp), (), stage)
    work = WorkingCopy(model, lambda m: _select(m, problem.targets, problem.ignore, problem.pattern))
    probe = LossProbe(work.model, problem.calibration, min(problem.calibration.n_samples, problem.loss_samples),
                      problem.loss, problem.seed)
    return step_search(work.put, lambda: probe(batch_size), problem.w_bar, solution.w, solution.keep, (w_mp, keep_mp),
                       problem.steps, stage)


def stage_report(problem, solution, keep_mp, seconds_gradients, seconds_solve):
    """The run's one :class:`StageReport`; its objectives are the block-diagonal ones (summed over blocks)."""
    objective_start, objective, refit = solution.objectives
    return StageReport(problem.sparsity, int(solution.keep.sum()), float(objective_start), float(objective),
                       time_gradients=seconds_gradients, time_solve=seconds_solve, objective_refit=float(refit),
                       overlap=float((solution.keep & keep_mp).sum() / max(1, keep_mp.sum())))


def block_prune(model, data, sparsity=None, *, n_rows, samples_per_row=1, pattern=None, loss_fn=None, lam=None,
                gradient_term=None, block_size=None, line_search=None, loss_samples=None, chunk_rows=8,
                store_dtype="float16", store_dir=None, max_bytes=None, workers=1, solver_options=None,
                targets=DEFAULT_TARGETS, ignore=DEFAULT_IGNORE, mask=True, seed=0, progress=False):
    """One-shot CHITA in block mode with bounded memory; prunes ``model`` in place, returns a :class:`ScaleReport`.

    The model is written only at the end, once the result has passed the step search and the pattern check.

    Parameters
    ----------
    data, pattern, loss_fn, lam, gradient_term, line_search, loss_samples, solver_options, targets, ignore,
    mask, seed : as in the :class:`~chita_nn.methods.recipe_types.CHITA` recipe (defaults: ``DEFAULTS``,
        except the gradient term, off by default here: :data:`BLOCK_GRADIENT_TERM`); ``n_rows`` rows of
        ``samples_per_row`` samples each are drawn with ``seed``.
    block_size : None (one block over all ``p`` weights: the global solve), ``"layer"`` or int (blocks of at
        most that many columns within each layer; aligned to ``m`` with an N:M pattern; ``pattern="channel"``
        always solves one block per layer).  Each block gets the share ``γ_B`` of the gradient term
        (:func:`gradient_shares`).
    chunk_rows : Fisher rows computed per forward/backward pass (the ``chunk_rows × p`` float32 buffer).
    store_dtype : {"float16", "float32"}; ``store_dir``: disk folder for the block files (default: RAM, under
        /dev/shm); ``max_bytes``: RAM budget (default 80% of the available memory).
    workers : processes solving blocks in parallel (``spawn`` start method: a script calling this with
        ``workers > 1`` needs the ``if __name__ == "__main__":`` guard).

    The report holds one stage: its objectives are those of the block-diagonal model, each block's
    ``½‖A_B w̄_B − γ_B e − A_B w_B‖² + (nλ/2)‖w_B − w̄_B‖²`` (computed in the block solves) summed over blocks,
    at magnitude pruning (``objective_start``), at the solution and at the refit of the screening support.
    """
    t_start = time.perf_counter()
    chunk_rows = _check_positive_int("chunk_rows", chunk_rows)
    workers = _check_positive_int("workers", workers)
    problem = prepare(model, data, sparsity, n_rows=n_rows, samples_per_row=samples_per_row, pattern=pattern,
                      loss_fn=loss_fn, lam=lam, gradient_term=gradient_term, block_size=block_size,
                      line_search=line_search, loss_samples=loss_samples, store_dtype=store_dtype,
                      solver_options=solver_options, targets=targets, ignore=ignore, seed=seed)
    chunk_rows = min(chunk_rows, problem.n_rows)
    layout, blocks, m = problem.layout, problem.blocks, problem.samples_per_row
    baseline = rss_bytes()
    phases = {}

    with _phase(phases, "plan"):
        root = store_folder(store_dir)
        sample = problem.calibration.first(1)
        plan = plan_memory(model, layout, blocks, problem.n_rows, sample=sample, chunk_rows=chunk_rows,
                           samples_per_row=m, store_dtype=store_dtype, workers=workers,
                           store_in_ram=store_dir is None, steps=len(problem.steps))
        check_plan(plan, root, max_bytes)

    with tempfile.TemporaryDirectory(prefix="chita-blocks-", dir=root) as folder:
        store = BlockStore(folder, blocks, problem.n_rows, store_dtype)
        with _phase(phases, "gradients"):
            col_sq, loss = stream_rows(model, layout, problem.calibration, problem.index, store,
                                       chunk_rows=chunk_rows, samples_per_row=m, loss_fn=problem.loss,
                                       progress=progress)
        report = PruneReport("chita-block", problem.sparsity, settings=dict(problem.settings, workers=workers))
        check_curvature(col_sq, problem.n_rows, problem.w_bar, report, 1)
        with _phase(phases, "solve"):
            budgets, keep0, projections = problem.constraint(col_sq)
            keep_mp = problem.magnitude_keep()
            solution = solve_stored_blocks(store, problem.w_bar, blocks, budgets, keep0, lam=problem.lam,
                                           gradients=problem.gradients(col_sq),
                                           solver_options=problem.solver_options, workers=workers,
                                           progress=progress, projections=projections, keep_mp=keep_mp)

    stage = stage_report(problem, solution, keep_mp, phases["gradients"].seconds, phases["solve"].seconds)
    with _phase(phases, "safeguard"):
        w, keep = safeguard(model, problem, solution, keep_mp, stage, batch_size=plan.probe_batch)
    report.stages.append(stage)
    report_fallbacks(report)
    report.time_gradients, report.time_solve = phases["gradients"].seconds, phases["solve"].seconds
    logger.info("block solve: objective %.6g -> %.6g, kept %s, loss %.4g", stage.objective_start,
                stage.objective, stage.kept, stage.train_loss)
    with _phase(phases, "write-back"):
        _finish(model, problem.params, layout, w, keep, pattern=problem.pattern, mask=mask, report=report,
                recompute_batchnorm=None, t_start=t_start)
    return ScaleReport(report, plan, phases, solution.workers_peak_rss, loss, baseline)


def stream_rows(model, layout, calibration, index, store, *, chunk_rows, samples_per_row, loss_fn=None,
                row0=0, progress=False):
    """Fisher rows of the samples ``index`` of ``calibration`` (``samples_per_row`` consecutive ones per row)
    into rows ``row0 …`` of ``store``, ``chunk_rows`` rows per pass; returns the column norms ``‖A_{:,j}‖²``
    (float64) and the mean sample loss."""
    n_rows = len(index) // samples_per_row
    buffer = np.empty((min(chunk_rows, n_rows), layout.p), dtype=np.float32)
    col_sq = np.zeros(layout.p)
    loss = 0.0
    for first in tqdm(range(0, n_rows, chunk_rows), desc="Fisher rows", disable=not progress):
        rows = min(chunk_rows, n_rows - first)
        take = index[first * samples_per_row:(first + rows) * samples_per_row]
        # the chunk's samples as batches that never split a row (an iterator: never read as one (X, y) pair)
        chunk = Calibration(iter(list(calibration.samples(take, rows * samples_per_row))), calibration.name)
        fisher = empirical_fisher(model, layout, chunk, n_rows=rows, samples_per_row=samples_per_row,
                                  loss_fn=loss_fn, out=buffer[:rows])
        for row in buffer[:rows]:  # one float64 row at a time (a float64 copy of the chunk would double it)
            col_sq += np.square(row, dtype=np.float64)
        store.write_rows(row0 + first, buffer[:rows])
        loss += fisher.loss * rows
    return col_sq, loss / max(n_rows, 1)
