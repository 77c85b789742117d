"""Memory-bounded block-mode CHITA for networks whose Fisher matrix ``A`` (``n × p``) does not fit in memory.

The Fisher is approximated by its block diagonal over column blocks ``B`` (see :mod:`chita_nn.methods.blocks`), so only
one ``A_B`` (``n × p_B``) is ever needed in float32 at a time.  The pipeline:

1. **plan**: bytes needed in RAM and in the block store are predicted; a ``MemoryError`` is raised before
   anything large is allocated if they exceed ``max_bytes`` (default 80% of the available memory) or the free
   space of the store folder;
2. **gradients**: Fisher rows are computed ``chunk_rows`` at a time with :func:`chita_nn.core.fisher.empirical_fisher`
   into a ``chunk_rows × p`` float32 buffer and streamed to one file per block, float16 with a per-row scale
   (``A_B[i] = s_i Q_B[i]``, ``s_i = max_j |A_B[i, j]|``) or float32; the column norms ``‖A_{:,j}‖²`` used by
   the screening score ``w̄_j² ‖A_{:,j}‖²`` are accumulated exactly on the way;
3. **solve**: budgets ``k_B`` from a global top-k of the screening score, then one l0reg problem per block,
   ``min ½‖A_B w̄_B − e − A_B w‖² + (nλ/2)‖w − w̄_B‖²`` s.t. ``‖w‖₀ ≤ k_B``, one after another or in
   ``workers`` processes (each reads its own block);
4. **write-back** of the pruned weights as ``torch.nn.utils.prune`` masks.

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

from ..core.batches import as_tensors
from ..core.fisher import (
    DEFAULT_MEMORY_FRACTION,
    available_memory_bytes,
    empirical_fisher,
)
from ..core.params import DEFAULT_IGNORE, DEFAULT_TARGETS, ParamLayout, select_parameters
from ..core.report import LayerReport, PruneReport
from ..core.writeback import write_weights_atomic
from . import _scale_worker
from .blocks import allocate_budgets, gradient_weight, make_blocks
from .oneshot import DEFAULTS

logger = logging.getLogger(__name__)

STORE_DTYPES = {"float16": np.float16, "float32": np.float32}
RAM_STORE_ROOT = "/dev/shm"
# float64 / bool vectors of length p held at once (w̄, column norms, scores, w, w_init, keep, keep0) and the
# float32 tensors of the write-back (values, masks).
_VECTOR_BYTES_PER_WEIGHT = 5 * 8 + 2 + 2 * 4
# The solver's working memory on an n × p_B block beyond the float32 copy of A_B, per entry and per column
# (measured: about 6 bytes per entry on 500 × 100k and 500 × 250k float32 blocks), and a worker process's own
# footprint (interpreter, numba, numpy; torch too when the main script imports it).
_SOLVER_BYTES_PER_ENTRY = 10
_SOLVER_BYTES_PER_COLUMN = 64
_WORKER_BASE_BYTES = 512 * 2 ** 20


def _peak_rss_reset():
    """Reset the kernel's peak-RSS counter (VmHWM) of this process, where Linux allows it."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def peak_rss_bytes():
    """Peak resident set size (VmHWM) of this process, in bytes."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("VmHWM not found in /proc/self/status")


@dataclass
class MemoryPlan:
    """Predicted bytes: ``ram`` (peak, this process plus workers, RAM-backed store included) and ``store``."""

    n_rows: int
    p: int
    n_blocks: int
    max_block_columns: int
    store_bytes: int
    store_in_ram: bool
    model_bytes: int
    activation_bytes: int
    buffer_bytes: int
    vector_bytes: int
    solve_bytes: int
    ram_bytes: int

    def as_dict(self):
        return dict(self.__dict__)


def _activation_bytes(model, sample, batch):
    """Bytes of the layer inputs, outputs and their gradients that one Fisher chunk of ``batch`` samples keeps
    (measured on one sample, times ``batch``; conv unfold buffers counted for the largest layer)."""
    sizes, unfold = [], [0]

    def hook(module, inputs, output):
        sizes.append(inputs[0].numel() + output.numel())
        if isinstance(module, nn.Conv2d):
            k = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            unfold[0] = max(unfold[0], k * output.shape[-1] * output.shape[-2])

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            was_training = model.training
            model.eval()
            model(sample[:1])
            model.train(was_training)
    finally:
        for handle in handles:
            handle.remove()
    return 4 * batch * (2 * sum(sizes) + 2 * unfold[0])


def plan_memory(model, layout, blocks, n_rows, *, sample, chunk_rows, samples_per_row, store_dtype, workers,
                store_in_ram):
    """Predict the bytes of a :func:`block_prune` run (see :class:`MemoryPlan`)."""
    p = layout.p
    widths = [end - start for start, end, _ in blocks]
    max_cols = max(widths)
    itemsize = np.dtype(STORE_DTYPES[store_dtype]).itemsize
    store = n_rows * p * itemsize + 4 * n_rows * len(blocks)
    model_bytes = 2 * sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    activations = _activation_bytes(model, sample, chunk_rows * samples_per_row)
    buffer = 4 * chunk_rows * p + 4 * chunk_rows * max_cols * 2  # chunk rows + one block's quantised copy
    vectors = _VECTOR_BYTES_PER_WEIGHT * p
    # per worker: the stored block, its float32 copy and the solver's working memory
    per_block = n_rows * max_cols * (itemsize + 4 + _SOLVER_BYTES_PER_ENTRY) + _SOLVER_BYTES_PER_COLUMN * max_cols
    solve = workers * per_block + (workers * _WORKER_BASE_BYTES if workers > 1 else 0)
    ram = model_bytes + vectors + max(activations + buffer, solve) + (store if store_in_ram else 0)
    return MemoryPlan(n_rows, p, len(blocks), max_cols, store, store_in_ram, model_bytes, activations, buffer,
                      vectors, solve, ram)


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
    (``workers_peak_rss``: the largest peak RSS of a worker process, if any)."""

    prune: PruneReport
    plan: MemoryPlan
    phases: dict = field(default_factory=dict)
    workers_peak_rss: int = 0
    loss: float = float("nan")

    def to_dict(self):
        return {"prune": self.prune.to_dict(), "plan": self.plan.as_dict(), "loss": self.loss,
                "phases": {k: v.__dict__ for k, v in self.phases.items()}, "workers_peak_rss": self.workers_peak_rss}


