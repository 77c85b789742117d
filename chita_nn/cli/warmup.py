"""``chita-nn warmup``: compile l0reg's Numba kernels once for this environment (see
:mod:`chita_nn.methods.warmup`), so that the first pruning call starts at once."""
import logging


def cmd_warmup(args):
    import torch  # noqa: F401 -- first, so that a missing torch is reported before anything else

    from ..methods.warmup import compile_kernels

    seconds = compile_kernels()
    print(f"l0reg's kernels compiled and cached on disk in {seconds:.1f}s: pruning calls in new processes load them")
    return 0


def add_warmup_parser(subparsers, parents=()):
    """The ``warmup`` subcommand."""
    p = subparsers.add_parser("warmup", parents=list(parents), help="compile the solver's kernels once, ahead of "
                                                                    "the first pruning call",
                              description="Compile l0reg's Numba kernels on tiny problems and cache them on disk: "
                                          "the first pruning call of a new environment then skips the compile "
                                          "(about half a minute on 2 cores). Run it once after installing.")
    p.set_defaults(func=cmd_warmup, log_level=logging.WARNING)  # its one line is the output; the log at -v
    return p
