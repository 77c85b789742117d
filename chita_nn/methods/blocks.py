"""Column blocks, budget allocation and the (block-diagonal) l0reg solves.

With blocks ``B`` (column groups of ``A``) the Fisher ``AᵀA`` is approximated
by its block diagonal.  Since ``½‖A(w̄ − w) − γe‖² = ½‖A(w̄ − w)‖² − γeᵀA(w̄ − w) + ½γ²n``
and ``eᵀA(w̄ − w) = Σ_B eᵀA_B(w̄_B − w_B)``, the approximated problem splits into
independent l0reg problems, one per block::

    min_{w_B} ½‖b_B − A_B w_B‖² + (nλ/2)‖w_B − w̄_B‖²   s.t. ‖w_B‖₀ ≤ k_B,
    b_B = A_B w̄_B − γ e   (γ = 1/m with the gradient term, 0 without),

whose budgets ``k_B`` sum to ``k``.  The budgets come from a global (or
per-layer) top-k of a screening score, by default the diagonal-Fisher
saliency ``w̄_j² · (AᵀA)_jj`` (the loss increase of removing ``j`` alone).
"""
import logging
import time
from dataclasses import dataclass

import numpy as np

import l0reg

logger = logging.getLogger(__name__)

SCORES = ("fisher", "magnitude")