@contextmanager
def _phase(phases, name):
    _peak_rss_reset()
    t0 = time.perf_counter()
    yield
    phases[name] = Phase(time.perf_counter() - t0, peak_rss_bytes())
    logger.info("phase %s: %.1fs, peak RSS %.2f GiB", name, phases[name].seconds, phases[name].peak_rss / 2 ** 30)


def _check_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def store_folder(store_dir):
    """The folder for block stores: ``store_dir`` (created if needed), or the RAM-backed /dev/shm."""
    root = Path(RAM_STORE_ROOT if store_dir is None else store_dir)
    root.mkdir(parents=True, exist_ok=True)
    return root


def block_list(layout, block_size):
    """``[(0, p, 0)]`` (one block: the global problem) for ``block_size=None``, else blocks of at most
    ``block_size`` columns within each layer (:func:`chita_nn.methods.blocks.make_blocks`)."""
    if block_size is None:
        return [(0, layout.p, 0)]
    return make_blocks(layout.offsets, _check_int("block_size", block_size))


def solve_stored_blocks(store, w_bar, blocks, budgets, keep0, *, lam, gradient, solver_options, workers,
                        progress):
    """Solve every block of ``store`` with ``k_B > 0``, warm-started at ``w̄ ⊙ keep0``, in ``workers``
    processes; returns ``(w, keep, workers_peak_rss)`` (zero outside the solved blocks)."""
    w, keep = np.zeros(w_bar.size), np.zeros(w_bar.size, dtype=bool)
    todo = [b for b, k in enumerate(budgets) if k > 0]
    todo.sort(key=lambda b: blocks[b][0] - blocks[b][1])  # largest first: better load balance

    def task(b):
        start, end, _ = blocks[b]
        return dict(store.task(b), w_bar=w_bar[start:end], k=int(budgets[b]),
                    w_init=w_bar[start:end] * keep0[start:end], gradient=gradient, lam=lam,
                    solver_options=solver_options)

    def put(b, result):
        start, end, _ = blocks[b]
        w[start:end], keep[start:end] = result[0], result[1]

    bar = tqdm(total=len(todo), desc="block solves", unit="block", disable=not progress)
    if workers == 1:
        for b in todo:
            put(b, _scale_worker.solve_block(task(b)))
            bar.update()
        bar.close()
        return w, keep, 0
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context,
                                                initializer=_scale_worker.limit_threads) as pool:
        futures = {pool.submit(_scale_worker.solve_block, task(b)): b for b in todo}
        for future in concurrent.futures.as_completed(futures):
            put(futures[future], future.result())
            bar.update()
    bar.close()
    # the largest peak RSS among this process's finished children (the pool's workers, now joined)
    return w, keep, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024


