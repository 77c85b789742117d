"""chita_nn: CHITA / CHITA++ second-order pruning of PyTorch networks, built on l0reg."""
__version__ = "0.1.0"
