"""Per-row weight gradients of depthwise Conv2d layers (MobileNet shapes): which formulation is fastest?

For each shape, ``n_rows`` rows of ``m`` samples each, the time of:

* ``grouped``: :func:`chita_nn.core.grad_rows._conv_rows`, one ``conv2d_weight`` with ``n_rows · groups`` groups;
* ``autograd``: one ``torch.autograd.grad`` of the layer per row (what the fallback costs at least);
* ``unfold``: ``F.unfold`` of the input, then ``einsum`` with the output gradient per channel;
* ``windows``: one strided window of the (padded) input per kernel offset, times the output gradient,
  summed over space and the row's samples (``kh · kw`` elementwise products);

and the largest relative error of each against ``autograd``.  Timings on a shared machine: compare the ratios
within one run only.

    python benchmarks/depthwise_rows.py [--repeats 3] [--threads 2]
"""
import argparse
import functools
import itertools

import torch
import torch.nn.functional as F
from torch import nn

from _common import best_time, environment, report
from chita_nn.core.grad_rows import _conv_rows

SHAPES = [  # (channels, spatial size, stride) of MobileNet(V1/V2) depthwise layers, 3×3, padding 1
    (32, 112, 1), (96, 112, 2), (144, 56, 1), (192, 28, 1), (512, 14, 1), (960, 7, 1)]


def autograd_rows(module, x, delta, n_rows):
    rows = []
    for xr, dr in zip(x.chunk(n_rows), delta.chunk(n_rows)):
        rows.append(torch.autograd.grad(module(xr), module.weight, dr)[0].reshape(module.out_channels, -1))
    return torch.stack(rows)


def unfold_rows(module, x, delta, n_rows):
    n, c = x.shape[:2]
    cols = F.unfold(x, module.kernel_size, dilation=module.dilation, padding=module.padding, stride=module.stride)
    cols = cols.reshape(n_rows, n // n_rows, c, -1, delta.shape[2] * delta.shape[3])
    return torch.einsum("rmcjl,rmcl->rcj", cols, delta.reshape(n_rows, n // n_rows, c, -1))


def window_rows(module, x, delta, n_rows):
    (ph, pw), (sh, sw), (dh, dw) = module.padding, module.stride, module.dilation
    x = F.pad(x, (pw, pw, ph, ph))
    n, c, ho, wo = delta.shape
    out = delta.new_empty(n_rows, c, *module.kernel_size)
    delta = delta.reshape(n_rows, n // n_rows, c, ho, wo)
    for i, j in itertools.product(*map(range, module.kernel_size)):
        window = x[:, :, i * dh:i * dh + (ho - 1) * sh + 1:sh, j * dw:j * dw + (wo - 1) * sw + 1:sw]
        out[:, :, i, j] = (window.reshape(n_rows, n // n_rows, c, ho, wo) * delta).sum((1, 3, 4))
    return out.reshape(n_rows, c, -1)


METHODS = {"grouped": _conv_rows, "autograd": autograd_rows, "unfold": unfold_rows, "windows": window_rows}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--rows", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--m", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    meta = environment(args)
    meta["torch"] = torch.__version__
    rows = []
    g = torch.Generator().manual_seed(0)
    for (channels, size, stride), n_rows in itertools.product(SHAPES, args.rows):
        conv = nn.Conv2d(channels, channels, 3, stride=stride, padding=1, groups=channels, bias=False)
        x = torch.randn(n_rows * args.m, channels, size, size, generator=g)
        with torch.no_grad():
            delta = torch.randn_like(conv(x))
        reference = autograd_rows(conv, x, delta, n_rows)
        row = {"C": channels, "HxW": f"{size}x{size}", "stride": stride, "n_rows": n_rows}
        for name, fn in METHODS.items():
            with torch.no_grad() if name != "autograd" else torch.enable_grad():
                result = fn(conv, x, delta, n_rows)
                seconds = best_time(functools.partial(fn, conv, x, delta, n_rows), args.repeats)
            error = ((result - reference).norm() / reference.norm()).item()
            row[f"{name} ms"] = round(1e3 * seconds, 2)
            row[f"{name} err"] = f"{error:.0e}"
        row["grouped/windows"] = round(row["grouped ms"] / row["windows ms"], 2)
        print(row, flush=True)
        rows.append(row)
    columns = [(key, key, "") for key in rows[0]]
    fastest = [min(METHODS, key=lambda name, row=row: row[f"{name} ms"]) for row in rows]
    report("depthwise_rows", "Per-row gradients of depthwise Conv2d (3x3, padding 1)",
           [(f"m = {args.m}, {args.threads} torch threads, best of {args.repeats}", rows, columns)], meta,
           notes=[("errors: relative Frobenius norm against one autograd call per row (of the layer alone: the "
                   "fallback of chita_nn.core.fisher runs the whole network's backward per row)"),
                  "fastest: " + ", ".join(f"{name} on {fastest.count(name)} of {len(rows)}"
                                          for name in METHODS if name in fastest)])


if __name__ == "__main__":
    main()
