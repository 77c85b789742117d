"""Block-mode CHITA across ``torch.distributed`` ranks (gloo on CPU, NCCL on GPU; start the script with torchrun).

Every rank draws the same ``n_rows · samples_per_row`` samples (same ``seed``) and computes the disjoint rows
``[r·n/R, (r+1)·n/R)`` of ``A`` into its own block store; the column norms ``‖A_{:,j}‖²`` are summed over ranks
(all-reduce), so every rank derives the same budgets ``k_B``.  Blocks are assigned to ranks (largest first, to
the least loaded rank); each block's rows are gathered on its owner, which solves it
(:func:`chita_nn.methods.scale.solve_stored_blocks`); the solutions are summed over ranks (each weight is owned by one
rank) and written back on every rank.  The rows and the solves are those of
:func:`chita_nn.methods.scale.block_prune`, so the result equals the single-process run with the same seed (up to the
order of the float64 column-norm sums).
"""
import logging
import tempfile
import time

import numpy as np
import torch
import torch.distributed as dist

from ..core.batches import as_tensors
from ..core.params import DEFAULT_IGNORE, DEFAULT_TARGETS, ParamLayout, select_parameters
from ..core.report import LayerReport, PruneReport
from ..core.writeback import write_weights_atomic
from .blocks import allocate_budgets, gradient_weight
from .oneshot import DEFAULTS
from .scale import (
    STORE_DTYPES,
    BlockStore,
    block_list,
    solve_stored_blocks,
    store_folder,
    stream_rows,
)

logger = logging.getLogger(__name__)


def assign_blocks(blocks, world_size):
    """Owner rank of each block: largest blocks first, each to the rank with the fewest columns so far."""
    load = [0] * world_size
    owners = [0] * len(blocks)
    for b in sorted(range(len(blocks)), key=lambda b: (blocks[b][0] - blocks[b][1], b)):
        rank = min(range(world_size), key=lambda r: (load[r], r))
        owners[b] = rank
        load[rank] += blocks[b][1] - blocks[b][0]
    return owners


def _row_range(n_rows, rank, world_size):
    return rank * n_rows // world_size, (rank + 1) * n_rows // world_size


def _gather_block(local, full, b, owner, n_rows, world_size, rank, group):
    """Gather the rows of block ``b`` from every rank into ``full`` on the ``owner`` rank.

    Row slices are padded to the largest slice (gather needs equal shapes) and travel as raw bytes (uint8).
    """
    values, scales = local.read_raw(b)
    width = max(hi - lo for lo, hi in (_row_range(n_rows, r, world_size) for r in range(world_size)))
    raw = np.zeros((width, values.shape[1] + (2 if full.scaled else 0)), dtype=values.dtype)
    raw[:len(values), :values.shape[1]] = values
    if full.scaled:  # the float32 row scales ride along as two float16 columns of raw bytes
        raw[:len(values), values.shape[1]:] = scales.view(values.dtype).reshape(len(values), 2)
    send = torch.from_numpy(raw.view(np.uint8))
    parts = [torch.empty_like(send) for _ in range(world_size)] if rank == owner else None
    dist.gather(send, parts, dst=owner, group=group)
    if rank != owner:
        return
    for r, part in enumerate(parts):
        lo, hi = _row_range(n_rows, r, world_size)
        part = part.numpy()[:hi - lo].view(values.dtype)
        if full.scaled:
            full.write_raw(b, lo, part[:, :-2], np.ascontiguousarray(part[:, -2:]).view(np.float32).ravel())
        else:
            full.write_raw(b, lo, part)


