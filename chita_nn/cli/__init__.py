"""Command line ``chita-nn``: ``prune`` and ``demo`` (``chita_nn.cli.prune``), ``gradual`` (``.gradual``),
``export`` (``.export``), ``warmup`` (``.warmup``).

Building the parser imports no torch (``chita-nn --help`` is instant); each command imports what it needs.
A user's mistake is one line ``chita-nn: error: ...`` with exit status 2, never a traceback.
"""
import argparse
import logging
import sys

from .. import __version__
from ..core.idle_threads import quiet_idle_threads
from .args import Parser, UsageError, positive_int
from .export import add_export_parser
from .gradual import add_gradual_parser
from .prune import add_demo_parser, add_prune_parser
from .warmup import add_warmup_parser

logger = logging.getLogger(__name__)
NO_TORCH = "chita_nn needs PyTorch: pip install torch (the CPU build: pip install torch --index-url " \
           "https://download.pytorch.org/whl/cpu)"


def _add_global_options(parser, defaults=True):
    """-v, -q and --threads; in subcommands (``defaults=False``) they only override what was given before."""
    def default(value):
        return value if defaults else argparse.SUPPRESS

    parser.add_argument("-v", "--verbose", action="count", default=default(0),
                        help="more log output: -v adds debug messages (and tracebacks of errors)")
    parser.add_argument("-q", "--quiet", action="store_true", default=default(False),
                        help="log warnings and errors only")
    parser.add_argument("--threads", type=positive_int, default=default(None), metavar="N",
                        help="torch threads (default: 1 for the tiny digits model, torch's default otherwise)")


def build_parser():
    """The ``chita-nn`` argument parser (global options are accepted before or after the subcommand)."""
    parser = Parser(prog="chita-nn", description="CHITA / CHITA++ pruning of PyTorch networks")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}",
                        help="print the version and exit")
    _add_global_options(parser)
    common = Parser(add_help=False)
    _add_global_options(common, defaults=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="chita-nn COMMAND --help shows its options")
    for add in (add_prune_parser, add_demo_parser, add_gradual_parser, add_export_parser, add_warmup_parser):
        add(sub, [common])
    return parser


def _configure(args):
    default = getattr(args, "log_level", logging.INFO)  # a command's own default (the demo's: errors only)
    level = logging.DEBUG if args.verbose else max(default, logging.WARNING) if args.quiet else default
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("chita_nn").setLevel(level)


def _run(argv):
    args = build_parser().parse_args(argv)
    _configure(args)
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm():
        return args.func(args)


def _message(exc):
    """A one-line message for an error a user can fix."""
    if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] == "torch":
        return NO_TORCH
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv=None):
    """Run ``chita-nn`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status.

    Ctrl-C ends the program (``argv`` None) with ``chita-nn: interrupted`` and status 130; a call with ``argv`` (in
    a test, a notebook) lets the KeyboardInterrupt reach its caller, which stops as well instead of going on."""
    # Idle OpenMP and OpenBLAS threads sleep instead of spinning (read as the pools load, so before any command
    # imports numpy or torch): spinning pools slowed the kernels between them (layer-wise CHITA on three
    # SmolLM2 blocks: 30.0 -> 25.7 s with the OpenMP policy alone; see core.idle_threads).
    quiet_idle_threads()
    try:
        return _run(argv)
    except (UsageError, ValueError, OSError, MemoryError, ModuleNotFoundError) as exc:
        status = 2
        error = exc
    except FloatingPointError as exc:  # a diverged run: not a usage mistake
        status = 1
        error = exc
    except KeyboardInterrupt:
        if argv is not None:
            raise
        print("chita-nn: interrupted", file=sys.stderr)
        return 130
    logger.debug("details of the error", exc_info=error)
    print(f"chita-nn: error: {_message(error)}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
