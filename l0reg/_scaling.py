"""Power-of-two rescaling of a problem, so that its magnitude never matters.

With ``A = s Â`` (``s`` from :func:`l0reg._design.matrix_scale`), ``b = t b̂``,
``w = (t/s) ŵ``, ``w̄ = (t/s) ŵ̄`` and ``nλ̂ = nλ/s²``,

    F(w) = ½‖b − A w‖² + (nλ/2)‖w − w̄‖² = t² · (½‖b̂ − Â ŵ‖² + (nλ̂/2)‖ŵ − ŵ̄‖²) = t² F̂(ŵ).

The solvers work on F̂, whose data are of order one. ``s`` and ``t`` are
powers of two, so every conversion is exact (barring underflow of values that
the caller's dtype cannot hold either).
"""
import numpy as np

from ._local_search import objective_from_residual


def _exponent(x):
    """``e`` with ``|x| < 2^e`` (``x`` a nonzero finite float)."""
    return int(np.frexp(x)[1])


class Scaling:
    """The exponents ``(e_s, e_t)`` of ``s = 2^e_s`` and ``t = 2^e_t`` for one problem."""

    def __init__(self, design, b, w_bar):
        self.e_s = _exponent(design.scale) - 1  # design.scale = 2^e_s exactly
        peak_b = float(np.max(np.abs(b), initial=0.0))
        peak_w = float(np.max(np.abs(w_bar), initial=0.0))
        # t covers b and A w̄ (whose entries are at most s·p·max|w̄|), without overflowing on the way.
        candidates = [_exponent(peak_b)] if peak_b > 0 else []
        if peak_w > 0:
            candidates.append(self.e_s + _exponent(peak_w))
        self.e_t = max(candidates, default=0)

    def data(self, b):
        """``b̂ = b / t`` (float64)."""
        return np.ldexp(np.asarray(b, dtype=np.float64), -self.e_t)

    def coef(self, w):
        """``ŵ = (s/t) w`` (float64) for coefficients in the caller's units."""
        return np.ldexp(np.asarray(w, dtype=np.float64), self.e_s - self.e_t)

    def uncoef(self, w_hat):
        """``w = (t/s) ŵ``: coefficients back in the caller's units (float64)."""
        return np.ldexp(w_hat, self.e_t - self.e_s)

    def penalty(self, nlam):
        """``nλ̂ = nλ / s²``."""
        return float(np.ldexp(nlam, -2 * self.e_s))

    def objective(self, value_hat):
        """``F = t² F̂``."""
        return float(np.ldexp(value_hat, 2 * self.e_t))


def exact_objective(design, b_hat, w_hat, w_bar_hat, nlam_hat):
    """``F̂(ŵ)``, the residual accumulated in float64 over the support of ``ŵ``."""
    support = np.flatnonzero(w_hat)
    r = design.residual(b_hat, support, w_hat[support])
    return objective_from_residual(r, w_hat, w_bar_hat, nlam_hat)
