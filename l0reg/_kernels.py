"""Numba kernels for the hot paths of the solvers (top-k selection is a numpy
partition, in ``projection.largest``).

Only array arithmetic lives here; the orchestration (which kernel to call, on
which layout, when to stop) is in the Python modules. Kernels never write into
the design matrix ``A`` (callers may pass read-only memory maps).

Layout: Fortran-ordered ``A`` (columns contiguous) is the fast path for the
restricted products; C-ordered ``A`` is supported through row-wise kernels.
"""
import types

import numpy as np
from numba import njit, prange

#: Rows per private accumulator of the column-streaming kernels (16 KB of float64: in L1/L2).
_ACC_ROWS = 2048


def serial_and_parallel(func):
    """Compile ``func`` twice: on one thread (returned) and with its ``prange``
    loops spread over threads (attached as ``.parallel``). Thread start-up costs
    more than small products, so the caller picks by the amount of work."""
    clone = types.FunctionType(func.__code__, func.__globals__, func.__name__ + "_parallel",
                               func.__defaults__, func.__closure__)
    clone.__qualname__ = func.__qualname__ + "_parallel"
    clone.__doc__ = func.__doc__
    serial = njit(cache=True, fastmath=True)(func)
    serial.parallel = njit(cache=True, fastmath=True, parallel=True)(clone)
    return serial


@njit(cache=True, fastmath=True)
def dot(x, y):
    """``xᵀy`` on one thread (BLAS threads stall on tiny vectors when cores are busy)."""
    acc = 0.0
    for i in range(x.shape[0]):
        acc += x[i] * y[i]
    return acc


# --------------------------------------------------------------------------- products
@serial_and_parallel
def cols_matmul_f(A, idx, X, out, runs):
    """``out += (A[:, idx] @ X)ᵀ`` for Fortran-ordered ``A``, ``X`` of shape ``(|idx|, r)`` and ``out`` of
    shape ``(r, n)``: r products in one read of the columns.

    The columns are split into ``runs`` consecutive runs (one per thread in ``.parallel``); each run streams
    its columns whole, in ``_ACC_ROWS``-row slices, into private float64 accumulators that stay in cache.
    (Slicing by rows first and visiting every column per slice read 1 KB per column and page: 2-6x slower.)
    """
    n, r = A.shape[0], X.shape[1]
    acc = np.zeros((runs, r, n))
    for c in prange(runs):
        t0, t1 = c * idx.shape[0] // runs, (c + 1) * idx.shape[0] // runs
        for lo in range(0, n, _ACC_ROWS):
            hi = min(n, lo + _ACC_ROWS)
            buf = np.zeros((r, hi - lo))
            for t in range(t0, t1):
                col = A[lo:hi, idx[t]]  # a 1-d contiguous view: the loop below vectorises
                for q in range(r):
                    xq = X[t, q]
                    row = buf[q]
                    for i in range(hi - lo):
                        row[i] += col[i] * xq
            acc[c, :, lo:hi] = buf
    for c in range(runs):
        for q in range(r):
            for i in range(n):
                out[q, i] += acc[c, q, i]


@serial_and_parallel
def cols_matvec_c(A, idx, x, out):
    """``out = A[:, idx] @ x`` for C-ordered ``A`` (one gathered dot product per row)."""
    n = A.shape[0]
    for i in prange(n):
        acc = 0.0
        for t in range(idx.shape[0]):
            acc += A[i, idx[t]] * x[t]
        out[i] = acc