def make_blocks(layer_slices, block_size=None, align=1):
    """Split each layer's column range ``(start, end)`` into chunks of at most ``block_size``.

    Returns ``(start, end, layer_index)`` triples; ``block_size=None`` keeps one block per layer.
    Chunks of a layer have near-equal sizes; with ``align`` every chunk edge is a multiple of ``align``
    columns from the layer's start (so N:M groups or whole rows never straddle two blocks).
    """
    if block_size is not None and (not isinstance(block_size, (int, np.integer)) or block_size < 1):
        raise ValueError(f"block_size must be a positive integer or None, got {block_size!r}")
    blocks = []
    for li, (start, end) in enumerate(layer_slices):
        size = end - start
        units = size // align
        n_chunks = 1 if block_size is None else max(1, -(-units // max(1, int(block_size) // align)))
        edges = start + align * np.linspace(0, units, n_chunks + 1).round().astype(int)
        edges[-1] = end
        blocks.extend((int(a), int(b), li) for a, b in zip(edges[:-1], edges[1:]) if b > a)
    return blocks


def screening_scores(w_bar, kind, col_sq):
    """Per-weight saliency: ``|w̄_j|`` (``"magnitude"``) or ``w̄_j² · ‖A_{:,j}‖²`` (``"fisher"``; ``col_sq`` from
    :func:`l0reg.column_norms_sq`)."""
    if kind == "magnitude":
        return np.abs(w_bar)
    if kind == "fisher":
        return w_bar.astype(np.float64) ** 2 * col_sq
    raise ValueError(f"score must be one of {SCORES}, got {kind!r}")


def top_k_mask(scores, k):
    """Boolean mask of the ``k`` largest entries (ties broken by index, deterministic)."""
    mask = np.zeros(scores.size, dtype=bool)
    if k > 0:
        order = np.argsort(-scores, kind="stable")
        mask[order[:k]] = True
    return mask


def layer_budgets(layer_slices, sparsity):
    """``k_l = ⌊(1 − s) · p_l⌋`` for each layer (the layerwise scope)."""
    return [int(np.floor((1.0 - sparsity) * (end - start) + 1e-9)) for start, end in layer_slices]


def allocate_budgets(blocks, scores, k=None, per_layer=None):
    """Budgets ``k_B`` from a top-k of ``scores``: global ``k``, or ``per_layer`` budgets.

    Returns ``(budgets, keep)`` where ``keep`` is the selected boolean mask,
    i.e. the screening (magnitude-style) solution itself.
    """
    keep = np.zeros(scores.size, dtype=bool)
    if per_layer is None:
        keep = top_k_mask(scores, k)
    else:
        layers = {}
        for start, end, li in blocks:
            lo, hi = layers.get(li, (start, end))
            layers[li] = (min(lo, start), max(hi, end))
        for li, (start, end) in layers.items():
            keep[start:end] = top_k_mask(scores[start:end], per_layer[li])
    budgets = [int(keep[start:end].sum()) for start, end, _ in blocks]
    return budgets, keep


def gradient_weight(gradient_term, samples_per_row):
    """Weight ``γ`` of the gradient term in ``b = A w̄ − γ e``: ``1/m`` with the term, else 0.

    A row that averages the gradients of ``m`` samples has covariance ≈ ``F/m`` (``F`` the per-sample
    Fisher), so the loss model ``gᵀd + ½ dᵀF d`` (``d = w − w̄``, ``g = Aᵀe/n``) becomes, times ``n/m``,
    ``½‖A d‖² + (1/m) eᵀA d = ½‖A d + e/m‖² + const``: with ``γ = 1`` instead, the step along
    ``−F⁻¹g`` would be ``m`` times too long.
    """
    return 1.0 / samples_per_row if gradient_term else 0.0


def gradient_shares(blocks, col_sq):
    """``γ_B / γ = ‖A_B‖²_F / ‖A‖²_F`` (sums to 1): each block's share of the gradient term.

    With the global Newton step ``d = −Aᵀ(AAᵀ + nλI)⁻¹ γe`` block ``B`` moves the outputs by
    ``A_B d_B = −K_B (K + nλI)⁻¹ γe`` (``K_B = A_B A_Bᵀ``, ``K = Σ_B K_B``); taking ``K_B ≈ (tr K_B / tr K) K``
    gives its target ``γ_B e`` with ``γ_B`` as above, so that the block solves add up to one Newton step.
    """
    sums = np.array([col_sq[start:end].sum() for start, end, _ in blocks], dtype=np.float64)
    total = sums.sum()
    return sums / total if total > 0 else np.full(len(blocks), 1.0 / len(blocks))


def rhs(A, w_bar, gradient=0.0):
    """``b = A w̄ − γ e`` in float64, ``γ = gradient`` (see :func:`gradient_weight`)."""
    b = A @ w_bar.astype(A.dtype)
    b = b.astype(np.float64)
    b -= gradient
    return b


@dataclass
class BlockSolution:
    """What :func:`solve_blocks` returns (behaves as the tuple ``(w, keep, seconds)``).

    ``w_start`` is the exact refit of the start support (the baseline the solver improves on), or None
    where blocks were solved one by one; ``objective_start`` is its F when only that is known (one block
    solved by :func:`l0reg.solve`), else nan; ``objective`` is F at ``w`` in that case, else nan.
    """

    w: np.ndarray
    keep: np.ndarray
    seconds: float
    w_start: np.ndarray = None
    objective_start: float = float("nan")
    objective: float = float("nan")

    def _as_tuple(self):
        return self.w, self.keep, self.seconds

    def __iter__(self):
        return iter(self._as_tuple())

    def __len__(self):
        return 3

    def __getitem__(self, index):
        return self._as_tuple()[index]


#: Blocks of at most this many columns are solved together by :func:`l0reg.solve_blocks` (its refits
#: factor a ``k_B × k_B`` Gram matrix); larger ones, and patterned blocks, one by one by :func:`l0reg.solve`.
BATCH_MAX_COLUMNS = 4096


def solve_blocks(A, w_bar, blocks, budgets, *, gradient=0.0, lam=0.0, w_init=None,
                 solver_options=None, projections=None):
    """Solve one l0reg problem per block on the column slices ``A[:, s:e]`` (no copy).

    ``gradient`` is the weight ``γ`` of ``b = A w̄ − γ e`` (one value, or one per block, e.g. ``γ`` times
    :func:`gradient_shares`); ``w_init`` (e.g. the screening solution)
    warm-starts every block; ``projections`` (one per block, or None) replace the top-``k_B`` constraint
    by a pattern (N:M, channels).  Unstructured blocks of at most :data:`BATCH_MAX_COLUMNS` columns are
    solved in one call of :func:`l0reg.solve_blocks` (``max_iter`` and
    ``tol`` of ``solver_options`` apply), the others by :func:`l0reg.solve` each.  Returns a
    :class:`BlockSolution`: ``w`` in float64 and the boolean support ``keep`` with exactly ``Σ k_B``
    entries (a block whose solution has fewer nonzeros is topped up with its largest ``|w̄_j|``, through
    its projection).
    """
    options = dict(solver_options or {})
    w = np.zeros(w_bar.size, dtype=np.float64)
    keep = np.zeros(w_bar.size, dtype=bool)
    t0 = time.perf_counter()
    projections = projections or [None] * len(blocks)
    gammas = np.broadcast_to(np.asarray(gradient, dtype=np.float64), (len(blocks),))
    batched = [projection is None and end - start <= BATCH_MAX_COLUMNS
               for (start, end, _), projection in zip(blocks, projections)]
    w_start = np.zeros(w_bar.size) if all(batched) else None
    if any(batched):
        chosen = [(block, k_block) for block, k_block, b in zip(blocks, budgets, batched) if b]
        result = l0reg.solve_blocks(A, [(s, e) for (s, e, _), _ in chosen], [int(k) for _, k in chosen],
                                    lam=lam, w_bar=w_bar, w_init=w_init, gradient=gammas[np.flatnonzero(batched)],
                                    **{key: options[key] for key in ("max_iter", "tol") if key in options})
        for (start, end, _), _ in chosen:
            w[start:end], keep[start:end] = result.coef[start:end], result.mask[start:end]
            if w_start is not None:
                w_start[start:end] = result.coef_start[start:end]
        logger.debug("%d blocks batched: F %.6g (refitted start %.6g), %d kept their start", len(chosen),
                     result.objective.sum(), result.objective_start.sum(), int(result.settled.sum()))
    objective_start = objective = float("nan")
    for (start, end, _), k_block, projection, b, gamma in zip(blocks, budgets, projections, batched, gammas):
        if k_block == 0 or b:
            continue
        A_B, wb_B = A[:, start:end], w_bar[start:end]
        init = None if w_init is None else w_init[start:end]
        k_arg = None if projection is not None else int(k_block)
        result = l0reg.solve(A_B, rhs(A_B, wb_B, gamma), k_arg, lam=lam, w_bar=wb_B,
                             w_init=init, projection=projection, **options)
        w[start:end] = result.coef
        block_keep = np.zeros(end - start, dtype=bool)
        block_keep[result.support] = True
        missing = int(k_block) - int(block_keep.sum())
        if missing > 0 and projection is not None:
            block_keep = l0reg.projection_mask(projection, np.where(block_keep, np.inf, np.abs(wb_B)))
        elif missing > 0:
            block_keep |= top_k_mask(np.where(block_keep, -np.inf, np.abs(wb_B)), missing)
        keep[start:end] = block_keep
        if len(blocks) == 1:
            objective_start, objective = result.start_objective, result.objective
        logger.debug("block [%d, %d): k=%d objective=%.6g iters=%d converged=%s",
                     start, end, k_block, result.objective, result.n_iter, result.converged)
    return BlockSolution(w, keep, time.perf_counter() - t0, w_start, objective_start, objective)
