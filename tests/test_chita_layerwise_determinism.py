"""Layer-wise CHITA is deterministic: the same layer problem gives the same weights bit for bit, cold (the
first call of a fresh process, Numba kernels loaded or compiled) or warm (a second call), in two processes.
(Across different thread counts BLAS and LAPACK sum in other orders, so only the thread count is fixed.)"""
import os
import sys

from _procs import run

SCRIPT = """
import hashlib
import torch
from chita_nn.methods.layerwise.budget import Budget
from chita_nn.methods.layerwise.chita import chita

g = torch.Generator().manual_seed(0)
p = 192
X = torch.randn(400, p, generator=g, dtype=torch.float64)
X = X @ (torch.eye(p, dtype=torch.float64) + 0.3 * torch.randn(p, p, generator=g, dtype=torch.float64))
H = X.T @ X / len(X)
W = torch.randn(96, p, generator=g, dtype=torch.float64)
for budget in 2 * (Budget(0.7), Budget(0.7, per_row=False), Budget(0.5, n=2, m=4)):
    W_new, keep = chita(W, H, budget)
    print(hashlib.sha256(W_new.numpy().tobytes() + keep.numpy().tobytes()).hexdigest())
"""


def _digests(threads):
    env = {**os.environ, **{name: str(threads) for name in
                            ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")}}
    done = run([sys.executable, "-c", SCRIPT], env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split()


def test_same_weights_bit_for_bit_cold_warm_and_in_another_process():
    first = _digests(2)
    assert len(first) == 6
    assert first[3:] == first[:3]  # warm == cold
    assert _digests(2) == first
