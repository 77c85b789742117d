"""``chita-nn warmup`` compiles what pruning calls use: in a new process with the same (at first empty) Numba
cache, layer-wise CHITA under other shapes and budgets, global CHITA, CHITA++ and block mode compile nothing."""
import os
import sys

import pytest
from _procs import run

AFTER = """
import torch
from chita_nn import CHITA, CHITAPlusPlus, prune
from chita_nn.methods.layerwise import METHODS, Budget
X = torch.randn(300, 96, dtype=torch.float64)
H, W = X.T @ X / 300, torch.randn(40, 96, dtype=torch.float64)
for budget in (Budget(0.6), Budget(0.5, n=2, m=4), Budget(0.5, per_row=False)):
    METHODS["chita"](W, H, budget)
model = torch.nn.Sequential(torch.nn.Linear(48, 160), torch.nn.ReLU(), torch.nn.Linear(160, 3))
data = (torch.randn(200, 48), torch.randint(0, 3, (200,)))
for recipe in (CHITA(sparsity=0.8, n_rows=50), CHITAPlusPlus(sparsity=0.8, n_rows=50, n_stages=3),
               CHITA(sparsity=0.8, n_rows=50, block_size=1000)):
    prune(model, data, recipe)
"""


def _run(code, cache, debug=False):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    if debug:
        env["NUMBA_DEBUG_CACHE"] = "1"
    return run([sys.executable, "-c", code], timeout=1200, check=True, env=env)


@pytest.mark.slow
def test_after_warmup_pruning_compiles_nothing(tmp_path):
    warmup = _run("from chita_nn.cli import main; raise SystemExit(main(['warmup']))", tmp_path)
    assert warmup.stdout.startswith("l0reg's kernels compiled and cached on disk in ") and not warmup.stderr
    after = _run(AFTER, tmp_path, debug=True)
    log = after.stdout + after.stderr
    assert "data loaded" in log
    assert "data saved" not in log, [line for line in log.splitlines() if "saved" in line]
