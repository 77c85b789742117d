"""``chita-nn export PRUNED.pt``: write a pruned model as plain dense weights, a compact sparse file or
safetensors (see :mod:`chita_nn.core.export`)."""
import importlib.util
from pathlib import Path

from .args import LibraryConstant, UsageError
from .paths import check_input_file, check_output_file

def cmd_export(args):
    import torch  # noqa: F401 -- first, so that a missing torch is reported before anything else

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
                                                                   "safetensors",
                              description="Export pruned.pt (or a gradual run's final.pt) without prune masks.")
    p.add_argument("pruned", metavar="PRUNED", help="pruned.pt written by 'chita-nn prune' or final.pt of "
                                                    "'chita-nn gradual'")
    p.add_argument("--format", choices=LibraryConstant("chita_nn.core.export", "FORMATS"), default="dense",
                   metavar="FORMAT", help="dense: state dict for the unmodified model class; compact: bit mask + "
                                          "nonzero values (smallest); safetensors: dense, for Hugging Face tools "
                                          "(%(choices)s; default %(default)s)")
    p.add_argument("--out", default=None, metavar="PATH",
                   help="output file (default: PRUNED with the suffix .dense.pt, .compact.pt or .safetensors)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=cmd_export)
    return p
