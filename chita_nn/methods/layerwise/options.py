"""``solver_options``: keyword arguments of a solver (:func:`l0reg.solve_gram` for layer-wise CHITA,
:func:`l0reg.solve` for the global one), checked by name before any work starts."""
import inspect
from collections.abc import Mapping

import l0reg

#: ``solve_gram`` arguments the pipeline sets for every layer itself: the Gram matrix and the rows, the target
#: ``C = W̄H`` (solve_gram's default), the ridge (from ``dampening``) and the budget (from ``sparsity``,
#: ``pattern`` and ``per_row``).
SET_PER_LAYER = ("H", "W_bar", "C", "lam", "k", "budget", "projection")


def solver_option_names(solver=l0reg.solve_gram, set_by_caller=SET_PER_LAYER):
    """The keyword arguments of ``solver`` a user may set: all but ``set_by_caller``."""
    return tuple(name for name in inspect.signature(solver).parameters if name not in set_by_caller)


def check_keyword_options(options, solver, set_by_caller, why):
    """``options`` (keyword arguments of ``solver``) as a dict, empty for None; ``TypeError`` / ``ValueError``
    naming ``solver_options`` and the option the user typed, with the valid ones (``why``: how the pruning
    sets those of ``set_by_caller``)."""
    if options is None:
        return {}
    what = f"l0reg.{solver.__name__}"
    if not isinstance(options, Mapping):
        raise TypeError(f"solver_options must be a dict of {what} options, got {type(options).__name__}")
    valid = solver_option_names(solver, set_by_caller)
    for name in options:
        if name in set_by_caller:
            raise ValueError(f"solver_options: {name!r} is set {why}; options: {', '.join(valid)}")
        if name not in valid:
            raise ValueError(f"solver_options: unknown option {name!r}; options (of {what}): {', '.join(valid)}")
    return dict(options)


def check_solver_options(solver_options, method):
    """``solver_options`` of :func:`~.api.prune_layerwise` as a dict (empty for None): ``l0reg.solve_gram``
    options, for ``method='chita'`` only."""
    if solver_options and method != "chita" and isinstance(solver_options, Mapping):
        raise ValueError(f"solver_options apply to method='chita' only (they are l0reg.solve_gram's), got "
                         f"method={method!r}")
    return check_keyword_options(solver_options, l0reg.solve_gram, SET_PER_LAYER,
                                 "for every layer by the pruning itself (from sparsity, pattern, per_row and "
                                 "dampening)")
