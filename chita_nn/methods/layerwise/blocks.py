"""The repeated blocks of a model (transformer layers) and running them one at a time on cached inputs.

The blocks are the largest ``nn.ModuleList`` (or ``nn.Sequential``) of two or more modules of one type:
``model.layers`` (Llama, SmolLM2), ``encoder.layer`` (BERT, MiniLM), ``transformer.h`` (GPT-2).  The model is
assumed to call them one after the other, each on the previous one's output (checked on the first batch
by :func:`capture`), with the same extra arguments (attention masks, position embeddings or ids): those
are captured once per batch at block 0 and reused for every block.
"""
import logging
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ...core.batches import forward, split, to_device
from .gram_hooks import StopForward

logger = logging.getLogger(__name__)


def find_blocks(model):
    """``(name, [blocks])`` of the largest container of identical blocks (by parameters), or None."""
    best, best_size = None, 0
    for name, module in model.named_modules():
        if isinstance(module, (nn.ModuleList, nn.Sequential)) and len(module) >= 2 \
                and len({type(child) for child in module}) == 1:
            size = sum(p.numel() for p in module.parameters())
            if size > best_size:
                best, best_size = (name, list(module)), size
    return best


@dataclass
class BlockCall:
    """How one calibration batch enters the blocks: positional and keyword arguments of block 0 (the
    hidden states first, or as ``hidden_states=``), and the batch's token mask (None: all tokens)."""

    args: tuple
    kwargs: dict
    token_mask: torch.Tensor = None

    @property
    def hidden(self):
        return self.args[0] if self.args else self.kwargs["hidden_states"]

    def with_hidden(self, hidden):
        """The same call on other hidden states."""
        if self.args:
            return BlockCall((hidden,) + tuple(self.args[1:]), self.kwargs, self.token_mask)
        return BlockCall(self.args, {**self.kwargs, "hidden_states": hidden}, self.token_mask)


def token_mask(inputs):
    """The ``attention_mask`` of a dict batch (real tokens), else None."""
    return inputs.get("attention_mask") if isinstance(inputs, Mapping) else None


def run_block(block, call):
    """The block's output hidden states (the first element when it returns a tuple)."""
    out = block(*call.args, **call.kwargs)
    return out[0] if isinstance(out, (tuple, list)) else out


def iterate_inputs(calibration, device):
    """The model inputs of every calibration batch, on ``device``."""
    for batch in calibration.batches:
        yield to_device(split(batch)[0], device)


def capture(model, blocks, calibration, device):
    """Run ``model`` up to block 0 on every calibration batch and return one :class:`BlockCall` per batch.

    On the first batch the forward continues to block 1, whose input must be block 0's output on the
    captured call; otherwise ``ValueError`` (the blocks are not a chain and cannot be run one by one).
    """
    calls, block1_input = [], []

    def enter_block0(module, args, kwargs):
        calls.append(BlockCall(tuple(args), dict(kwargs)))
        if len(calls) > 1:
            raise StopForward

    def enter_block1(module, args, kwargs):
        block1_input.append(args[0] if args else kwargs.get("hidden_states"))
        raise StopForward

    handles = [blocks[0].register_forward_pre_hook(enter_block0, with_kwargs=True),
               blocks[1].register_forward_pre_hook(enter_block1, with_kwargs=True)]
    try:
        for inputs in iterate_inputs(calibration, device):
            try:
                forward(model, inputs)
            except StopForward:
                pass
            else:
                raise ValueError("the model's forward did not reach its first block")
            calls[-1].token_mask = token_mask(inputs)
    finally:
        for handle in handles:
            handle.remove()
    expected = run_block(blocks[0], calls[0])
    if not block1_input or not isinstance(block1_input[0], torch.Tensor) \
            or block1_input[0].shape != expected.shape \
            or not torch.allclose(block1_input[0], expected, rtol=1e-4, atol=1e-5):
        raise ValueError("block 1 does not receive block 0's output: the blocks are not a chain")
    return calls
