"""Helpers shared by the benchmark scripts.

* :func:`timed` -- wall-clock timing that never includes Numba compilation,
* :class:`PeakMemory` -- peak extra memory of a block of code,
* :func:`plain_iht` -- the textbook IHT baseline (constant step ``1/L``),
* :func:`ridge_objective` -- an independent evaluation of the objective,
* :func:`report` -- print tables and save them as markdown + JSON.
"""
import datetime
import json
import os
import platform
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
from numba.core.registry import CPUDispatcher
from scipy.sparse.linalg import svds

RESULTS_DIR = Path(__file__).resolve().parent / "results"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


# --------------------------------------------------------------------------- timing
def numba_signature_count(package="l0reg"):
    """Number of compiled signatures over every Numba dispatcher in ``package``.

    It grows exactly when a call compiles something, which lets :func:`timed`
    detect a measurement that included JIT compilation.
    """
    total = 0
    for name, module in list(sys.modules.items()):
        if module is None or not (name == package or name.startswith(package + ".")):
            continue
        for obj in vars(module).values():
            if isinstance(obj, CPUDispatcher):
                total += len(obj.signatures)
    return total


def timed(fn, *, warmup=None):
    """Return ``(fn(), seconds)`` measured without any Numba compilation.

    ``warmup`` (optional) is called first, untimed: typically the same solver
    on a tiny problem with the same dtype and memory order, which compiles the
    kernels cheaply. If the timed call still compiled a kernel (a code path the
    warm-up did not reach), the call is repeated and the second time is kept.
    """
    if warmup is not None:
        warmup()
    while True:
        before = numba_signature_count()
        start = time.perf_counter()
        out = fn()
        seconds = time.perf_counter() - start
        if numba_signature_count() == before:
            return out, seconds
        print("  (call compiled Numba kernels; timing it again)", file=sys.stderr)


def best_time(fn, repeats):
    """Smallest wall-clock time of ``repeats`` calls of ``fn()``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


# --------------------------------------------------------------------------- memory
def _proc_status_kib(field):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _reset_peak_rss():
    """Reset the kernel's peak-RSS counter (Linux >= 4.0); False if impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        _proc_status_kib("VmHWM")
    except OSError:
        return False
    return True


class PeakMemory:
    """Peak extra memory used inside a ``with`` block.

    Two measurements, because neither sees everything:

    ``traced_bytes``
        peak of ``tracemalloc``: every allocation made through Python's and
        NumPy's allocators (NumPy arrays included), nothing else.
    ``rss_bytes``
        growth of the process's peak resident set size above its size on
        entry. This includes memory that ``tracemalloc`` cannot see (arrays
        allocated inside Numba kernels, BLAS work buffers). On Linux the peak
        counter is reset on entry (``/proc/self/clear_refs``) and read from
        ``VmHWM`` (``rss_method = "VmHWM"``); elsewhere it is the increase of
        ``ru_maxrss``, which is zero unless the block exceeds the earlier peak
        of the process, i.e. a lower bound (``rss_method = "ru_maxrss delta"``).
    """

    def __enter__(self):
        self._hwm = _reset_peak_rss()
        if self._hwm:
            self.rss_method = "VmHWM"
            self._rss0 = _proc_status_kib("VmRSS")
        else:
            self.rss_method = "ru_maxrss delta"
            self._rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        tracemalloc.start()
        tracemalloc.reset_peak()
        return self

    def __exit__(self, *exc):
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        self.traced_bytes = peak
        if self._hwm:
            peak_kib = _proc_status_kib("VmHWM")
        else:
            peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.rss_bytes = max(peak_kib - self._rss0, 0) * 1024
        return False


# --------------------------------------------------------------------------- baselines
def ridge_objective(A, b, w, lam=0.0, w_bar=None):
    """``½‖b − A w‖² + (nλ/2)‖w − w̄‖²``, accumulated in float64."""
    n = A.shape[0]
    w = np.asarray(w, dtype=A.dtype)
    r = (b - A @ w).astype(np.float64)
    d = w.astype(np.float64) if w_bar is None else w.astype(np.float64) - w_bar
    return 0.5 * float(r @ r) + 0.5 * n * lam * float(d @ d)


