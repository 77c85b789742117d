"""Layer-wise solvers on the same layer problems of SmolLM2-135M: SparseGPT, ALPS and layer-wise CHITA.

The layers: q_proj, o_proj, gate_proj and down_proj of blocks 0, 15 and 29, with the Gram matrix
``H = XᵀX / n`` of their inputs in the *dense* model (32 × 256 calibration tokens drawn as in
``layerwise_lm.py``).  Budgets: 70% and 80% per row and per layer, and 2:4.  Every solver gets the same
``(W̄, H)`` and budget; the score is the undamped relative error ``tr((W̄−W)H(W̄−W)ᵀ)/tr(W̄HW̄ᵀ)``.

ALPS (Meng et al., NeurIPS 2024) is the public code of its authors, run with its defaults on CPU
(``_alps.py``): pass ``--alps PATH`` (a checkout of github.com/mazumder-lab/ALPS, never part of this
project); its rows are skipped with a message otherwise.  ALPS selects over the whole layer (its
``ALPS_admm`` has no per-row mode), so it runs on the layer budgets and 2:4 only.

    HF_HUB_OFFLINE=1 python benchmarks/alps_layers.py --alps ../ALPS
    HF_HUB_OFFLINE=1 python benchmarks/alps_layers.py --layers 15.self_attn.q_proj --budgets 0.7,layer

Writes ``benchmarks/results/alps_layers.{md,json}``.
"""
import argparse
import logging
import os
import statistics
import time

from chita_nn.core.idle_threads import quiet_idle_threads

os.environ.setdefault("HF_HUB_OFFLINE", "1")
quiet_idle_threads()  # before torch and numpy load (chita_nn.core.idle_threads)

import torch  # noqa: E402

from _common import environment, report  # noqa: E402
from layerwise_lm import document_tokens, load_model, model_folder, segments  # noqa: E402

from chita_nn.methods.layerwise.budget import Budget  # noqa: E402
from chita_nn.methods.layerwise.chita import chita  # noqa: E402
from chita_nn.methods.layerwise.error import relative_error  # noqa: E402
from chita_nn.methods.layerwise.sparsegpt import sparsegpt  # noqa: E402

LAYERS = tuple(f"{b}.{m}" for b in (0, 15, 29)
               for m in ("self_attn.q_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.down_proj"))
BUDGETS = ("0.7,row", "0.7,layer", "0.8,row", "0.8,layer", "2:4")


def parse_budget(text):
    """``Budget`` from ``"0.7,row"``, ``"0.8,layer"`` or ``"2:4"``."""
    if ":" in text:
        n, m = (int(x) for x in text.split(":"))
        return Budget(1 - n / m, n=n, m=m)
    sparsity, kind = text.split(",")
    return Budget(float(sparsity), per_row=kind == "row")


def layer_problems(names, args):
    """``{name: (W̄, H)}`` (float64) from one pass of the dense model over the calibration segments."""
    model, tokenizer = load_model(model_folder())
    calibration, _ = segments(document_tokens(tokenizer), n_calib=args.calib_segments, calib_len=args.calib_len,
                              n_eval=1, eval_len=1)
    modules = dict(model.named_modules())
    sums, counts, handles = {}, {}, []

    def hook(name):
        def accumulate(module, inputs, output):
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).double()
            sums[name] = sums.get(name, 0) + x.T @ x
            counts[name] = counts.get(name, 0) + x.shape[0]
        return accumulate

    for name in names:
        handles.append(modules[f"model.layers.{name}"].register_forward_hook(hook(name)))
    with torch.no_grad():
        for batch in calibration.split(8):
            model(input_ids=batch)
    for handle in handles:
        handle.remove()
    return {name: (modules[f"model.layers.{name}"].weight.detach().double().clone(), sums[name] / counts[name])
            for name in names}


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--alps", help="path of a checkout of github.com/mazumder-lab/ALPS (optional)")
    parser.add_argument("--layers", nargs="+", default=LAYERS)
    parser.add_argument("--budgets", nargs="+", default=BUDGETS)
    parser.add_argument("--calib-segments", type=int, default=32)
    parser.add_argument("--calib-len", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="alps_layers")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    alps = None
    if args.alps:
        from _alps import load_alps
        alps = load_alps(args.alps)
    else:
        logging.warning("ALPS rows skipped: no --alps PATH (a checkout of github.com/mazumder-lab/ALPS)")
    problems = layer_problems(args.layers, args)
    # Numba kernels compiled outside the timed cells
    warm_W, warm_H = problems[args.layers[0]]
    chita(warm_W[:8], warm_H, parse_budget(args.budgets[0]))
    rows = []
    for name in args.layers:
        W, H = problems[name]
        n_tokens = args.calib_segments * args.calib_len
        for text in args.budgets:
            budget = parse_budget(text)
            row = {"layer": name, "budget": text}
            (W_s, _), row["sparsegpt_s"] = timed(lambda: sparsegpt(W, H, budget))
            row["sparsegpt"] = relative_error(W, W_s, H)
            (W_c, keep), row["chita_s"] = timed(lambda: chita(W, H, budget))
            row["chita"] = relative_error(W, W_c, H)
            row["chita_kept"] = int(keep.sum())
            if alps is not None and (budget.nm or not budget.per_row):
                from _alps import alps_prune
                W_a, row["alps_s"] = alps_prune(alps, W, H, sparsity=budget.sparsity,
                                                nm=(budget.n, budget.m) if budget.nm else None, n_tokens=n_tokens)
                row["alps"] = relative_error(W, W_a.double(), H)
                row["alps_kept"] = int((W_a != 0).sum())
                row["chita/alps"] = row["chita"] / row["alps"]
                row["time chita/alps"] = row["chita_s"] / row["alps_s"]
            logging.info("%s", row)
            rows.append(row)
    ratios = [row["chita/alps"] for row in rows if "chita/alps" in row]
    times = [row["time chita/alps"] for row in rows if "time chita/alps" in row]
    notes = []
    if ratios:
        notes.append(f"CHITA/ALPS error: median {statistics.median(ratios):.3f}, max {max(ratios):.3f}, "
                     f"CHITA below ALPS in {sum(r <= 1 for r in ratios)} of {len(ratios)} cells; "
                     f"time CHITA/ALPS: median {statistics.median(times):.2f}, max {max(times):.2f}")
    columns = [("layer", "layer", ""), ("budget", "budget", "")] + [
        (key, key, ".5f") for key in ("sparsegpt", "alps", "chita")] + [("chita/alps", "CHITA/ALPS", ".3f")] + [
        (key, key, ".2f") for key in ("sparsegpt_s", "alps_s", "chita_s", "time chita/alps")]
    report(args.name, "Layer problems of SmolLM2-135M: relative error and seconds per layer",
           [("cells", rows, columns)], environment(args), notes)


if __name__ == "__main__":
    main()
