"""A penalty path from the dense rows to sparse ones: ADMM with a growing penalty, in Gram form.

For the rows of a layer, with ``K = H + λI`` and ``b_r = c_r + λ w̄_r``, the problem of :func:`l0reg.solve_gram`
is ``min Σ_r ½ w_rᵀ K w_r − b_rᵀ w_r`` under a sparsity constraint on the whole matrix W (top-k per row, N:M,
or k nonzeros in the layer).  In the Jacobi-scaled variables ``ŵ = s ∘ w``, ``s = √diag K`` (so that the
selection below ranks ``|w_j|·√K_jj``, Wanda's score), with ``K̂ = S⁻¹KS⁻¹ = QΛQᵀ`` and ``b̂ = b / s``, the
splitting ``W = D``, D feasible, gives the ADMM iteration (Meng et al., *ALPS*, NeurIPS 2024)

    W ← (B̂ − V + ρD) Q (Λ + ρ)⁻¹ Qᵀ          (the ridge-like step)
    D ← P(W + V/ρ)                          (one selection for the whole constraint)
    V ← V + ρ(W − D)

(the W step is two products with Q per step, or one with the inverse ``Q (Λ + ρ)⁻¹ Qᵀ`` formed again when ρ
changes, every _CHECK_EVERY steps: that costs rp² + p³/_CHECK_EVERY against 2rp², the cheaper form is used)
while ρ grows: slowly at first, so that the support moves where the dense solution pulls it, and faster as it
settles (ρ is multiplied every few steps by a factor that depends on how much of the support changed).  For
small ρ the W step is nearly the unconstrained optimum; for large ρ, W = D is feasible.  The supports it ends on
are then refitted and polished by :func:`l0reg.solve_gram` (IHT, exact refits), which keeps the better start.

Written against the array API (``array_api_compat``): ``H`` and ``W_bar`` may be numpy arrays or torch tensors
(then it runs on their device; l0reg never imports torch itself).
"""
from dataclasses import dataclass

import array_api_compat
import numpy as np

# ρ schedule: the initial penalty (on the scaled problem, whose diagonal is 1); every _CHECK_EVERY steps ρ is
# multiplied by _GROWTH[i] for the first threshold of _CHANGE that the fraction of the support that changed
# exceeds (the last factor when it changed less).  Chosen on SmolLM2-135M layers (blocks 0/15/29, q/o/gate/down,
# 70%/80%/2:4): ALPS's faster ramp (1.3/1.2/1.1, its defaults) ended 1-4% higher in error in a third of the
# steps; slower ramps (1.05/1.03/1.01) gained another ~0.3% for twice the steps.
_RHO0 = 0.1
_CHECK_EVERY = 3
_CHANGE = (0.1, 0.005)
_GROWTH = (1.1, 1.05, 1.02)
# Stop when fewer than this fraction of the support changed over a check, after at least _MIN_STEPS steps
# (ALPS's 3e-4 took 4-25% more steps on 27 SmolLM2 layer problems, 2:4, 70%/80% layer and 70% row budgets, for
# at most 0.04% lower error after the polish).
_STOP_CHANGE = 1e-3
_MIN_STEPS = 30


@dataclass
class GramEigh:
    """``K̂ = S⁻¹(H + λI)S⁻¹ = Q diag(evals) Qᵀ`` with ``s = √diag(H + λI)``: the factorisation that every
    ADMM step uses, shared by the layers that read the same input (same H and λ)."""

    scale: object
    evals: object
    Q: object
    lam: float


def gram_eigh(H, lam):
    """:class:`GramEigh` of ``H + λI`` (float64 eigendecomposition, in H's namespace and device)."""
    xp = array_api_compat.array_namespace(H)
    H64 = xp.astype(H, xp.float64)
    p = H64.shape[0]
    diag = xp.linalg.diagonal(H64) + lam
    scale = xp.where(diag > 0, xp.sqrt(xp.where(diag > 0, diag, 1.0)), 1.0)
    K = (H64 + lam * xp.eye(p, dtype=xp.float64, device=array_api_compat.device(H))) / scale[:, None]
    K = K / scale[None, :]
    evals, Q = xp.linalg.eigh(0.5 * (K + K.T))
    return GramEigh(scale, xp.clip(evals, 0.0, None), Q, float(lam))


