"""``solver_options`` of layer-wise CHITA: keyword arguments of :func:`l0reg.solve_gram`, checked by name before
any work starts."""
import inspect
from collections.abc import Mapping

import l0reg

#: ``solve_gram`` arguments the pipeline sets for every layer itself: the Gram matrix and the rows, the target
#: ``C = W̄H`` (solve_gram's default), the ridge (from ``dampening``) and the budget (from ``sparsity``,
#: ``pattern`` and ``per_row``).
SET_PER_LAYER = ("H", "W_bar", "C", "lam", "k", "budget", "projection")


def solver_option_names():
    """The keyword arguments of :func:`l0reg.solve_gram` a user may set: all but :data:`SET_PER_LAYER`."""
    return tuple(name for name in inspect.signature(l0reg.solve_gram).parameters if name not in SET_PER_LAYER)


def check_solver_options(solver_options, method):
    """``solver_options`` as a dict (empty for None); ``TypeError`` / ``ValueError`` naming the argument and
    the option the user typed, with the valid ones."""
    if solver_options is None:
        return {}
    if not isinstance(solver_options, Mapping):
        raise TypeError(f"solver_options must be a dict of l0reg.solve_gram options, got "
                        f"{type(solver_options).__name__}")
    if solver_options and method != "chita":
        raise ValueError(f"solver_options apply to method='chita' only (they are l0reg.solve_gram's), got "
                         f"method={method!r}")
    valid = solver_option_names()
    for name in solver_options:
        if name in SET_PER_LAYER:
            raise ValueError(f"solver_options: {name!r} is set for every layer by the pruning itself (from "
                             f"sparsity, pattern, per_row and dampening); options: {', '.join(valid)}")
        if name not in valid:
            raise ValueError(f"solver_options: unknown option {name!r}; options (of l0reg.solve_gram): "
                             f"{', '.join(valid)}")
    return dict(solver_options)
