"""The progress plot of a gradual run: test accuracy, sparsity and learning rate per epoch (matplotlib, optional)."""
import logging

import numpy as np

logger = logging.getLogger(__name__)


def plot_history(history, path):
    """Test accuracy, sparsity and learning rate per epoch, saved as an image (matplotlib, Agg backend).

    Without matplotlib nothing is drawn: a warning says how to get the plot, and False is returned.
    """
    try:
        import matplotlib
    except ModuleNotFoundError:
        logger.warning("matplotlib is not installed, so no %s is drawn (pip install matplotlib, or "
                       "pip install 'chita[plot]')", path)
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] + 1 for r in history]
    fig, axes = plt.subplots(3, 1, figsize=(6, 7), sharex=True)
    axes[0].plot(epochs, [100 * r["test_accuracy"] for r in history], "o-", label="test")
    axes[0].plot(epochs, [100 * r["test_accuracy_after_prune"] if r["test_accuracy_after_prune"] is not None
                          else np.nan for r in history], "x", label="right after prune event")
    axes[0].set_ylabel("accuracy (%)")
    axes[0].legend()
    axes[1].plot(epochs, [r["sparsity"] for r in history], "o-")
    axes[1].set_ylabel("sparsity")
    axes[2].semilogy(epochs, [r["lr"] for r in history], "o-")
    axes[2].set_ylabel("lr (last step of epoch)")
    axes[2].set_xlabel("epoch")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
