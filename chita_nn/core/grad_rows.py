"""Per-sample gradient kernels: the rows of the empirical Fisher for one layer, without a loop over samples.

A kernel takes the layer input ``x`` and ``δ = ∂ℓ/∂(layer output)`` of a batch of ``n_rows · m`` samples
(rows are consecutive groups of ``m`` samples) and returns ``Σ_{s∈row} ∇_W ℓ_s`` for each row, shaped
``(n_rows, …)`` and flattened like the weight.  For ``nn.Linear`` ``∇_W ℓ_s = δ_sᵀ x_s`` (summed over any
token dimensions); for ``nn.Conv2d`` the weight gradient of one grouped convolution.  Parameters without a
kernel fall back to one autograd backward per row (exact, slower).
"""
import torch
from torch import nn


def _linear_rows(module, x, delta, n_rows):
    """``Σ_{s∈row} δ_sᵀ x_s`` for each row: (n_rows, out, in); extra dims of x are summed over."""
    x = x.reshape(n_rows, -1, x.shape[-1])
    delta = delta.reshape(n_rows, -1, delta.shape[-1])
    return torch.bmm(delta.transpose(1, 2), x)


def _conv2d_rows(module, x, delta, n_rows):
    """``Σ_{s∈row} δ_s unfold(x_s)ᵀ`` for each row: (n_rows, out, in·kh·kw).

    Computed as the weight gradient of one grouped convolution (group ``r`` = row ``r``, the row's ``m``
    samples as the batch): 3 to 7 times faster than unfold + einsum on ResNet20's layers.
    """
    n, channels = x.shape[:2]
    m, out = n // n_rows, delta.shape[1]
    x = x.reshape(n_rows, m, channels, *x.shape[2:]).transpose(0, 1).reshape(m, n_rows * channels, *x.shape[2:])
    delta = delta.reshape(n_rows, m, out, *delta.shape[2:]).transpose(0, 1).reshape(m, n_rows * out,
                                                                                     *delta.shape[2:])
    grad = torch.nn.grad.conv2d_weight(x, (n_rows * out, channels, *module.kernel_size), delta,
                                       stride=module.stride, padding=module.padding, dilation=module.dilation,
                                       groups=n_rows)
    return grad.reshape(n_rows, out, -1)


def row_kernel(pp):
    """The per-sample-gradient kernel for this parameter, or None if it needs the autograd fallback.

    Exact types only: a subclass may compute its output differently from the formula the kernels assume.
    """
    module = pp.module
    if pp.param_name != "weight":
        return None
    if type(module) is nn.Linear:
        return _linear_rows
    if (type(module) is nn.Conv2d and module.groups == 1 and module.padding_mode == "zeros"
            and not isinstance(module.padding, str)):
        return _conv2d_rows
    return None