def block_prune(model, data, sparsity, *, n_rows, samples_per_row=1, lam=None, gradient_term=None,
                block_size=None, chunk_rows=8, store_dtype="float16", store_dir=None, max_bytes=None, workers=1,
                solver_options=None, targets=DEFAULT_TARGETS, ignore=DEFAULT_IGNORE, mask=True,
                seed=0, progress=False):
    """One-shot CHITA in block mode with bounded memory; prunes ``model`` in place, returns a :class:`ScaleReport`.

    Parameters
    ----------
    data : TensorDataset or (X, y); ``n_rows · samples_per_row`` samples drawn with ``seed``.
    block_size : None (one block over all ``p`` weights: the global solve) or int (blocks of at most that many
        columns within each layer).
    chunk_rows : Fisher rows computed per forward/backward pass (the ``chunk_rows × p`` float32 buffer).
    store_dtype : {"float16", "float32"}; ``store_dir``: disk folder for the block files (default: RAM, under
        /dev/shm); ``max_bytes``: RAM budget (default 80% of the available memory).
    lam, gradient_term, solver_options : as in :func:`chita_nn.methods.oneshot.prune` (defaults: its ``DEFAULTS``).
    workers : processes solving blocks in parallel (``spawn`` start method: a script calling this with
        ``workers > 1`` needs the ``if __name__ == "__main__":`` guard).
    """
    t_start = time.perf_counter()
    n_rows = _check_int("n_rows", n_rows)
    samples_per_row = _check_int("samples_per_row", samples_per_row)
    chunk_rows = min(_check_int("chunk_rows", chunk_rows), n_rows)
    workers = _check_int("workers", workers)
    lam = float(DEFAULTS["lam"] if lam is None else lam)
    gradient_term = DEFAULTS["gradient_term"] if gradient_term is None else bool(gradient_term)
    solver_options = {**DEFAULTS["solver_options"], **(solver_options or {})}
    if store_dtype not in STORE_DTYPES:
        raise ValueError(f"store_dtype must be one of {sorted(STORE_DTYPES)}, got {store_dtype!r}")
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity!r}")
    X, y = as_tensors(data, "data")
    n_samples = n_rows * samples_per_row
    if n_samples > len(X):
        raise ValueError(f"n_rows * samples_per_row = {n_samples} > {len(X)} samples")
    params = select_parameters(model, targets=targets, ignore=ignore)
    layout = ParamLayout(params)
    p = layout.p
    blocks = block_list(layout, block_size)
    phases = {}

    with _phase(phases, "plan"):
        root = store_folder(store_dir)
        store_in_ram = store_dir is None
        plan = plan_memory(model, layout, blocks, n_rows, sample=X[:1], chunk_rows=chunk_rows,
                           samples_per_row=samples_per_row, store_dtype=store_dtype, workers=workers,
                           store_in_ram=store_in_ram)
        if max_bytes is None:
            available = available_memory_bytes()
            max_bytes = None if available is None else int(DEFAULT_MEMORY_FRACTION * available)
        if max_bytes is not None and plan.ram_bytes > max_bytes:
            raise MemoryError(
                f"block-mode CHITA needs about {plan.ram_bytes / 2**30:.2f} GiB of RAM ({plan.n_blocks} blocks of at "
                f"most {plan.max_block_columns} columns, n = {n_rows}, store {plan.store_bytes / 2**30:.2f} GiB "
                f"{'in RAM' if store_in_ram else 'on disk'}) but the budget is {max_bytes / 2**30:.2f} GiB "
                f"(max_bytes); use a smaller block_size or chunk_rows, fewer workers, store_dtype='float16', or "
                f"store_dir=<a disk folder>")
        free = shutil.disk_usage(root).free
        if plan.store_bytes > free:
            raise MemoryError(f"the block store needs {plan.store_bytes / 2**30:.2f} GiB but {root} has only "
                              f"{free / 2**30:.2f} GiB free; pass store_dir=<a larger folder> or use fewer rows")
        logger.info("memory plan: %.2f GiB RAM, store %.2f GiB (%s), %d blocks", plan.ram_bytes / 2**30,
                    plan.store_bytes / 2**30, "RAM" if store_in_ram else "disk", plan.n_blocks)
        index = torch.from_numpy(np.random.default_rng(seed).choice(len(X), size=n_samples, replace=False))
        w_bar = layout.gather(np.float64)

    with tempfile.TemporaryDirectory(prefix="chita-blocks-", dir=root) as folder:
        store = BlockStore(folder, blocks, n_rows, store_dtype)
        with _phase(phases, "gradients"):
            col_sq, loss = stream_rows(model, layout, X[index], y[index], store, chunk_rows=chunk_rows,
                                       samples_per_row=samples_per_row, progress=progress)

        with _phase(phases, "solve"):
            k = int(np.floor((1.0 - sparsity) * p + 1e-9))
            budgets, keep0 = allocate_budgets(blocks, w_bar ** 2 * col_sq, k=k)
            w, keep, workers_peak = solve_stored_blocks(store, w_bar, blocks, budgets, keep0, lam=lam,
                                           gradient=gradient_weight(gradient_term, samples_per_row),
                                           solver_options=solver_options,
                                           workers=workers, progress=progress)

    with _phase(phases, "write-back"):
        write_weights_atomic(model, params, layout.split(w * keep), layout.split(keep), mask=mask)
    report = PruneReport("chita-block", float(sparsity), settings=dict(
        n_rows=n_rows, samples_per_row=samples_per_row, lam=lam, gradient_term=gradient_term,
        block_size=block_size, store_dtype=store_dtype, workers=workers, seed=seed))
    report.layers = [LayerReport(pp.name, tuple(pp.shape), e - s, int(keep[s:e].sum()))
                     for pp, (s, e) in zip(params, layout.offsets)]
    report.time_gradients, report.time_solve = phases["gradients"].seconds, phases["solve"].seconds
    report.time_total = time.perf_counter() - t_start
    return ScaleReport(report, plan, phases, workers_peak, loss / n_rows)


def stream_rows(model, layout, X, y, store, *, chunk_rows, samples_per_row, progress=False):
    """Fisher rows of the samples ``X`` (``samples_per_row`` consecutive samples per row) into ``store``,
    ``chunk_rows`` rows per pass; returns the column norms ``‖A_{:,j}‖²`` (float64) and the summed row losses."""
    n_rows = len(X) // samples_per_row
    buffer = np.empty((min(chunk_rows, n_rows), layout.p), dtype=np.float32)
    col_sq = np.zeros(layout.p)
    loss = 0.0
    for row0 in tqdm(range(0, n_rows, chunk_rows), desc="Fisher rows", disable=not progress):
        rows = min(chunk_rows, n_rows - row0)
        take = slice(row0 * samples_per_row, (row0 + rows) * samples_per_row)
        fisher = empirical_fisher(model, layout, (X[take], y[take]), n_rows=rows, samples_per_row=samples_per_row,
                                  out=buffer[:rows])
        col_sq += np.einsum("ij,ij->j", buffer[:rows], buffer[:rows], dtype=np.float64)
        store.write_rows(row0, buffer[:rows])
        loss += fisher.loss * rows
    return col_sq, loss