def distributed_block_prune(model, data, sparsity, *, n_rows, samples_per_row=1, lam=None, gradient_term=None,
                            block_size=None, chunk_rows=8, store_dtype="float16", store_dir=None, solver_options=None,
                            targets=DEFAULT_TARGETS, ignore=DEFAULT_IGNORE, mask=True, seed=0,
                            group=None, progress=False):
    """:func:`chita_nn.methods.scale.block_prune` split over the ranks of ``group`` (default: the world group).

    Call it on every rank with the same arguments; each rank's ``model`` ends up pruned identically.
    Returns the :class:`PruneReport` (the same on every rank).
    """
    t_start = time.perf_counter()
    rank, world_size = dist.get_rank(group), dist.get_world_size(group)
    lam = float(DEFAULTS["lam"] if lam is None else lam)
    gradient_term = DEFAULTS["gradient_term"] if gradient_term is None else bool(gradient_term)
    solver_options = {**DEFAULTS["solver_options"], **(solver_options or {})}
    if store_dtype not in STORE_DTYPES:
        raise ValueError(f"store_dtype must be one of {sorted(STORE_DTYPES)}, got {store_dtype!r}")
    X, y = as_tensors(data, "data")
    n_samples = n_rows * samples_per_row
    if n_rows < world_size or n_samples > len(X):
        raise ValueError(f"need world_size ({world_size}) <= n_rows ({n_rows}) and n_rows * samples_per_row "
                         f"({n_samples}) <= {len(X)} samples")
    params = select_parameters(model, targets=targets, ignore=ignore)
    layout = ParamLayout(params)
    blocks = block_list(layout, block_size)
    w_bar = layout.gather(np.float64)
    index = torch.from_numpy(np.random.default_rng(seed).choice(len(X), size=n_samples, replace=False))
    lo, hi = _row_range(n_rows, rank, world_size)
    mine = index[lo * samples_per_row:hi * samples_per_row]
    owners = assign_blocks(blocks, world_size)

    with tempfile.TemporaryDirectory(prefix=f"chita-rank{rank}-", dir=store_folder(store_dir)) as folder:
        local = BlockStore(f"{folder}", blocks, hi - lo, store_dtype, name="local")
        col_sq, loss = stream_rows(model, layout, X[mine], y[mine], local, chunk_rows=chunk_rows,
                                   samples_per_row=samples_per_row, progress=progress and rank == 0)
        col_sq = torch.from_numpy(col_sq)
        dist.all_reduce(col_sq, group=group)
        t_grad = time.perf_counter() - t_start
        budgets, keep0 = allocate_budgets(blocks, w_bar ** 2 * col_sq.numpy(), k=int(np.floor((1.0 - sparsity)
                                                                                              * layout.p + 1e-9)))
        full = BlockStore(folder, blocks, n_rows, store_dtype, name="full")
        for b, owner in enumerate(owners):
            _gather_block(local, full, b, owner, n_rows, world_size, rank, group)
        t0 = time.perf_counter()
        owned = [k if owner == rank else 0 for k, owner in zip(budgets, owners)]
        w, keep, _ = solve_stored_blocks(full, w_bar, blocks, owned, keep0, lam=lam,
                                         gradient=gradient_weight(gradient_term, samples_per_row),
                                         solver_options=solver_options, workers=1, progress=False)
        t_solve = time.perf_counter() - t0
    w = torch.from_numpy(w * keep)
    keep = torch.from_numpy(keep.astype(np.int32))
    dist.all_reduce(w, group=group)
    dist.all_reduce(keep, group=group)
    keep = keep.numpy().astype(bool)
    write_weights_atomic(model, params, layout.split(w.numpy()), layout.split(keep), mask=mask)
    report = PruneReport("chita-block-distributed", float(sparsity), settings=dict(
        n_rows=n_rows, samples_per_row=samples_per_row, lam=lam, gradient_term=gradient_term, block_size=block_size,
        store_dtype=store_dtype, world_size=world_size, seed=seed))
    report.layers = [LayerReport(pp.name, tuple(pp.shape), e - s, int(keep[s:e].sum()))
                     for pp, (s, e) in zip(params, layout.offsets)]
    report.time_gradients, report.time_solve = t_grad, t_solve
    report.time_total = time.perf_counter() - t_start
    logger.info("rank %d/%d: rows [%d, %d), %d of %d blocks, loss %.4g, %.1fs", rank, world_size, lo, hi,
                owners.count(rank), len(blocks), loss / max(hi - lo, 1), report.time_total)
    return report
