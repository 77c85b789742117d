"""l0reg: L0-constrained ridge regression (best-subset selection with a ridge toward a centre).

Solves ``min_w ½‖b − A w‖² + (nλ/2)‖w − w̄‖²  subject to  ‖w‖₀ ≤ k``.
"""
from ._result import SolveResult
from .projection import Projection, TopK
from .solver import objective, solve

__all__ = ["SolveResult", "Projection", "TopK", "objective", "solve"]
__version__ = "0.1.0"
