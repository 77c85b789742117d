"""Models, data and losses named on the command line: ``module:callable`` (any importable factory),
``hf:PATH`` (a local Hugging Face folder, a GGUF file or a packaged model), or a name of the model zoo."""
import importlib
import sys
from pathlib import Path

#: ``--loss`` names and their ready-made losses (``chita_nn.core.losses``).
#: ``-true-fisher``: the Fisher rows use targets sampled from the model (``fisher="true"``).
LOSSES = ("cross-entropy", "cross-entropy-true-fisher", "causal-lm", "causal-lm-true-fisher", "mse",
          "mse-true-fisher", "distillation-mse", "distillation-cosine")


def load_callable(spec, flag):
    """The object ``name`` of ``module`` for ``spec = "module:name"`` (the current folder is importable)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{flag} must be 'module:callable', got {spec!r}")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"{flag} {spec!r}: cannot import module {module_name!r} ({exc})") from exc
    target = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ValueError(f"{flag} {spec!r}: {module_name!r} has no attribute {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"{flag} {spec!r} is not callable")
    return target


def call_factory(spec, flag):
    """``load_callable(spec)()``; an exception inside the factory is reported naming ``flag``."""
    factory = load_callable(spec, flag)
    try:
        return factory()
    except Exception as exc:
        raise ValueError(f"{flag} {spec!r} failed: {type(exc).__name__}: {exc}") from exc


def make_loss(spec):
    """The loss for ``--loss``: one of :data:`LOSSES` or ``module:callable`` (a loss function itself)."""
    from ..core import losses

    if spec is None:
        return None
    ready = {"cross-entropy": losses.cross_entropy, "causal-lm": losses.causal_lm,
             "cross-entropy-true-fisher": lambda: losses.cross_entropy(fisher="true"),
             "causal-lm-true-fisher": lambda: losses.causal_lm(fisher="true"),
             "mse": losses.mse, "mse-true-fisher": lambda: losses.mse(fisher="true"),
             "distillation-mse": lambda: losses.distillation("mse"),
             "distillation-cosine": lambda: losses.distillation("cosine")}
    if spec in ready:
        return ready[spec]()
    return load_callable(spec, "--loss")
