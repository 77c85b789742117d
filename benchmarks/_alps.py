"""ALPS (Meng et al., NeurIPS 2024) as an optional peer: its public per-layer solver run on CPU.

The code is never part of this project: pass the path of a checkout of https://github.com/mazumder-lab/ALPS
(its ``alps.py``).  Its source is read and run with the device strings changed to ``cpu`` (it hard-codes
``'cuda:0'``), nothing else; its defaults (``rho=0.1``, 300 iterations, its dampening 0.01 and layer-wide
selection) are its own.
"""
import time
import types
from pathlib import Path

import torch


def load_alps(path):
    """The ``alps`` module of the checkout at ``path`` (a folder holding ``alps.py``), run on CPU."""
    source = Path(path, "alps.py")
    if not source.is_file():
        raise FileNotFoundError(f"--alps {path}: no alps.py there (a checkout of github.com/mazumder-lab/ALPS)")
    text = source.read_text().replace("'cuda:0'", "'cpu'").replace('"cuda:0"', '"cpu"')
    text = text.replace("torch.cuda.synchronize()", "pass")
    module = types.ModuleType("alps")
    exec(compile(text, str(source), "exec"), module.__dict__)
    return module


def alps_prune(alps, W, H, *, sparsity=None, nm=None, n_tokens=1):
    """``(W_new, seconds)``: ALPS's ``ALPS_admm`` with its defaults on the layer ``W`` (r × p) with Gram
    ``H = XᵀX / n`` (it reads ``XᵀX``; ``n_tokens`` scales it back, which changes nothing but round-off)."""
    layer = torch.nn.Linear(W.shape[1], W.shape[0], bias=False)
    layer.weight.data = W.float().clone()
    solver = alps.ALPS_prune(layer, nsamples=1, seqlen=1)
    solver.XtX = (H.float() * n_tokens).clone()
    start = time.perf_counter()
    if nm is not None:
        solver.ALPS_admm(sp=0.0, nm_n=nm[0], nm_m=nm[1])
    else:
        solver.ALPS_admm(sp=sparsity)
    return layer.weight.data.clone(), time.perf_counter() - start
