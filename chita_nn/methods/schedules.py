"""Sparsity schedules for multi-stage (CHITA++) pruning.

A schedule is a strictly increasing list ``s_1 < … < s_T = target`` of
sparsities, one per stage, starting after ``start`` (the sparsity the model
already has).  Writing ``r = 1 − s`` for the fraction of weights kept:

- ``"exponential"``: ``r_t = r_0 · (r_T / r_0)^(t/T)`` — the kept fraction
  shrinks geometrically, so the steps are large early and small at high
  sparsity;
- ``"linear"``: ``s_t = s_0 + (s_T − s_0) · t/T``;
- ``"cubic"`` (Zhu & Gupta): ``s_t = s_T + (s_0 − s_T) · (1 − t/T)³``.
"""
import math
import numbers

SCHEDULES = ("exponential", "linear", "cubic")


def sparsity_schedule(target, n_stages, kind="exponential", start=0.0):
    """Return the ``n_stages`` sparsities ``s_1 < … < s_T = target``.

    Parameters
    ----------
    target : float in (start, 1)
        Final sparsity; the last entry equals it exactly.
    n_stages : int >= 1
        Number of stages ``T``.
    kind : {"exponential", "linear", "cubic"}
    start : float in [0, target)
        Sparsity before the first stage (not included in the output).
    """
    if isinstance(n_stages, bool) or not isinstance(n_stages, numbers.Integral) or n_stages < 1:
        raise ValueError(f"n_stages must be a positive integer, got {n_stages!r}")
    if kind not in SCHEDULES:
        raise ValueError(f"kind must be one of {SCHEDULES}, got {kind!r}")
    for name, value in (("target", target), ("start", start)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite real number, got {value!r}")
    if not 0.0 <= start < 1.0:
        raise ValueError(f"start must be in [0, 1), got {start!r}")
    if not start < target < 1.0:
        raise ValueError(f"target must be in (start={start}, 1), got {target!r}")
    T = int(n_stages)
    fractions = [t / T for t in range(1, T + 1)]
    if kind == "exponential":
        r0, rT = 1.0 - start, 1.0 - target
        out = [1.0 - r0 * (rT / r0) ** f for f in fractions]
    elif kind == "linear":
        out = [start + (target - start) * f for f in fractions]
    else:
        out = [target + (start - target) * (1.0 - f) ** 3 for f in fractions]
    out[-1] = float(target)
    return out
