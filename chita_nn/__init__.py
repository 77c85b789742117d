"""chita_nn: CHITA / CHITA++ second-order pruning of PyTorch networks, built on l0reg.

The main entry points::

    from chita_nn import prune, magnitude_prune
    report = prune(model, (X_train, y_train), sparsity=0.9, method="chita++")
    print(report)

Pruned weights are written back with ``torch.nn.utils.prune`` masks
(``weight_orig`` / ``weight_mask``), so ``prune.remove`` works as usual.
"""
from .core.fisher import FisherSample, empirical_fisher, fisher_nbytes
from .core.params import ParamLayout, PrunableParam, select_parameters
from .core.report import PruneReport
from .core.runtime import evaluate
from .core.writeback import load_pruned, recompute_batchnorm, save_pruned
from .methods.distributed import distributed_block_prune
from .methods.gradual import GradualConfig, load_recipe, run_gradual
from .methods.oneshot import magnitude_prune, prune
from .methods.scale import block_prune
from .methods.schedules import sparsity_schedule
from .zoo.datasets import (
    load_cifar10,
    load_digits_data,
    load_mnist,
    resolve_data_dir,
    subset,
)
from .zoo.models import (
    DigitsMLP,
    MLPNet,
    ResNet20,
    load_mlpnet,
    load_resnet20,
    train_digits_mlp,
)

__all__ = [
    "DigitsMLP", "FisherSample", "GradualConfig", "block_prune", "distributed_block_prune", "load_recipe",
    "run_gradual", "MLPNet", "ParamLayout", "PrunableParam", "PruneReport", "ResNet20",
    "empirical_fisher", "evaluate", "fisher_nbytes", "load_cifar10", "load_digits_data", "load_mlpnet",
    "load_mnist", "load_pruned", "load_resnet20", "magnitude_prune", "prune", "recompute_batchnorm",
    "resolve_data_dir", "save_pruned", "select_parameters", "sparsity_schedule", "subset", "train_digits_mlp",
]
__version__ = "0.1.0"