@serial_and_parallel
def rows_gathered_dots(A, idx, coef, bounds, out):
    """``out[c, 0] = A[:, I_c] @ coef[0, I_c]`` and ``out[c, 1] = A[:, I_c] @ coef[1, I_c]`` over the entries
    ``I_c = bounds[c]:bounds[c+1]`` (column indices ``idx[I_c]``), for C-ordered ``A``: pairs of products over
    several column sets in one pass over the rows, four rows at a time (each index and coefficient loaded once
    per four rows and two products: 20% faster than two rows; a row's entries gathered again by a later set
    come from cache)."""
    n = A.shape[0]
    for blk in prange((n + 3) // 4):
        i0 = 4 * blk
        i1, i2, i3 = min(i0 + 1, n - 1), min(i0 + 2, n - 1), min(i0 + 3, n - 1)  # past n: the last row again
        row0, row1, row2, row3 = A[i0], A[i1], A[i2], A[i3]
        for c in range(bounds.shape[0] - 1):
            x0 = x1 = x2 = x3 = y0 = y1 = y2 = y3 = 0.0
            for t in range(bounds[c], bounds[c + 1]):
                j = idx[t]
                u, v = coef[0, t], coef[1, t]
                a0, a1, a2, a3 = row0[j], row1[j], row2[j], row3[j]
                x0 += a0 * u
                x1 += a1 * u
                x2 += a2 * u
                x3 += a3 * u
                y0 += a0 * v
                y1 += a1 * v
                y2 += a2 * v
                y3 += a3 * v
            out[c, 0, i0], out[c, 0, i1], out[c, 0, i2], out[c, 0, i3] = x0, x1, x2, x3
            out[c, 1, i0], out[c, 1, i1], out[c, 1, i2], out[c, 1, i3] = y0, y1, y2, y3


@serial_and_parallel
def step_direction_f(A, inv, r, w, w_bar, nlam, inv_diag, g, partial):
    """One pass over the columns of a Fortran-ordered ``A`` for an IHT step on ``Â = inv·A``:

    ``g_j = (nλ(w_j − w̄_j) − â_jᵀ r) / D_j`` for every j and, while ``a_j`` is in cache,
    ``partial[c] = Σ a_j g_j`` over the nonzeros ``w_j ≠ 0`` of column chunk c,
    so that ``Â_S g_S = inv · Σ_c partial[c]`` for S = supp w.
    """
    n, p = A.shape
    nchunks = partial.shape[0]
    width = (p + nchunks - 1) // nchunks
    for c in prange(nchunks):
        acc = np.zeros(n)
        for j in range(c * width, min(p, (c + 1) * width)):
            dot = 0.0
            for i in range(n):
                dot += A[i, j] * r[i]
            gj = (nlam * (w[j] - w_bar[j]) - inv * dot) * inv_diag[j]
            g[j] = gj
            if w[j] != 0.0:
                for i in range(n):
                    acc[i] += A[i, j] * gj
        partial[c] = acc


@serial_and_parallel
def cols_rmatvec(A, idx, r, out):
    """``out = A[:, idx].T @ r``, one dot product per column (contiguous reads
    for Fortran order, strided for C order)."""
    n = A.shape[0]
    for t in prange(idx.shape[0]):
        j = idx[t]
        acc = 0.0
        for i in range(n):
            acc += A[i, j] * r[i]
        out[t] = acc


@njit(cache=True, fastmath=True)
def add_cols(A, idx, coef, out):
    """``out += A[:, idx] @ coef`` for a handful of columns (sequential, any layout)."""
    n = A.shape[0]
    acc = np.zeros(n)
    for t in range(idx.shape[0]):
        j = idx[t]
        c = coef[t]
        for i in range(n):
            acc[i] += A[i, j] * c
    for i in range(n):
        out[i] += acc[i]


@njit(cache=True)
def gather_cols(A, idx, lo, hi, inv, out):
    """``out = inv · A[lo:hi, idx]`` in float64 (any layout of A; ``out`` Fortran-ordered):
    no copy of the block in A's dtype on the way."""
    for t in range(idx.shape[0]):
        col = A[lo:hi, idx[t]]  # 1-d views: the copy vectorises (3.5x faster than indexing A[i, j])
        dst = out[:, t]
        for i in range(hi - lo):
            dst[i] = col[i] * inv


@njit(cache=True)
def mirror_lower(K):
    """Copy the strict lower triangle of the square ``K`` onto its upper triangle (in place)."""
    n = K.shape[0]
    for j in range(n):
        for i in range(j + 1, n):
            K[j, i] = K[i, j]


@njit(cache=True)
def mirror_upper(K, diag):
    """Copy the strict upper triangle of the square ``K`` onto its lower one and set its diagonal (in place)."""
    n = K.shape[0]
    for j in range(n):
        K[j, j] = diag[j]
        for i in range(j + 1, n):
            K[i, j] = K[j, i]


# --------------------------------------------------------------------------- line-search path
@njit(cache=True)
def _magnitude_slope(a, c, t):
    """Right derivative of ``τ ↦ |a − τ c|`` at ``t``."""
    u = a - t * c
    if u > 0.0:
        return -c
    if u < 0.0:
        return c
    return abs(c)


@njit(cache=True)
def _overtake_time(a_in, c_in, a_out, c_out, t0):
    """First ``t > t0`` at which ``|a_out − t c_out|`` rises past ``|a_in − t c_in|``.

    Both are absolute values of lines, so the candidate times are the two roots
    of ``a_in − t c_in = ±(a_out − t c_out)``; a root counts when the outside
    magnitude grows faster than the inside one just after it.
    """
    best = np.inf
    for sgn in (1.0, -1.0):
        den = c_in - sgn * c_out
        if den == 0.0:
            continue
        t = (a_in - sgn * a_out) / den
        if t > t0 and t < best:
            if _magnitude_slope(a_out, c_out, t) > _magnitude_slope(a_in, c_in, t):
                best = t
    return best


@njit(cache=True)
def _first_overtake(a, c, ks, w_out, g_out, t0):
    """``(t, pos)``: the earliest time after ``t0`` at which the outside line overtakes a support
    entry, and that entry's position (lowest position on ties; ``(inf, -1)`` when never)."""
    best_t, best_pos = np.inf, -1
    abs_w, abs_g = abs(w_out), abs(g_out)
    for pos in range(ks):
        # |w_out − t g_out| ≤ |w_out| + t|g_out| and |a − t c| ≥ |a| − t|c|: no overtake before
        # (|a| − |w_out|) / (|g_out| + |c|); entries whose bound is past best_t (with a margin for
        # rounding) are skipped without solving for their crossing.
        if abs(a[pos]) - abs_w > best_t * (abs_g + abs(c[pos])) * (1.0 + 1e-9):
            continue
        t = _overtake_time(a[pos], c[pos], w_out, g_out, t0)
        if t < best_t:
            best_t, best_pos = t, pos
    return best_t, best_pos


@njit(cache=True)
def topk_path_events(w, g, support, rays, max_events):
    """Breakpoints of ``τ ↦ supp P_k(w − τ g)`` for τ > 0, in increasing order.

    ``support`` is the top-k set just after τ = 0 and must contain every
    nonzero of ``w``; ``rays`` are the outside indices ordered by decreasing
    ``|g|`` (outside magnitudes ``τ|g_j|`` keep that order for every τ).
    Each event swaps one index out of the support and one in. Returns
    ``(taus, leaving, entering)`` for at most ``max_events`` events.

    The candidates to enter are the current ray and the indices that left; each
    keeps its first overtake time and position. An event changes one support
    position, so only that position is re-scored against every candidate, and
    a candidate scans the whole support only when it is new or its own target
    left: O(k) per event instead of O(events·k).
    """
    ks = support.shape[0]
    cur = support.copy()
    a = np.empty(ks)
    c = np.empty(ks)
    for t in range(ks):
        a[t] = w[cur[t]]
        c[t] = g[cur[t]]
    n_cand = max_events + 1  # slot 0: the current ray; then the departed indices
    cand = np.full(n_cand, -1, dtype=np.int64)
    cand_t = np.full(n_cand, np.inf)
    cand_pos = np.full(n_cand, -1, dtype=np.int64)
    n_dep = 0
    taus = np.empty(max_events)
    leaving = np.empty(max_events, dtype=np.int64)
    entering = np.empty(max_events, dtype=np.int64)
    ray_ptr = 0
    tau = 0.0
    n_ev = 0
    if ks > 0 and rays.shape[0] > 0:
        cand[0] = rays[0]
        cand_t[0], cand_pos[0] = _first_overtake(a, c, ks, 0.0, g[cand[0]], 0.0)
    while n_ev < max_events and ks > 0:
        best = -1
        for q in range(1 + n_dep):
            if cand[q] >= 0 and (best < 0 or cand_t[q] < cand_t[best]):
                best = q
        if best < 0 or not np.isfinite(cand_t[best]):
            break
        best_t, best_pos, best_in = cand_t[best], cand_pos[best], cand[best]
        out_idx = cur[best_pos]
        taus[n_ev] = best_t
        leaving[n_ev] = out_idx
        entering[n_ev] = best_in
        n_ev += 1
        cur[best_pos] = best_in
        a[best_pos] = w[best_in]
        c[best_pos] = g[best_in]
        tau = best_t
        if best == 0:  # the ray entered: the next ray takes its slot
            ray_ptr += 1
            cand[0] = rays[ray_ptr] if ray_ptr < rays.shape[0] else -1
            cand_pos[0] = -1
        else:  # a departed index re-entered: the last departed takes its slot
            cand[best], cand_t[best], cand_pos[best] = cand[n_dep], cand_t[n_dep], cand_pos[n_dep]
            n_dep -= 1
        n_dep += 1
        cand[n_dep], cand_pos[n_dep] = out_idx, -1
        for q in range(1 + n_dep):
            j = cand[q]
            if j < 0:
                continue
            w_out = 0.0 if q == 0 else w[j]
            if cand_pos[q] < 0 or cand_pos[q] == best_pos or not cand_t[q] > tau:
                cand_t[q], cand_pos[q] = _first_overtake(a, c, ks, w_out, g[j], tau)
            else:
                t = _overtake_time(a[best_pos], c[best_pos], w_out, g[j], tau)
                if t < cand_t[q] or (t == cand_t[q] and best_pos < cand_pos[q]):
                    cand_t[q], cand_pos[q] = t, best_pos
    return taus[:n_ev], leaving[:n_ev], entering[:n_ev]


# --------------------------------------------------------------------------- coordinate descent
@njit(cache=True)
def cd_sweep(A, inv, idx, w, w_bar, r, col_sq, nlam):
    """One cyclic sweep of exact coordinate minimisation over ``idx``, for the
    design ``inv · A`` (``col_sq`` are its squared column norms).

    For coordinate j: ``w_j ← (a_jᵀ r + ‖a_j‖² w_j + nλ w̄_j) / (‖a_j‖² + nλ)``,
    with the residual ``r = b − A w`` updated in place. Returns the decrease of F.
    """
    n = A.shape[0]
    decrease = 0.0
    for t in range(idx.shape[0]):
        j = idx[t]
        denom = col_sq[t] + nlam
        if denom <= 0.0:
            continue
        dot = 0.0
        for i in range(n):
            dot += A[i, j] * r[i]
        dot *= inv
        old = w[j]
        new = (dot + col_sq[t] * old + nlam * w_bar[j]) / denom
        delta = new - old
        if delta != 0.0:
            step = delta * inv
            for i in range(n):
                r[i] -= A[i, j] * step
            w[j] = new
            decrease += 0.5 * denom * delta * delta
    return decrease


# --------------------------------------------------------------------------- swaps
@njit(cache=True)
def insertion_gains(h, gram_col, w_i, w_bar, col_sq, nlam, in_support, gain, value):
    """Gain of bringing each outside coordinate in after removing coordinate i.

    With ``r_i = r + a_i w_i`` the residual without i, ``a_jᵀ r_i = h_j + w_i·(Aᵀa_i)_j``.
    Adding j at its optimal value ``value_j`` lowers F by
    ``gain_j = (a_jᵀ r_i + nλ w̄_j)² / (2(‖a_j‖² + nλ))`` (0 inside the support).
    """
    for j in range(h.shape[0]):
        denom = col_sq[j] + nlam
        if in_support[j] or denom <= 0.0:
            gain[j] = 0.0
            value[j] = 0.0
            continue
        num = h[j] + w_i * gram_col[j] + nlam * w_bar[j]
        gain[j] = 0.5 * num * num / denom
        value[j] = num / denom


@njit(cache=True)
def best_swaps(C, U, h, u, diag, full, in_support, best_j, best_gain):
    """For each removed ``support[t]``, the best insertion ``j ∉ S`` and its refitted gain (the
    ``_local_search`` module docstring): ``½ (h_j + U_tj u_t/M_tt)² / (d_j + U_tj²/M_tt)`` with
    ``d_j = full_j − Σ_s C_sj U_sj``; a denominator ≤ 1e-9·full_j (j in the span of S − i) scores 0.
    ``best_j[t] = −1`` and ``best_gain[t] = −inf`` when no j is outside S. No fastmath: the scores
    start from −inf."""
    k, p = C.shape
    d = full.copy()
    for s in range(k):
        for j in range(p):
            d[j] -= C[s, j] * U[s, j]
    for t in range(k):
        shift, inv_diag = u[t] / diag[t], 1.0 / diag[t]
        best, arg = -np.inf, -1
        for j in range(p):
            if in_support[j]:
                continue
            x = U[t, j]
            den = d[j] + x * x * inv_diag
            score = 0.0
            if den > 1e-9 * full[j]:
                num = h[j] + x * shift
                score = 0.5 * num * num / den
            if score > best:
                best, arg = score, j
        best_j[t], best_gain[t] = arg, best


@serial_and_parallel
def column_norms_sq(A, inv, out):
    """``out_j = ‖inv · a_j‖²`` for every column (any layout), squares in float64."""
    n, p = A.shape
    for j in prange(p):
        acc = 0.0
        for i in range(n):
            v = A[i, j] * inv
            acc += v * v
        out[j] = acc


@serial_and_parallel
def column_norms_sq_c(A, inv, partial):
    """``partial[t, j] = Σ_i (inv · A_ij)²`` over the t-th of ``len(partial)`` consecutive row blocks of a
    C-ordered A (the caller sums the blocks): each row streamed once, squares in float64."""
    n, p = A.shape
    blocks = partial.shape[0]
    for t in prange(blocks):
        acc = partial[t]
        acc[:] = 0.0
        for i in range(t * n // blocks, (t + 1) * n // blocks):
            for j in range(p):
                v = A[i, j] * inv
                acc[j] += v * v


@serial_and_parallel
def max_abs(x):
    """``max_i |x_i|`` of a 1-D array: chunks (reduced in parallel in ``.parallel``), each scanned with four
    running maxima in x's dtype (independent, so the loop vectorises: 3.7x faster than one running max)."""
    chunk = 1 << 18
    nchunks = (x.shape[0] + chunk - 1) // chunk
    partial = np.zeros(nchunks)
    for c in prange(nchunks):
        seg = x[c * chunk:min(x.shape[0], (c + 1) * chunk)]
        m0 = m1 = m2 = m3 = abs(seg[0])
        i = 0
        while i + 4 <= seg.shape[0]:
            m0 = max(m0, abs(seg[i]))
            m1 = max(m1, abs(seg[i + 1]))
            m2 = max(m2, abs(seg[i + 2]))
            m3 = max(m3, abs(seg[i + 3]))
            i += 4
        for i in range(i, seg.shape[0]):
            m0 = max(m0, abs(seg[i]))
        partial[c] = max(max(m0, m1), max(m2, m3))
    return partial.max() if nchunks else 0.0
