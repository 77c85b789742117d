"""l0reg: L0-constrained ridge regression (best-subset selection with a ridge toward a centre).

Solves ``min_w ½‖b − A w‖² + (nλ/2)‖w − w̄‖²  subject to  ‖w‖₀ ≤ k``.
"""
from ._brute_force import brute_force, solve_on_support
from ._result import SolveResult
from .certify import CertifyResult, Progress, certify
from .blocks import BlocksResult, solve_blocks
from .columns import column_means, column_norms_sq
from .estimator import L0RidgeRegressor
from ._gram_admm import GramEigh, gram_eigh
from .gram import GramResult, admm_supports, solve_gram
from .path import L0RidgeCV, l0_path
from .projection import NM, Groups, Projection, TopK, projection_mask
from .solver import objective, solve

__all__ = ["BlocksResult", "CertifyResult", "Progress", "certify", "GramEigh", "GramResult", "admm_supports", "gram_eigh", "Groups", "L0RidgeCV", "L0RidgeRegressor", "NM", "Projection", "SolveResult", "TopK",
           "brute_force", "column_means", "column_norms_sq", "l0_path", "objective", "projection_mask", "solve", "solve_gram",
           "solve_blocks", "solve_on_support"]
__version__ = "0.1.0"
