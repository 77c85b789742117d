"""The weights of a prunable layer as rows ``(out, in)``, installed and restored in place.

``Linear`` stores ``(out, in)``; Hugging Face's ``Conv1D`` (GPT-2) stores ``(in, out)`` and computes
``x W + b``, so its rows are the transpose.  While a model is pruned block by block, each new weight is
written into the stored values (a reparametrised module's ``*_orig``, with its mask set to ones) so that
later blocks see it; :class:`Snapshot` puts everything back if pruning fails.
"""
import torch
from torch import nn

from ...core.writeback import refresh_effective_weights

SUPPORTED = ("Linear", "Conv1D")


def kind(pp):
    """``"Linear"`` or ``"Conv1D"`` (by class, as :mod:`chita_nn.core.params` matches types), else None."""
    if isinstance(pp.module, nn.Linear):
        return "Linear"
    names = {cls.__name__ for cls in type(pp.module).__mro__}
    return "Conv1D" if "Conv1D" in names and pp.tensor().dim() == 2 else None


def rows(pp):
    """The effective (masked) weight as rows ``(out, in)``, detached."""
    weight = pp.tensor().detach()
    return weight.T if kind(pp) == "Conv1D" else weight


def as_stored(pp, rows_tensor):
    """``rows_tensor`` (out, in) in the layout of the stored parameter."""
    return rows_tensor.T if kind(pp) == "Conv1D" else rows_tensor


@torch.no_grad()
def install(pp, rows_tensor):
    """Make ``rows_tensor`` the layer's effective weight (its mask, if any, set to ones until the end)."""
    if pp.is_reparametrized:
        getattr(pp.module, pp.param_name + "_mask").fill_(1)
    pp.parameter.copy_(as_stored(pp, rows_tensor))
    if pp.is_reparametrized:
        setattr(pp.module, pp.param_name, pp.parameter * getattr(pp.module, pp.param_name + "_mask"))


class Snapshot:
    """Copies (on the CPU) of the stored values and masks of ``params``; :meth:`restore` writes them back."""

    def __init__(self, model, params):
        self.model = model
        self.saved = [(pp, pp.parameter.detach().to("cpu", copy=True),
                       getattr(pp.module, pp.param_name + "_mask").detach().to("cpu", copy=True)
                       if pp.is_reparametrized else None) for pp in params]

    @torch.no_grad()
    def restore(self):
        for pp, values, mask in self.saved:
            pp.parameter.copy_(values)
            if mask is not None:
                getattr(pp.module, pp.param_name + "_mask").copy_(mask)
        refresh_effective_weights(self.model)
