"""OWL layer budgets (Yin et al., 2023, "Outlier Weighed Layerwise sparsity"), from the paper's description.

Block l's outlier ratio ``D_l`` is the fraction of its weights whose Wanda score ``|W_ij|·‖X_j‖₂`` exceeds
``threshold`` (the paper's M) times the mean score of their layer, on the dense model.  Blocks with more
outliers are pruned less: the ratios are rescaled to ``[0, 2·lambda_]`` and

    s_l = S − (D̃_l − mean(D̃)),

so the sparsities span ``2·lambda_`` around the target S and average to S over the blocks (equal-sized blocks:
the model's overall sparsity is S).
"""
import torch

from .wanda import wanda_scores


def outlier_ratio(weights, norms_squared, threshold):
    """Fraction of the weights of a block (lists of rows W and ``diag H`` per layer) that are outliers."""
    outliers = total = 0
    for W, diag in zip(weights, norms_squared):
        scores = wanda_scores(W, diag)
        outliers += int((scores > threshold * scores.mean()).sum())
        total += scores.numel()
    return outliers / total


def owl_sparsities(ratios, sparsity, lambda_):
    """Per-block sparsities from the blocks' outlier ratios (see the module); clipped to [0, 1)."""
    ratios = torch.as_tensor(ratios, dtype=torch.float64)
    spread = ratios.max() - ratios.min()
    scaled = (ratios - ratios.min()) / spread * 2 * lambda_ if spread > 0 else torch.zeros_like(ratios)
    return (sparsity - (scaled - scaled.mean())).clamp(0.0, 1.0 - 1e-6).tolist()