def select(score, ks, n, m, total):
    """Mask of the largest ``score`` entries (``score ≥ 0``, shape (r, p)): ``ks`` per row (int or int array),
    ``n`` of every ``m`` consecutive entries of a row (``m > 0``), or ``total`` in the whole matrix.  Ties go to
    the lowest index.  One partial sort (a sort off numpy) along the selected axis; N:M ranks by comparisons."""
    xp = array_api_compat.array_namespace(score)
    r, p = score.shape
    if total is not None:
        return xp.reshape(_top(xp, xp.reshape(score, (1, r * p)), total), (r, p))
    if m:
        width = -(-p // m) * m
        if width != p:  # a last, shorter group: padding that is never chosen before a real entry
            pad = xp.full((r, width - p), -1.0, dtype=score.dtype, device=array_api_compat.device(score))
            score = xp.concat([score, pad], axis=1)
        return xp.reshape(_top_in_groups(xp, xp.reshape(score, (r, width // m, m)), n), (r, width))[:, :p]
    return _top(xp, score, ks)


def _top_in_groups(xp, groups, n):
    """The ``n`` largest of each group (last axis, ``m`` entries): entry j is kept when fewer than n entries
    beat it (larger, or equal at a lower index); m² comparisons, no sort (m is small: 4, 8)."""
    m = groups.shape[-1]
    rank = [xp.zeros(groups.shape[:-1], dtype=xp.int8 if m < 128 else xp.int64,
                     device=array_api_compat.device(groups)) for _ in range(m)]
    for j in range(m):
        for i in range(m):
            if i != j:
                beats = groups[..., i] > groups[..., j] if i > j else groups[..., i] >= groups[..., j]
                rank[j] = rank[j] + xp.astype(beats, rank[j].dtype)
    return xp.stack([rank_j < n for rank_j in rank], axis=-1)


def _top(xp, score, k):
    """Per row of ``score`` (rows, c): the ``k`` largest entries (k an int or an int array of length rows)."""
    rows, c = score.shape
    device = array_api_compat.device(score)
    if isinstance(k, int):
        if k <= 0 or k >= c:
            return xp.full(score.shape, k > 0, dtype=xp.bool, device=device)
        if array_api_compat.is_numpy_array(score):  # an O(c) partition instead of the sort
            thresh = np.partition(score, c - k, axis=1)[:, c - k:c - k + 1]
        else:
            thresh = xp.sort(score, axis=1, stable=False)[:, c - k:c - k + 1]
    else:
        ordered = xp.sort(score, axis=1, stable=False)
        k = xp.reshape(xp.asarray(k, dtype=xp.int64, device=device), (rows, 1))
        thresh = xp.take_along_axis(ordered, xp.clip(c - k, 0, c - 1), axis=1)
        thresh = xp.where(k > 0, thresh, xp.inf)
    above = score > thresh
    tie = score == thresh
    room = k - xp.sum(xp.astype(above, xp.int64), axis=1, keepdims=True)
    if bool(xp.all(xp.sum(xp.astype(tie, xp.int64), axis=1, keepdims=True) <= room)):
        return above | tie  # no row has more ties at its threshold than places left (the usual case)
    return above | (tie & (xp.cumulative_sum(xp.astype(tie, xp.int64), axis=1) <= room))


def _explicit_inverse(r, p):
    """Whether the W step goes through the formed inverse (module docstring): rp² + p³/_CHECK_EVERY ≤ 2rp²."""
    return _CHECK_EVERY * r >= p


def admm_masks(H, W_bar, *, lam, ks=None, n=0, m=0, total=None, C=None, eig=None, max_iter=300, dtype=None):
    """Supports (bool, like ``W_bar``) at the end of the ADMM penalty path (see the module), and the number of
    steps taken.  ``ks``/``n, m``/``total``: the constraint as in :func:`select`; ``C``: linear terms (default
    ``W̄H``); ``eig``: a :class:`GramEigh` of ``H + λI`` to reuse; ``dtype``: of the iteration (default float32:
    the steps only choose supports, the refits that follow are in float64)."""
    xp = array_api_compat.array_namespace(H, W_bar)
    dtype = xp.float32 if dtype is None else dtype
    eig = gram_eigh(H, lam) if eig is None else eig
    Wbar = xp.astype(W_bar, xp.float64)
    C = Wbar @ xp.astype(H, xp.float64) if C is None else xp.astype(C, xp.float64)
    scale, Q64 = eig.scale, eig.Q
    r, p = Wbar.shape
    Q = xp.astype(Q64, dtype)
    evals = xp.astype(eig.evals, dtype)
    explicit = _explicit_inverse(r, p)
    if explicit:
        B = xp.astype((C + lam * Wbar) / scale, dtype)                # B̂
    else:
        T = xp.astype(((C + lam * Wbar) / scale) @ Q64, dtype)        # B̂ Q
    Wh = xp.astype(Wbar * scale, dtype)
    mask = select(xp.abs(Wh), ks, n, m, total)
    size = max(int(xp.sum(xp.astype(mask, xp.int64))), 1)
    zero = xp.zeros((), dtype=dtype, device=array_api_compat.device(Wh))
    D = xp.where(mask, Wh, zero)
    V = xp.zeros_like(D)
    rho, ramping, previous = _RHO0, False, mask
    inverse_rho, inverse = None, None
    for step in range(1, max_iter + 1):
        if not explicit:
            Wh = ((T + (rho * D - V) @ Q) / (evals + rho)) @ Q.T
        else:
            if inverse_rho != rho:
                inverse_rho, inverse = rho, (Q / (evals + rho)) @ Q.T
            Wh = (B + rho * D - V) @ inverse
        Z = Wh + V / rho
        mask = select(xp.abs(Z), ks, n, m, total)
        D = xp.where(mask, Z, zero)
        V = V + rho * (Wh - D)
        if step % _CHECK_EVERY == 0:
            change = int(xp.sum(xp.astype(mask != previous, xp.int64))) / size
            previous = mask
            if change > 0 or ramping:
                ramping = True
                rho *= next((g for g, c in zip(_GROWTH, _CHANGE) if change > c), _GROWTH[-1])
            else:  # ρ too large to move anything yet
                rho /= 5
            if step >= _MIN_STEPS and ramping and change < _STOP_CHANGE:
                break
    return select(xp.abs(Wh), ks, n, m, total), step
