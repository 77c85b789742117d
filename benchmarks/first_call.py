"""The first layer-wise CHITA call of a new process: Numba's compile with an empty on-disk cache (a new
environment), with the cache an earlier process wrote, and after ``chita-nn warmup``.

Each cell is a new Python process timing ``METHODS["chita"](W, H, Budget(0.7))`` on a random layer (rows × p, H
from 4p Gaussian samples) twice: the first call compiles (or loads) the kernels, the second is the work alone;
compile = first − second, in CPU seconds of the process (user + system: Numba compiles on one thread, so on
an idle machine that is the wall time; on a loaded one wall time also counts the waits for a core) and in wall
seconds.  ``NUMBA_CACHE_DIR`` is a new, empty folder per (code, shape): "cold" is the first process
on it, "cached" a second process on the same folder; "after warmup" runs ``chita-nn warmup`` in a fresh folder
first (its time in the notes).  ``--baseline REV`` runs the same cells on the ``l0reg``/``chita_nn`` of git
revision REV (``git archive``), alternated with the working tree's so that both see the same load.  Threads:
OMP/NUMBA_NUM_THREADS=1 in every process.

    PYTHONPATH=. python benchmarks/first_call.py --baseline 0fe7f4f     # before/after in one run
    PYTHONPATH=. python benchmarks/first_call.py --quick                # 64 x 128 only, no baseline
"""
import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

from _common import environment, report

ROOT = Path(__file__).resolve().parents[1]
SHAPES = ((64, 128), (576, 576))
CHILD = """
import json, resource, sys, time
def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
t0 = time.perf_counter()
import numpy as np, torch
from chita_nn.methods.layerwise import METHODS, Budget
t1 = time.perf_counter()
rows, p = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
X = rng.standard_normal((4 * p, p))
H, W = torch.from_numpy(X.T @ X / (4 * p)), torch.from_numpy(rng.standard_normal((rows, p)))
times, cpus = [], []
for _ in range(2):
    start, start_cpu = time.perf_counter(), cpu()
    METHODS["chita"](W, H, Budget(0.7))
    times.append(time.perf_counter() - start)
    cpus.append(cpu() - start_cpu)
print(json.dumps({"import_s": t1 - t0, "first_s": times[0], "second_s": times[1], "first_cpu_s": cpus[0],
                  "second_cpu_s": cpus[1]}))
"""
WARMUP = "import resource, time; t = time.perf_counter(); from chita_nn.cli import main; main(['warmup']); " \
         "u = resource.getrusage(resource.RUSAGE_SELF); print(time.perf_counter() - t, u.ru_utime + u.ru_stime)"


def _run(code, args, tree, cache):
    env = dict(os.environ, PYTHONPATH=str(tree), NUMBA_CACHE_DIR=str(cache), OMP_NUM_THREADS="1",
               NUMBA_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env, capture_output=True, text=True,
                         check=True, cwd=tempfile.gettempdir())
    return out.stdout.strip().splitlines()[-1]


def _cell(code_name, tree, shape, cache, state):
    row = json.loads(_run(CHILD, shape, tree, cache))
    row.update(code=code_name, shape=f"{shape[0]} x {shape[1]}", cache=state,
               compile_s=row["first_s"] - row["second_s"], compile_cpu_s=row["first_cpu_s"] - row["second_cpu_s"])
    print(f"  {code_name:>10} {row['shape']:>10} {state:>12}: first {row['first_s']:.1f} s, "
          f"work {row['second_s']:.2f} s, compile {row['compile_cpu_s']:.1f} CPU s", file=sys.stderr)
    return row


def _extract(rev, folder):
    """The packages of git revision ``rev`` in ``folder``."""
    archive = subprocess.run(["git", "archive", rev, "l0reg", "chita_nn"], cwd=ROOT, capture_output=True,
                             check=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=None, metavar="REV", help="git revision to compare with")
    parser.add_argument("--quick", action="store_true", help="the 64 x 128 layer only")
    args = parser.parse_args()
    meta = environment(args)
    shapes = SHAPES[:1] if args.quick else SHAPES
    rows, notes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        codes = [("this tree", ROOT)]
        if args.baseline:
            codes.insert(0, (args.baseline, _extract(args.baseline, tmp / "baseline")))
        for shape in shapes:
            for name, tree in codes:
                cache = tmp / f"cache-{name.replace(' ', '-')}-{shape[0]}x{shape[1]}"
                rows += [_cell(name, tree, shape, cache, "cold"), _cell(name, tree, shape, cache, "cached")]
        warm = tmp / "cache-warmup"
        seconds, cpu_seconds = map(float, _run(WARMUP, (), ROOT, warm).split())
        notes.append(f"`chita-nn warmup` (empty cache): {seconds:.1f} s wall, {cpu_seconds:.1f} CPU s "
                     "(imports included)")
        rows += [_cell("this tree", ROOT, shape, warm, "after warmup") for shape in shapes]
    columns = [("code", "code", ""), ("shape", "rows x p", ""), ("cache", "Numba cache", ""),
               ("import_s", "import (s)", ".1f"), ("first_s", "first call (s)", ".2f"),
               ("second_s", "second call: the work (s)", ".2f"), ("compile_s", "compile, wall (s)", ".2f"),
               ("first_cpu_s", "first call, CPU (s)", ".2f"), ("compile_cpu_s", "compile, CPU (s)", ".2f")]
    notes.append("compile = first call - second call, each in a new process; CPU = user + system seconds of the "
                 "process (Numba compiles on one thread: the wall time of an idle machine); the machine's load "
                 "average is below: compare only rows of one run")
    report("first_call_quick" if args.quick else "first_call",
           "First layer-wise CHITA call of a new process: Numba compile", [("Cells", rows, columns)], meta, notes)


if __name__ == "__main__":
    main()
