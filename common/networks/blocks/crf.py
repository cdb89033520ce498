"""Trainable mean-field CRF unrolled as an RNN, with a learned free-form pairwise potential (DeepIGeoS CRF-Net)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint as grad_checkpoint

__all__ = ["PairwiseNet", "CRFNet"]


class PairwiseNet(nn.Module):
    """Free-form pairwise weight ``w(|f_i - f_j|, |o|)`` of a voxel pair: a small MLP applied to every voxel.

    Args:
        feature_channels: ``F``, channels of the guiding features (e.g. 1 for the image).
        spatial_dims: 2 or 3 (length of the offset ``o = j - i`` in voxels).
        hidden: widths of the hidden layers (ReLU after each).
        chunk: voxels per MLP call on CPU (cache-sized blocks: about 2x faster than one call at 96^3); CUDA
            tensors, and traced or exported graphs, go through in one call.

    Forward: ``diff`` ``(B, *S, F)`` channel-last absolute feature differences and ``offset`` ``(spatial_dims,)``
    absolute offset (same for all voxels) -> ``(B, *S)`` weights, dtype and device of ``diff``. Differentiable in
    both inputs and the parameters. The inputs are absolute values, so ``w(i, j) = w(j, i)``.
    The output layer starts at zero weight and a constant bias: an untrained net is a uniform smoothing kernel.

    Without gradients and with one feature channel (DeepIGeoS: the image) the net is a function of one number per
    voxel, and a ReLU MLP of one input is piecewise linear: :meth:`piecewise_linear` (eager only: traced and exported
    graphs keep the MLP, whose shapes do not depend on the data) finds its breakpoints on the
    range of ``diff`` (at most ``hidden[0] + hidden[0] * hidden[1] + ...``, a few hundred), evaluates the net there
    and interpolates, the same function to float rounding (relative 1e-6, tested) at about a third of the cost of
    the MLP on every voxel (240x240x155 refinement box of 84x102x74, window 3: 1.1 s -> 0.35 s on 2 cores).
    """

    def __init__(
        self, feature_channels: int = 1, spatial_dims: int = 2, hidden: Sequence[int] = (32, 16), chunk: int = 16384
    ) -> None:
        super().__init__()
        if feature_channels < 1 or spatial_dims not in (2, 3) or len(hidden) < 1 or min(hidden) < 1:
            raise ValueError(
                f"feature_channels, spatial_dims, hidden: expected >= 1, 2 or 3, non-empty positive "
                f"widths, found {feature_channels}, {spatial_dims}, {list(hidden)}"
            )
        if chunk < 1:
            raise ValueError(f"chunk: expected a positive number of voxels, found {chunk}")
        widths = [feature_channels + spatial_dims, *hidden]
        self.feature_channels = feature_channels
        self.chunk = chunk
        self.layers = nn.ModuleList([nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:])])
        self.out = nn.Linear(widths[-1], 1)
        nn.init.zeros_(self.out.weight)
        nn.init.constant_(self.out.bias, 0.1)

    def _hidden(self, x: torch.Tensor, bias: torch.Tensor, until: int) -> torch.Tensor:
        """Pre-activations ``(N, hidden[until])`` of hidden layer ``until`` (``len(hidden)``: the output ``(N, 1)``)
        for ``x`` ``(N, F)``, with the first layer's offset part folded into ``bias``."""
        first = self.layers[0]
        z = F.linear(x, first.weight[:, : self.feature_channels].to(x.dtype), bias.to(x.dtype))
        for i, layer in enumerate(self.layers):
            if 0 < i <= until:
                z = F.linear(torch.relu(z), layer.weight.to(x.dtype), layer.bias.to(x.dtype))
        if until >= len(self.layers):
            z = F.linear(torch.relu(z), self.out.weight.to(x.dtype), self.out.bias.to(x.dtype))
        return z

    @torch.jit.unused
    def _exporting(self):
        # type: () -> bool
        """Whether the net is being traced or exported (ONNX, ``torch.export``): the MLP path then, whose shapes do
        not depend on the data. Eager only (TorchScript compiles a stub from the type comment)."""
        return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()

    def piecewise_linear(self, diff: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """The net on one feature channel, ``diff`` ``(N,)`` -> ``(N,)``, as the exact piecewise-linear function it is.

        Breakpoints on ``[0, 1e6]`` (or up to twice ``max(diff)`` if larger; from ``min(diff)`` if negative), layer by
        layer in float64: where a unit of the first layer crosses zero, then within each interval (where the layer
        below is linear) where a unit of the next layer does; the net is evaluated at the breakpoints and linearly
        interpolated between them (``bias``: the first layer's bias with the offset folded in). The breakpoints do
        not depend on ``diff`` (absolute differences of normalised features stay far below ``1e6``), so a voxel's
        weight is the same bit for bit whatever else is in ``diff``: weights of a part of a region equal the
        region's there.
        """
        lo = diff.min().to(torch.float64).clamp(max=0.0)
        hi = (2 * diff.max().to(torch.float64)).clamp(min=1e6)
        points = torch.stack([lo, hi])
        for depth in range(len(self.layers)):
            z = self._hidden(points[:, None], bias.to(torch.float64), depth)  # (P, H): linear between points
            a, b = z[:-1], z[1:]
            cross = (a * b) < 0  # a unit changes sign inside an interval: once, at the linear zero crossing
            t = a / (a - b)
            step = (points[1:] - points[:-1])[:, None].expand_as(t)
            start = points[:-1, None].expand_as(t)
            points = torch.unique(torch.cat([points, (start + step * t)[cross]]))  # sorted
        values = self._hidden(points[:, None], bias.to(torch.float64), len(self.layers))[:, 0]
        slopes = (values[1:] - values[:-1]) / (points[1:] - points[:-1])
        idx = (torch.searchsorted(points.to(diff.dtype), diff, right=True) - 1).clamp(0, points.numel() - 2)
        left = points.to(diff.dtype)[idx]
        return values.to(diff.dtype)[idx] + (diff - left) * slopes.to(diff.dtype)[idx]

    def forward(self, diff: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        first = self.layers[0]
        nf = self.feature_channels
        # the offset is constant over the image: fold its part of the first layer into the bias
        bias = first.bias + first.weight[:, nf:] @ offset
        exporting = False
        if not torch.jit.is_scripting():
            exporting = self._exporting()
        if nf == 1 and not torch.is_grad_enabled() and diff.numel() > 0 and not exporting:
            return self.piecewise_linear(diff.reshape(-1), bias).reshape(diff.shape[:-1])
        flat = diff.reshape(-1, nf)
        parts = [flat] if diff.is_cuda or exporting else flat.split(self.chunk)  # a graph: one call, any size
        out: List[torch.Tensor] = []
        for part in parts:
            x = torch.relu(F.linear(part, first.weight[:, :nf], bias))
            for i, layer in enumerate(self.layers):
                if i > 0:
                    x = torch.relu(layer(x))
            out.append(self.out(x))
        return torch.cat(out).reshape(diff.shape[:-1])


def _window(t: torch.Tensor, offset: List[int], radius: List[int], sizes: List[int], first_dim: int) -> torch.Tensor:
    """View of ``t`` (padded by ``radius`` on each spatial axis) at ``x + offset`` for every ``x``: zero outside."""
    for i in range(len(offset)):
        t = t.narrow(first_dim + i, radius[i] + offset[i], sizes[i])
    return t


def _pad_spatial(t: torch.Tensor, radius: List[int], first_dim: int) -> torch.Tensor:
    """Zero-pad the spatial axes ``first_dim ..`` of ``t`` by ``radius``; axes after them are left as they are."""
    pads: List[int] = []
    for _ in range(t.ndim - first_dim - len(radius)):
        pads += [0, 0]
    for i in range(len(radius) - 1, -1, -1):
        pads += [radius[i], radius[i]]
    return F.pad(t, pads)


class CRFNet(nn.Module):
    """Mean-field CRF as an RNN on class scores, with a learned pairwise potential over a local window.

    CRF-Net(f) of DeepIGeoS when called without ``seeds``; CRF-Net(fu) with ``seeds``: user-labelled voxels are
    clamped to their label before the first and after every iteration, and act on their neighbours through the
    messages. Energy: unary ``-logits``; pairwise ``mu(l, l') * w(|f_i - f_j|, |j - i|)`` for every pair in the
    window, with ``w`` from :class:`PairwiseNet` (one scalar per pair, symmetric) and ``mu`` a learnable
    ``(C, C)`` compatibility initialised to Potts (``1 - I``). Each iteration::

        m_i = sum_{j in window(i)} w_ij Q_j;    Q = softmax(logits - mu m)

    Pair weights depend only on the features, so they are computed once per call (half of the offsets through
    the net, the other half by symmetry), each under gradient checkpointing when ``checkpoint`` is set and
    gradients are on; messages loop over the window's offsets (``prod(window) - 1``), never over voxels.

    Args:
        spatial_dims: 2 or 3.
        num_classes: ``C``, classes including background.
        feature_channels: ``F``, channels of the guiding features (the image, normalised to unit scale).
        window: odd window width, one for all axes or one per axis (e.g. ``(5, 5, 3)``).
        iterations: mean-field iterations ``T`` (0 gives ``softmax(logits)``).
        hidden: hidden widths of the Pairwise-Net.
        checkpoint: recompute the Pairwise-Net in backward instead of storing its activations (memory
            ``O(K B S)`` for the ``K`` pair weights instead of ``O(K B S * sum(hidden))``). On CPU with glibc,
            training also wants ``MALLOC_MMAP_THRESHOLD_=65536`` in the environment: glibc otherwise keeps the
            freed blocks of the chunked Pairwise-Net resident (96^3, window 5: 6.2 GiB peak instead of 1.0 GiB).

    Forward: ``logits`` ``(B, C, *S)``, ``features`` ``(B, F, *S)``, optional ``seeds`` ``(B, C, *S)`` one-hot
    of the user label (all zero where unlabelled), optional ``weights``: :meth:`pair_weights` of these features
    computed before (an interactive caller that refines the same region again keeps them; None: computed here) ->
    probabilities ``Q`` ``(B, C, *S)`` (sum 1 over ``C``), dtype and device of ``logits``. Differentiable in
    ``logits``, ``features`` and all parameters.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        num_classes: int = 2,
        feature_channels: int = 1,
        window: int | Sequence[int] = 5,
        iterations: int = 5,
        hidden: Sequence[int] = (32, 16),
        checkpoint: bool = True,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims: expected 2 or 3, found {spatial_dims}")
        if num_classes < 2:
            raise ValueError(f"num_classes: expected at least 2, found {num_classes}")
        widths = [int(window)] * spatial_dims if isinstance(window, int) else [int(w) for w in window]
        if len(widths) != spatial_dims or min(widths) < 1 or any(w % 2 == 0 for w in widths) or max(widths) < 3:
            raise ValueError(f"window: expected odd widths, one or {spatial_dims}, at least one >= 3, found {window}")
        if iterations < 0:
            raise ValueError(f"iterations: expected >= 0, found {iterations}")
        self.spatial_dims = spatial_dims
        self.iterations = int(iterations)
        self.checkpoint = checkpoint
        self.radius: List[int] = [w // 2 for w in widths]
        grids = torch.meshgrid([torch.arange(-r, r + 1) for r in self.radius], indexing="ij")
        offsets = torch.stack([g.flatten() for g in grids], 1).tolist()
        # one of each pair {o, -o}: the first non-zero component positive
        self.half_offsets: List[List[int]] = [o for o in offsets if any(o) and [c for c in o if c][0] > 0]
        self.pairwise = PairwiseNet(feature_channels, spatial_dims, hidden)
        self.compatibility = nn.Parameter(1.0 - torch.eye(num_classes))

    def _weight(
        self, feats_padded: torch.Tensor, feats: torch.Tensor, valid: torch.Tensor, offset: List[int]
    ) -> torch.Tensor:
        """Pair weight ``(B, *S)`` between ``x`` and ``x + offset``, zero where ``x + offset`` is outside."""
        sizes = list(feats.shape[1:-1])
        diff = (feats - _window(feats_padded, offset, self.radius, sizes, 1)).abs()
        off = torch.tensor([abs(o) for o in offset], dtype=feats.dtype, device=feats.device)
        return self.pairwise(diff, off) * _window(valid, offset, self.radius, sizes, 1)

    @torch.jit.unused
    def _checkpointed_weight(self, feats_padded, feats, valid, offset):
        # type: (Tensor, Tensor, Tensor, List[int]) -> Tensor
        """:meth:`_weight` recomputed in backward. Eager mode and ``torch.export`` only: TorchScript compiles it to
        a stub, from the type comment (it cannot read the postponed annotations of an unused method)."""
        return grad_checkpoint(self._weight, feats_padded, feats, valid, offset, use_reentrant=False)

    def pair_weights(self, features: torch.Tensor) -> List[torch.Tensor]:
        """Weights ``(B, 1, *S)`` for each offset of :attr:`half_offsets` followed by their negatives."""
        feats = features.movedim(1, -1)  # (B, *S, F): the Pairwise-Net is an MLP over the last axis
        feats_padded = _pad_spatial(feats, self.radius, 1)
        sizes = list(feats.shape[1:-1])
        valid = _pad_spatial(torch.ones([1] + sizes, dtype=feats.dtype, device=feats.device), self.radius, 1)
        use_ckpt = self.checkpoint and torch.is_grad_enabled() and not torch.jit.is_scripting()
        half: List[torch.Tensor] = []
        for offset in self.half_offsets:
            if use_ckpt:
                w = self._checkpointed_weight(feats_padded, feats, valid, offset)
            else:
                w = self._weight(feats_padded, feats, valid, offset)
            half.append(w.unsqueeze(1))
        # w(x, x - o) = w(x - o, x): the weight of offset o read at x - o
        mirrored: List[torch.Tensor] = []
        for w, offset in zip(half, self.half_offsets):
            mirrored.append(_window(_pad_spatial(w, self.radius, 2), [-o for o in offset], self.radius, sizes, 2))
        return half + mirrored

    def forward(
        self,
        logits: torch.Tensor,
        features: torch.Tensor,
        seeds: Optional[torch.Tensor] = None,
        weights: Optional[List[torch.Tensor]] = None,
    ) -> torch.Tensor:
        if logits.ndim != self.spatial_dims + 2 or features.shape[2:] != logits.shape[2:]:
            raise ValueError(
                f"logits, features: expected (B, C, *S) and (B, F, *S) with {self.spatial_dims} "
                f"spatial dims, found {list(logits.shape)} and {list(features.shape)}"
            )
        if seeds is not None and seeds.shape != logits.shape:
            raise ValueError(f"seeds: expected the shape of logits {list(logits.shape)}, found {list(seeds.shape)}")
        q = torch.softmax(logits, 1)
        clamped = torch.zeros_like(q[:, :1], dtype=torch.bool)
        target = q
        if seeds is not None:
            target = seeds.to(q.dtype)
            clamped = target.sum(1, keepdim=True) > 0
            q = torch.where(clamped, target, q)
        if self.iterations == 0:
            return q
        pair = self.pair_weights(features.to(logits.dtype)) if weights is None else weights
        offsets = self.half_offsets + [[-o for o in offset] for offset in self.half_offsets]
        sizes = list(logits.shape[2:])
        for _ in range(self.iterations):
            q_padded = _pad_spatial(q, self.radius, 2)
            message = torch.zeros_like(q)
            for w, offset in zip(pair, offsets):
                message = torch.addcmul(message, w, _window(q_padded, offset, self.radius, sizes, 2))
            pairwise = (message.movedim(1, -1) @ self.compatibility.t()).movedim(-1, 1)
            q = torch.softmax(logits - pairwise, 1)
            if seeds is not None:
                q = torch.where(clamped, target, q)
        return q