def hard_threshold(v, k):
    """Keep the ``k`` entries of largest magnitude of ``v`` (a new array)."""
    out = np.zeros_like(v)
    if k > 0:
        keep = np.argpartition(np.abs(v), v.size - k)[v.size - k:]
        out[keep] = v[keep]
    return out


def plain_iht(A, b, k, n_iter, *, lam=0.0, w_bar=None, w0=None):
    """Textbook iterative hard thresholding with the constant step ``1/L``.

    ``L = ‖A‖₂² + nλ`` is the Lipschitz constant of the gradient of the
    objective (``‖A‖₂`` from a truncated SVD); starts from ``w0`` (zero by
    default) and runs exactly ``n_iter`` steps in the dtype of ``A``.
    """
    n, p = A.shape
    sigma_max = svds(A, k=1, return_singular_vectors=False, random_state=0)[0]
    step = A.dtype.type(1.0 / (float(sigma_max) ** 2 + n * lam))
    w = np.zeros(p, dtype=A.dtype) if w0 is None else np.array(w0, dtype=A.dtype)
    for _ in range(n_iter):
        grad = A.T @ (A @ w - b)
        if lam > 0:
            grad += A.dtype.type(n * lam) * (w - w_bar)
        w = hard_threshold(w - step * grad, k)
    return w


# --------------------------------------------------------------------------- reporting
def layerwise_chita_options(max_iter=None, swaps=None):
    """``solve_gram`` options of layer-wise CHITA cells: the library's defaults, with the given ones over them."""
    from chita_nn.methods.layerwise.chita import SOLVER_DEFAULTS

    given = {"max_iter": max_iter, "swaps": swaps}
    return {**SOLVER_DEFAULTS, **{key: value for key, value in given.items() if value is not None}}


def environment(args):
    """Machine (usable CPUs, thread settings), library versions, arguments and the load average at start."""
    import numba
    import scipy
    import sklearn

    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "arguments": vars(args),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "thread_settings": {key: os.environ[key] for key in THREAD_VARIABLES if key in os.environ},
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "scikit-learn": sklearn.__version__,
        "numba": numba.__version__,
        "loadavg_start": os.getloadavg(),
    }


def _cell(value, fmt):
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    return format(value, fmt)


def markdown_table(rows, columns):
    """Render ``rows`` (dicts) as a markdown table.

    ``columns`` is a list of ``(key, header, format_spec)``; a missing or
    ``None`` value prints as "–", strings print as they are.
    """
    lines = ["| " + " | ".join(header for _, header, _ in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(key), fmt) for key, _, fmt in columns) + " |")
    return "\n".join(lines)


def report(name, title, sections, meta, notes=()):
    """Print the tables and save them under ``benchmarks/results/``.

    ``sections`` is a list of ``(heading, rows, columns)``. Writes
    ``<name>.md`` (the tables, the notes and the run metadata) and
    ``<name>.json`` (metadata and the raw rows). The load average at the end
    of the run is added to ``meta``.
    """
    meta = dict(meta, loadavg_end=os.getloadavg())
    parts = [f"# {title}", ""]
    for heading, rows, columns in sections:
        parts += [f"## {heading}", "", markdown_table(rows, columns), ""]
    parts += [f"- {note}" for note in notes]
    parts += ["", "Run: `" + meta["command"] + "`, " + meta["date"]
              + f", {meta['cpu_count']} CPUs, load average (1, 5, 15 min) at start "
              + "{:.2f} {:.2f} {:.2f}".format(*meta["loadavg_start"])
              + ", at end {:.2f} {:.2f} {:.2f}.".format(*meta["loadavg_end"]), ""]
    text = "\n".join(parts)
    print("\n" + text)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"{name}.md").write_text(text)
    payload = {"meta": meta, "notes": list(notes),
               "tables": {heading: rows for heading, rows, _ in sections}}
    (RESULTS_DIR / f"{name}.json").write_text(json.dumps(payload, indent=1, default=_to_json))
    print(f"saved {RESULTS_DIR / name}.md and .json")


def _to_json(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
