"""Block-mode CHITA across ``torch.distributed`` ranks (gloo on CPU, NCCL on GPU; start the script with torchrun).

Every rank draws the same ``n_rows · samples_per_row`` samples (same ``seed``) and computes the disjoint rows
``[r·n/R, (r+1)·n/R)`` of ``A`` into its own block store; the column norms ``‖A_{:,j}‖²`` are summed over ranks
(all-reduce), so every rank derives the same budgets ``k_B``.  Blocks are assigned to ranks (largest first, to
the least loaded rank); each block's rows are gathered on its owner, which solves it
(:func:`chita_nn.methods.scale.solve_stored_blocks`); the solutions are summed over ranks (each weight is owned by one
rank); rank 0 runs the step search (:func:`chita_nn.methods.scale.safeguard`) and broadcasts the chosen weights,
which every rank writes back.  The rows and the solves are those of
:func:`chita_nn.methods.scale.block_prune`, so the result equals the single-process run with the same seed (up to the
order of the float64 column-norm sums).
"""
import logging
import tempfile
import time

import numpy as np
import torch
import torch.distributed as dist

from ..core.params import DEFAULT_IGNORE, DEFAULT_TARGETS
from ..core.report import PruneReport
from .oneshot import _check_positive_int, _finish
from .safeguard import check_curvature, report_fallbacks
from .scale import (
    BlockStore,
    prepare,
    probe_batch,
    safeguard,
    solve_stored_blocks,
    stage_report,
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


def distributed_block_prune(model, data, sparsity=None, *, n_rows, samples_per_row=1, pattern=None, loss_fn=None,
                            lam=None, gradient_term=None, block_size=None, line_search=None, loss_samples=None,
                            chunk_rows=8, store_dtype="float16", store_dir=None, solver_options=None,
                            targets=DEFAULT_TARGETS, ignore=DEFAULT_IGNORE, mask=True, seed=0, group=None,
                            progress=False):
    """:func:`chita_nn.methods.scale.block_prune` split over the ranks of ``group`` (default: the world group).

    Call it on every rank with the same arguments; each rank's ``model`` ends up pruned identically.  The step
    search (safeguard) runs on rank 0, which broadcasts its choice.  Returns the :class:`PruneReport` (the same on
    every rank).
    """
    t_start = time.perf_counter()
    rank, world_size = dist.get_rank(group), dist.get_world_size(group)
    chunk_rows = _check_positive_int("chunk_rows", chunk_rows)
    problem = prepare(model, data, sparsity, n_rows=n_rows, samples_per_row=samples_per_row, pattern=pattern,
                      loss_fn=loss_fn, lam=lam, gradient_term=gradient_term, block_size=block_size,
                      line_search=line_search, loss_samples=loss_samples, store_dtype=store_dtype,
                      solver_options=solver_options, targets=targets, ignore=ignore, seed=seed)
    n_rows, m, blocks = problem.n_rows, problem.samples_per_row, problem.blocks
    if n_rows < world_size:
        raise ValueError(f"n_rows ({n_rows}) must be at least the world size ({world_size})")
    lo, hi = _row_range(n_rows, rank, world_size)
    owners = assign_blocks(blocks, world_size)

    with tempfile.TemporaryDirectory(prefix=f"chita-rank{rank}-", dir=store_folder(store_dir)) as folder:
        local = BlockStore(f"{folder}", blocks, hi - lo, store_dtype, name="local")
        col_sq, loss = stream_rows(model, problem.layout, problem.calibration, problem.index[lo * m:hi * m], local,
                                   chunk_rows=min(chunk_rows, max(hi - lo, 1)), samples_per_row=m,
                                   loss_fn=problem.loss, progress=progress and rank == 0)
        col_sq = torch.from_numpy(col_sq)
        dist.all_reduce(col_sq, group=group)
        col_sq = col_sq.numpy()
        report = PruneReport("chita-block-distributed", problem.sparsity,
                             settings=dict(problem.settings, world_size=world_size))
        check_curvature(col_sq, n_rows, problem.w_bar, report, 1)  # the same on every rank
        t_grad = time.perf_counter() - t_start
        budgets, keep0, projections = problem.constraint(col_sq)
        keep_mp = problem.magnitude_keep()
        full = BlockStore(folder, blocks, n_rows, store_dtype, name="full")
        for b, owner in enumerate(owners):
            _gather_block(local, full, b, owner, n_rows, world_size, rank, group)
        t0 = time.perf_counter()
        solution = solve_stored_blocks(full, problem.w_bar, blocks, budgets, keep0, lam=problem.lam,
                                       gradients=problem.gradients(col_sq), solver_options=problem.solver_options,
                                       workers=1, progress=False, projections=projections, keep_mp=keep_mp,
                                       todo=[b for b, owner in enumerate(owners) if owner == rank])
        t_solve = time.perf_counter() - t0
    parts = [torch.from_numpy(solution.w), torch.from_numpy(solution.keep.astype(np.int32)),
             torch.from_numpy(solution.objectives)]
    for part in parts:  # each block was solved by one rank: the sums are the solution
        dist.all_reduce(part, group=group)
    solution.w, solution.keep, solution.objectives = parts[0].numpy(), parts[1].numpy().astype(bool), parts[2].numpy()
    stage = stage_report(problem, solution, keep_mp, t_grad, t_solve)
    chosen = [None]
    if rank == 0:
        batch = probe_batch(model, problem.calibration.first(1), chunk_rows * m)
        w, keep = safeguard(model, problem, solution, keep_mp, stage, batch_size=batch)
        chosen = [(w, keep, stage)]
    dist.broadcast_object_list(chosen, src=dist.get_global_rank(group, 0) if group is not None else 0, group=group)
    w, keep, stage = chosen[0]
    report.stages.append(stage)
    report_fallbacks(report)
    report.time_gradients, report.time_solve = t_grad, t_solve
    _finish(model, problem.params, problem.layout, w, keep, pattern=problem.pattern, mask=mask, report=report,
            recompute_batchnorm=None, t_start=t_start)
    logger.info("rank %d/%d: rows [%d, %d), %d of %d blocks, loss %.4g, %.1fs", rank, world_size, lo, hi,
                owners.count(rank), len(blocks), loss, report.time_total)
    return report
