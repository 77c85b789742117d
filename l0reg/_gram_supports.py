"""Row supports for the Gram-form solver: top-k (a budget per row) and N:M.

A row constraint is encoded by ``(k_r, n, m)``: with ``m == 0`` the row keeps its
``k_r`` largest entries; with ``m > 0`` it keeps the ``n`` largest of every
``m`` consecutive entries (a last, shorter group keeps ``min(n, size)``).
Ranking is by magnitude, ties to the lowest index, as in ``projection.TopK``.

The kernels here work on one row and are called from the row-parallel kernels
of ``_gram_linesearch``; :func:`row_masks` is the batched entry point.
"""
import numpy as np
from numba import njit, prange


@njit(cache=True)
def support_indices(mask):
    """The indices where ``mask`` is True, increasing: ``np.flatnonzero``, whose Numba implementation took
    0.4–0.8 s of the first layer-wise call's compile (this loop: about 0.1 s)."""
    count = 0
    for j in range(mask.shape[0]):
        count += mask[j]
    idx = np.empty(count, dtype=np.int64)
    pos = 0
    for j in range(mask.shape[0]):
        if mask[j]:
            idx[pos] = j
            pos += 1
    return idx


@njit(cache=True)
def kth_largest(score, k):
    """The ``k``-th largest entry of ``score`` (1 ≤ k ≤ p): quickselect on a copy, O(p) expected.

    Written out instead of ``np.partition``, whose Numba implementation took about a third of the
    compile time of the layer-wise solver's first call (16 of 55 s in a fresh cache, 2 loaded cores).
    """
    a = score.copy()
    target = k - 1  # position in descending order
    lo, hi = 0, a.shape[0] - 1
    while lo < hi:
        x, y, z = a[lo], a[(lo + hi) // 2], a[hi]
        pivot = max(min(x, y), min(max(x, y), z))  # median of three
        i, j = lo, hi
        while i <= j:
            while a[i] > pivot:
                i += 1
            while a[j] < pivot:
                j -= 1
            if i <= j:
                a[i], a[j] = a[j], a[i]
                i += 1
                j -= 1
        if target <= j:
            hi = j
        elif target >= i:
            lo = i
        else:
            break  # a[j + 1 : i] all equal the pivot
    return a[target]


@njit(cache=True)
def topk_into(score, k, mask):
    """``mask`` ← the ``k`` largest entries of ``score`` (ties: lowest index); O(p)."""
    p = score.shape[0]
    mask[:] = False
    if k <= 0:
        return
    if k >= p:
        mask[:] = True
        return
    thresh = kth_largest(score, k)
    above = 0
    for j in range(p):
        if score[j] > thresh:
            mask[j] = True
            above += 1
    for j in range(p):
        if above == k:
            break
        if score[j] == thresh:
            mask[j] = True
            above += 1


@njit(cache=True)
def group_topn_into(score, lo, hi, n, mask):
    """Within ``[lo, hi)``: ``mask`` ← the ``n`` largest entries of ``score``."""
    for j in range(lo, hi):
        mask[j] = False
    for _ in range(min(n, hi - lo)):
        best = -1
        for j in range(lo, hi):
            if not mask[j] and (best < 0 or score[j] > score[best]):
                best = j
        mask[best] = True


@njit(cache=True)
def support_into(score, k, n, m, mask):
    """``mask`` ← the support of the projection of a row with magnitudes ``score``."""
    if m == 0:
        topk_into(score, k, mask)
        return
    p = score.shape[0]
    for lo in range(0, p, m):
        group_topn_into(score, lo, min(lo + m, p), n, mask)


@njit(cache=True)
def start_into(x, y, k, n, m, mask):
    """Support of ``P(x − τ y)`` for small τ > 0, ``x`` feasible: the nonzeros of
    ``x`` first, then zeros by ``|y|`` (lexicographic ranking)."""
    nonzero = 0
    for j in range(x.shape[0]):
        nonzero += x[j] != 0.0
    if m == 0 and nonzero == k:
        for j in range(x.shape[0]):
            mask[j] = x[j] != 0.0
        return
    big = 0.0
    for j in range(y.shape[0]):
        big = max(big, abs(y[j]))
    big = 2.0 * big + 1.0
    score = np.empty(x.shape[0])
    for j in range(x.shape[0]):
        score[j] = abs(y[j]) + (big if x[j] != 0.0 else 0.0)
    support_into(score, k, n, m, mask)


@njit(cache=True, parallel=True)
def row_masks(score, ks, n, m):
    """Batched supports: row r keeps its ``ks[r]`` (or n of every m) largest scores."""
    r, p = score.shape
    masks = np.zeros((r, p), dtype=np.bool_)
    for i in prange(r):
        support_into(score[i], ks[i], n, m, masks[i])
    return masks


def layer_counts(score, total):
    """Per-row counts of the ``total`` largest entries of the matrix ``score``."""
    flat = score.ravel()
    if total >= flat.size:
        return np.full(score.shape[0], score.shape[1], dtype=np.int64)
    if total <= 0:
        return np.zeros(score.shape[0], dtype=np.int64)
    order = np.argsort(-flat, kind="stable")[:total]
    return np.bincount(order // score.shape[1], minlength=score.shape[0]).astype(np.int64)
