"""Forward hooks that accumulate the Gram matrix ``H = XᵀX / n`` of each layer's inputs.

X stacks the layer's input vectors over all calibration tokens (``(…, p)`` inputs are flattened to rows);
padding tokens are left out when the batch has an ``attention_mask`` (see :meth:`GramCollector.batch`).
Layers that read the same input tensor in a forward pass (q/k/v, gate/up) share one accumulator: the
first such layer owns it, the others are linked to it on the first batch.  Products are taken in
``dtype`` and summed in float64.  With ``diagonal=True`` only ``diag(H)`` (the squared column norms, for
Wanda-style scores) is accumulated.

With ``cross=True`` a *reference pass* (:meth:`GramCollector.reference`) first records each layer's inputs
``X_d`` in the dense model; the following pass of the same batch through the pruned model also accumulates
``G = X_pᵀX_d / n`` (:meth:`GramCollector.cross_gram`), the cross term of ``‖X_d W̄ᵀ − X_p Wᵀ‖²``.
"""
import torch


class StopForward(Exception):
    """Raised by a hook to end a forward pass early (nothing after it is needed)."""


def check_gram_dtype(dtype):
    """``dtype``, or ``ValueError`` naming ``gram_dtype`` unless it is a floating-point torch dtype."""
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"gram_dtype must be a floating-point torch dtype (torch.float64, torch.float32, ...), "
                         f"got {dtype!r}")
    return dtype


class GramCollector:
    """Context manager: hooks on ``modules`` ({name: module}) while open; :meth:`gram` reads the results."""

    def __init__(self, modules, *, dtype=torch.float64, diagonal=False, stop_when_done=False, cross=False):
        check_gram_dtype(dtype)
        self.modules, self.dtype, self.diagonal = dict(modules), dtype, diagonal
        self.stop_when_done = stop_when_done
        self.owner = {}      # layer name -> name of the layer owning its accumulator
        self.sums, self.counts = {}, {}
        self.cross, self.cross_sums, self.references, self._recording = cross, {}, {}, False
        self._token_mask, self._seen, self._fired, self._handles = None, {}, set(), []

    def __enter__(self):
        for name, module in self.modules.items():
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        self._handles, self._seen = [], {}

    def batch(self, token_mask=None):
        """Start a forward pass; ``token_mask`` (bool, any shape of ``batch × seq``) marks real tokens."""
        self._token_mask = None if token_mask is None else token_mask.reshape(-1).bool()
        self._seen, self._fired = {}, set()

    def reference(self, run):
        """Record every layer's inputs while ``run()`` does the dense model's pass of the current batch."""
        self._recording, self.references = True, {}
        try:
            return run()
        finally:
            self._recording = False

    def _hook(self, name):
        def hook(module, args, output):
            x = args[0].detach()
            if self._recording:
                self.references[name] = self._rows(x)
                return
            key = (x.data_ptr(), tuple(x.shape), x.stride())
            if key in self._seen:  # same tensor as an earlier layer of this pass: share its Gram
                owner = self._seen[key][0]
                if self.owner.setdefault(name, owner) != owner:
                    raise RuntimeError(f"layer {name} shared its input with {self.owner[name]} on an earlier "
                                       f"batch but with {owner} now")
            elif self.owner.setdefault(name, name) != name:
                raise RuntimeError(f"layer {name} shared its input with {self.owner[name]} on an earlier batch "
                                   "but not on this one")
            else:
                self._seen[key] = (name, x)  # x kept alive: its address cannot be reused in this pass
                self._add(name, x)
            self._fired.add(name)
            if self.stop_when_done and len(self._fired) == len(self.modules):
                raise StopForward
        return hook

    def _rows(self, x):
        """The input's token rows (padding left out), in ``dtype``."""
        X = x.reshape(-1, x.shape[-1])
        mask = self._token_mask
        if mask is not None and mask.numel() == X.shape[0]:
            X = X[mask.to(X.device)]
        return X.to(self.dtype)

    def _add(self, name, x):
        X = self._rows(x)
        update = (X * X).sum(dim=0) if self.diagonal else X.T @ X
        _accumulate(self.sums, name, update)
        if self.cross:
            _accumulate(self.cross_sums, name, X.T @ self.references[name])
        self.counts[name] = self.counts.get(name, 0) + X.shape[0]

    def gram(self, name):
        """``XᵀX / n`` (or its diagonal) of layer ``name`` (the same tensor for layers sharing inputs)."""
        owner = self.owner.get(name)
        if owner is None:
            raise RuntimeError(f"layer {name} was never called on the calibration data")
        if not self.counts[owner]:
            raise RuntimeError(f"layer {name} saw no unmasked token in the calibration data")
        return self.sums[owner] / self.counts[owner]

    def cross_gram(self, name):
        """``X_pᵀX_d / n`` of layer ``name`` (``cross=True``): pruned-model rows against dense-model rows."""
        self.gram(name)
        owner = self.owner[name]
        return self.cross_sums[owner] / self.counts[owner]


def _accumulate(sums, name, update):
    if name in sums:
        sums[name] += update.to(torch.float64)
    else:
        sums[name] = update.to(torch.float64)
