"""The summary returned by every pruning call."""
import json
from dataclasses import asdict, dataclass, field


@dataclass
class LayerReport:
    """One pruned tensor: ``sparsity = 1 − nonzeros / numel``."""

    name: str
    shape: tuple
    numel: int
    nonzeros: int
    #: Layer-wise pruning only: ``‖X(W̄ − W)ᵀ‖²_F / ‖XW̄ᵀ‖²_F`` on the layer's calibration inputs X.
    reconstruction_error: float = None

    @property
    def sparsity(self):
        return 1.0 - self.nonzeros / self.numel if self.numel else 0.0


@dataclass
class StageReport:
    """One stage of a (multi-stage) prune (``step`` is nan when the magnitude safeguard was taken).

    ``objective_start`` is the quadratic model ``½‖b − A w‖² + (nλ/2)‖w − w̄‖²``
    at the magnitude projection of the stage's centre ``w̄``; ``objective`` is
    its value at the stage's solution (before any line search).  Whether the
    combinatorial search mattered: ``objective_refit`` is the model at the exact
    refit of the solver's start support (the screening support; with
    ``score="magnitude"`` the magnitude support), i.e. without any search (nan
    when unknown); ``overlap`` the fraction of magnitude pruning's support kept
    by the solver; ``kept`` the step-search candidate taken (``"α=0.5"``,
    ``"magnitude"``, or ``"solver"`` without a step search).
    """

    sparsity: float
    k: int
    objective_start: float
    objective: float
    step: float = 1.0
    train_loss: float = float("nan")
    time_gradients: float = 0.0
    time_solve: float = 0.0
    objective_refit: float = float("nan")
    overlap: float = float("nan")
    kept: str = ""


@dataclass
class PruneReport:
    """What a pruning call did: per-layer sparsities, stages, objectives, timings."""

    method: str
    target_sparsity: float
    layers: list = field(default_factory=list)
    stages: list = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    #: Warnings of the run (also logged), e.g. negligible Fisher rows.
    warnings: list = field(default_factory=list)
    time_gradients: float = 0.0
    time_solve: float = 0.0
    time_total: float = 0.0

    @property
    def numel(self):
        return sum(layer.numel for layer in self.layers)

    @property
    def nonzeros(self):
        return sum(layer.nonzeros for layer in self.layers)

    @property
    def sparsity(self):
        """Overall sparsity of the pruned tensors."""
        return 1.0 - self.nonzeros / self.numel if self.numel else 0.0

    @property
    def fallbacks(self):
        """Stages that kept the magnitude solution (the safeguard of :mod:`chita_nn.methods.safeguard`)."""
        return sum(1 for stage in self.stages if stage.kept == "magnitude")

    @property
    def fallback_summary(self):
        """One line on the magnitude fallbacks, or "" when there were none."""
        if not self.fallbacks:
            return ""
        if self.fallbacks == len(self.stages):
            return (f"magnitude fallback: every stage ({self.fallbacks}) kept the magnitude solution: "
                    f"the result is magnitude pruning")
        return f"magnitude fallback: {self.fallbacks} of {len(self.stages)} stages kept the magnitude solution"

    @property
    def objective_start(self):
        """Quadratic objective of magnitude pruning in the first stage (nan for MP)."""
        return self.stages[0].objective_start if self.stages else float("nan")

    @property
    def objective_final(self):
        """Quadratic objective of the solution in the last stage (nan for MP)."""
        return self.stages[-1].objective if self.stages else float("nan")

    def to_dict(self):
        out = asdict(self)
        for layer, d in zip(self.layers, out["layers"]):
            d["shape"] = list(layer.shape)
            d["sparsity"] = layer.sparsity
        out.update(sparsity=self.sparsity, numel=self.numel, nonzeros=self.nonzeros, fallbacks=self.fallbacks,
                   objective_start=self.objective_start, objective_final=self.objective_final)
        return out

    def to_json(self, path):
        with open(path, "w") as fh:
            json.dump(self.to_dict(), fh, indent=2, default=str)

    def __str__(self):
        width = max([len("layer")] + [len(layer.name) for layer in self.layers])
        lines = [f"PruneReport: method={self.method} target={self.target_sparsity:.4f} "
                 f"sparsity={self.sparsity:.4f} ({self.nonzeros}/{self.numel} weights kept)",
                 f"  {'layer':<{width}}  {'shape':<18} {'nonzeros':>9} {'sparsity':>8}"]
        for layer in self.layers:
            shape = "x".join(map(str, layer.shape))
            lines.append(f"  {layer.name:<{width}}  {shape:<18} {layer.nonzeros:>9d} {layer.sparsity:>8.4f}")
        if self.stages:
            lines.append(f"  {'stage':>5} {'sparsity':>8} {'k':>8} {'obj(MP)':>12} {'obj(refit)':>12} "
                         f"{'obj':>12} {'overlap':>7} {'kept':>9} {'train loss':>10} {'grad s':>7} "
                         f"{'solve s':>7}")
            for i, st in enumerate(self.stages, 1):
                lines.append(f"  {i:>5d} {st.sparsity:>8.4f} {st.k:>8d} {st.objective_start:>12.5g} "
                             f"{st.objective_refit:>12.5g} {st.objective:>12.5g} {st.overlap:>7.3f} "
                             f"{st.kept:>9} {st.train_loss:>10.4g} {st.time_gradients:>7.2f} "
                             f"{st.time_solve:>7.2f}")
        lines += [f"  WARNING {line}" for line in [*self.warnings, self.fallback_summary] if line]
        lines.append(f"  time: gradients {self.time_gradients:.2f}s, solve {self.time_solve:.2f}s, "
                     f"total {self.time_total:.2f}s")
        return "\n".join(lines)
