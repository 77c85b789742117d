"""``chita-nn export PRUNED.pt``: write a pruned model as plain dense weights, a compact sparse file or
safetensors; ``chita-nn export FOLDER --format compressed-tensors``: a pruned Hugging Face folder in
llm-compressor's sparse format (see :mod:`chita_nn.core.export`)."""
import importlib.util
import json
from pathlib import Path

from .args import LibraryConstant, UsageError
from .paths import check_input_file, check_input_folder, check_output_file, check_output_folder


def _export_compressed_tensors(args):
    """A Hugging Face folder (``chita-nn prune --model hf:...`` writes OUT/model) to a compressed-tensors folder,
    its tokenizer beside the weights."""
    from ..core.compressed import require_compressed_tensors
    from ..core.export import SUFFIXES, export
    from ..zoo.hf import load_hf

    check_input_folder(args.pruned, "PRUNED")
    config = Path(args.pruned) / "config.json"
    if config.is_file() and "quantization_config" in json.loads(config.read_text()):
        raise UsageError(f"PRUNED {args.pruned}: its config.json has a quantization_config (already compressed or "
                         f"quantised); pass the plain folder that 'chita-nn prune' wrote")
    out = args.out or str(Path(args.pruned).absolute().with_suffix(SUFFIXES[args.format]))
    check_output_folder(out, "--out", previous=("config.json",), overwrite=args.overwrite)
    require_compressed_tensors()
    model, tokenizer = load_hf(args.pruned)
    size = export(model, out, args.format)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    print(f"wrote {out}: {args.format}, {size:,} bytes of weights and config")
    return 0


def cmd_export(args):
    import torch  # noqa: F401 -- first, so that a missing torch is reported before anything else

    if args.format == "compressed-tensors":
        return _export_compressed_tensors(args)
    from ..core.export import SUFFIXES, export, load_state

    check_input_file(args.pruned, "PRUNED")
    out = args.out or str(Path(args.pruned).with_suffix(SUFFIXES[args.format]))
    check_output_file(out, "--out", overwrite=args.overwrite)
    if args.format == "safetensors" and importlib.util.find_spec("safetensors") is None:
        raise UsageError("--format safetensors needs the safetensors package: pip install safetensors "
                         "(or pip install 'chita[hf]')")
    size = export(load_state(args.pruned), out, args.format)
    print(f"wrote {out}: {args.format}, {size:,} bytes ({Path(args.pruned).stat().st_size:,} bytes in "
          f"{args.pruned})")
    return 0


def add_export_parser(subparsers, parents=()):
    """The ``export`` subcommand."""
    p = subparsers.add_parser("export", parents=list(parents), help="export a pruned model: dense, compact, "
                                                                   "safetensors, compressed-tensors",
                              description="Export pruned.pt (or a gradual run's final.pt) without prune masks, "
                                          "or a pruned Hugging Face folder in the compressed-tensors format.")
    p.add_argument("pruned", metavar="PRUNED", help="pruned.pt written by 'chita-nn prune' or final.pt of "
                                                    "'chita-nn gradual'; for --format compressed-tensors the "
                                                    "Hugging Face folder OUT/model of 'chita-nn prune --model "
                                                    "hf:...'")
    p.add_argument("--format", choices=LibraryConstant("chita_nn.core.export", "FORMATS"), default="dense",
                   metavar="FORMAT", help="dense: state dict for the unmodified model class; compact: bit mask + "
                                          "nonzero values (smallest); safetensors: dense, for Hugging Face tools; "
                                          "compressed-tensors: a folder with llm-compressor's sparse-24-bitmask "
                                          "(2:4) or sparse-bitmask weights (%(choices)s; default %(default)s)")
    p.add_argument("--out", default=None, metavar="PATH",
                   help="output file, a folder for compressed-tensors (default: PRUNED with the suffix "
                        ".dense.pt, .compact.pt, .safetensors or .compressed-tensors)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file (or export folder)")
    p.set_defaults(func=cmd_export)
    return p
