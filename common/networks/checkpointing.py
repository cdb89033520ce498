"""Activation checkpointing of a network's blocks: a block keeps only its input in the forward pass and computes its
activations again in the backward pass, for about one more forward pass of compute (``torch.utils.checkpoint``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["ActivationCheckpointing"]


@contextlib.contextmanager
def _running_stats_kept(module: nn.Module) -> Iterator[None]:
    """Puts the running statistics of every norm in ``module`` back as they were on entry when the block exits."""
    saved = [
        (buffer, buffer.clone())
        for norm in module.modules()
        if isinstance(norm, nn.modules.batchnorm._NormBase)  # batch and instance norms
        for buffer in norm.buffers(recurse=False)
    ]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)


class ActivationCheckpointing:
    """Mixin of an ``nn.Module`` block whose forward pass is its ``compute(x)`` method.

    With ``self.checkpoint`` True and the module in training mode, ``forward`` runs ``compute`` under
    :func:`torch.utils.checkpoint.checkpoint` (``use_reentrant=False``): only the block's input is kept for the
    backward pass, which runs ``compute`` again. Its batch norms then run twice in training mode; their running
    statistics are put back after the recomputation, so they are updated once per step as without checkpointing, and
    outputs, gradients and running statistics equal the plain block's. Autocast (bf16 / fp16) and random states are
    those of the forward pass in the recomputation too (``torch.utils.checkpoint``'s defaults).

    In eval mode, with ``checkpoint`` False, or in a TorchScript copy (``torch.jit.script``), ``forward`` is
    ``compute``: a scripted network never checkpoints, also in training mode.

    The class using it sets ``self.checkpoint`` in its ``__init__`` and defines ``compute(x: Tensor) -> Tensor``
    (TorchScript-compatible). Shapes are those of ``compute``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.checkpoint and self.training and not torch.jit.is_scripting():
            return self._checkpointed(x)
        return self.compute(x)

    @torch.jit.unused
    def _checkpointed(self, x: torch.Tensor) -> torch.Tensor:
        return checkpoint(
            self.compute,
            x,
            use_reentrant=False,
            context_fn=lambda: (contextlib.nullcontext(), _running_stats_kept(self)),
        )
