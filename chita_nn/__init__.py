"""chita_nn: CHITA / CHITA++ second-order pruning of PyTorch networks, built on l0reg.

The main entry points::

    from chita_nn import CHITAPlusPlus, SparseGPT, prune
    report = prune(model, (X_train, y_train), CHITAPlusPlus(sparsity=0.9))   # one recipe object per method
    report = prune(llm, batches, SparseGPT(pattern="2:4"))                   # layer by layer
    print(report)

Pruned weights are written back with ``torch.nn.utils.prune`` masks
(``weight_orig`` / ``weight_mask``), so ``prune.remove`` works as usual.
"""
import importlib

#: Public name -> module that defines it.  Modules are imported on first use, so ``import chita_nn`` (and
#: ``chita-nn --help``) does not load torch.
_EXPORTS = {
    ".core.fisher": ("FisherSample", "empirical_fisher", "fisher_nbytes"),
    ".core.params": ("ParamLayout", "PrunableParam", "select_parameters"),
    ".core.report": ("PruneReport",),
    ".core.runtime": ("evaluate",),
    ".core.writeback": ("load_pruned", "recompute_batchnorm", "save_pruned"),
    ".core.export": ("export", "load_export"),
    ".core.idle_threads": ("quiet_idle_threads",),
    ".methods.distributed": ("distributed_block_prune",),
    ".methods.gradual": ("GradualConfig", "load_recipe", "run_gradual"),
    ".methods.oneshot": ("magnitude_prune", "prune"),
    ".methods.recipe_types": ("CHITA", "CHITAPlusPlus", "LayerwiseCHITA", "Magnitude", "PruneRecipe", "SparseGPT",
                              "Wanda"),
    ".methods.scale": ("block_prune",),
    ".methods.schedules": ("sparsity_schedule",),
    ".zoo.datasets": ("load_cifar10", "load_digits_data", "load_mnist", "resolve_data_dir", "subset"),
    ".zoo.models": ("DigitsMLP", "MLPNet", "ResNet20", "load_mlpnet", "load_resnet20", "train_digits_mlp"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULE_OF[name], __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


__version__ = "0.1.0"
