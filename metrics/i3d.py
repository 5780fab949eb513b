"""I3D (Inception-v1 inflated to 3D, Kinetics-400) in PyTorch, layer for layer the TF-Hub graph.

Reproduces ``deepmind/i3d-kinetics-400/1`` (Carreira & Zisserman 2017, "Quo Vadis, Action
Recognition?"; DeepMind ``kinetics-i3d/i3d.py``), the network of the reference FVD
(Unterthiner et al. 2018). Facts pinned in ``spec/metrics.md``:

* every ``Unit3D`` is a bias-free Conv3d, BatchNorm with eps 1e-3 and **no scale** (beta only,
  frozen moving mean/variance), ReLU;
* convolutions and max-pools use TF "SAME" padding (front = total // 2, the odd pixel at the back;
  max-pools pad with -inf);
* the head is AvgPool3D (2, 7, 7) stride 1 VALID, a 1x1x1 conv with bias (no BN, no ReLU), spatial
  squeeze and the **mean over time** of the 400 logits (``RGB/inception_i3d/Mean:0``).

Input ``[B, 3, T, 224, 224]`` float32 in [-1, 1] with ``T >= 9``; output ``[B, 400]`` logits.
Parameter names follow the TF scopes (``Mixed_3b.Branch_1.Conv3d_0b_3x3.weight``), including the
upstream quirk that Mixed_5b's second Branch_2 conv is called ``Conv3d_0a_3x3``.
"""

from __future__ import annotations

import math
from typing import Dict, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from vfbench.errors import UsageError

NUM_CLASSES = 400
#: Sonnet v1 BatchNorm epsilon used by the TF-Hub graph (VideoGPT/TATS ports use 1e-5).
REFERENCE_BN_EPS = 1e-3
#: Fewest frames the graph accepts: T -> ceil(T/2) three times must leave >= 2 for AvgPool3D(2,...).
MIN_FRAMES = 9

# Inception block widths (DeepMind i3d.py / GoogLeNet table 1):
# (Branch_0 1x1, Branch_1 1x1 reduce, Branch_1 3x3, Branch_2 1x1 reduce, Branch_2 3x3, Branch_3 pool-proj)
MIXED_WIDTHS: Dict[str, Tuple[int, int, int, int, int, int]] = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


def same_padding(size: int, kernel: int, stride: int) -> Tuple[int, int]:
    """TF "SAME" padding of one dimension: (front, back) with the odd element at the back.

    total = max((ceil(size / stride) - 1) * stride + kernel - size, 0)  (TF ``GetWindowedOutputSize``).
    """
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _same_pads(shape: Sequence[int], kernel: Sequence[int], stride: Sequence[int]):
    """Per-dimension (front, back) pads for the trailing (T, H, W) of ``shape``."""
    return [same_padding(s, k, st) for s, k, st in zip(shape[-3:], kernel, stride)]


def _as_f_pad(pads) -> Tuple[int, ...]:
    """(T, H, W) (front, back) pairs -> F.pad's last-dimension-first order."""
    (tf_, tb), (hf, hb), (wf, wb) = pads
    return (wf, wb, hf, hb, tf_, tb)


class Unit3D(nn.Module):
    """Conv3d (no bias, SAME) -> BatchNorm (beta only, frozen statistics) -> ReLU.

    Buffers/parameters keep TF's names: ``weight`` (the kernel, torch layout
    ``(cout, cin, kt, kh, kw)``), ``beta``, ``moving_mean``, ``moving_variance``; ``gamma`` exists
    only for ports whose BatchNorm has a scale (``bn_scale=True``).
    """

    def __init__(self, cin: int, cout: int, kernel=(1, 1, 1), stride=(1, 1, 1), *,
                 bn_eps: float = REFERENCE_BN_EPS, bn_scale: bool = False):
        super().__init__()
        self.kernel, self.stride, self.bn_eps = tuple(kernel), tuple(stride), bn_eps
        self.weight = nn.Parameter(torch.zeros(cout, cin, *self.kernel))
        self.beta = nn.Parameter(torch.zeros(cout))
        self.register_buffer("moving_mean", torch.zeros(cout))
        self.register_buffer("moving_variance", torch.ones(cout))
        self.gamma = nn.Parameter(torch.ones(cout)) if bn_scale else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = _same_pads(x.shape, self.kernel, self.stride)
        if all(f == b for f, b in pads):  # symmetric: let the conv pad (no copy)
            x = F.conv3d(x, self.weight, None, self.stride, tuple(f for f, _ in pads))
        else:
            x = F.conv3d(F.pad(x, _as_f_pad(pads)), self.weight, None, self.stride)
        x = F.batch_norm(x, self.moving_mean, self.moving_variance, self.gamma, self.beta,
                         training=False, eps=self.bn_eps)
        return F.relu_(x)


class MaxPool3dSame(nn.Module):
    """Max-pool with TF "SAME" padding; padded cells are -inf so they never win (TF semantics)."""

    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = _same_pads(x.shape, self.kernel, self.stride)
        if any(f or b for f, b in pads):
            x = F.pad(x, _as_f_pad(pads), value=float("-inf"))
        # three 1-D maxima over strided views: exact (a max never rounds) and 1.5x faster for the
        # whole I3D on CPU than max_pool3d, which was 41% of its time (benchmarks/i3d_throughput.py)
        return separable_max_pool(x, self.kernel, self.stride)

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        """The same pooling with ``F.max_pool3d`` (the benchmark's straightforward baseline)."""
        pads = _same_pads(x.shape, self.kernel, self.stride)
        x = F.pad(x, _as_f_pad(pads), value=float("-inf"))
        return F.max_pool3d(x, self.kernel, self.stride)


def separable_max_pool(x: torch.Tensor, kernel, stride, dims=(2, 3, 4)) -> torch.Tensor:
    """VALID max over a (kt, kh, kw) box with stride, one dimension at a time; ``dims`` are the
    (T, H, W) axes: (2, 3, 4) for ``[N, C, T, H, W]``, (1, 2, 3) for channels-last ``[N, T, H, W, C]``."""
    for dim, k, st in zip(dims, kernel, stride):
        if k == 1 and st == 1:
            continue
        out = (x.shape[dim] - k) // st + 1
        y = None
        for j in range(k):
            sl = x.narrow(dim, j, (out - 1) * st + 1)
            if st > 1:
                idx = [slice(None)] * 5
                idx[dim] = slice(None, None, st)
                sl = sl[tuple(idx)]
            y = sl.clone(memory_format=torch.contiguous_format) if y is None else torch.maximum(y, sl, out=y)
        x = y
    return x


class InceptionBlock(nn.Module):
    """Four parallel branches concatenated on channels (GoogLeNet "Mixed" block, inflated).

    Branch_0: 1x1; Branch_1: 1x1 -> 3x3; Branch_2: 1x1 -> 3x3; Branch_3: 3x3 max-pool stride 1 -> 1x1.
    """

    def __init__(self, cin: int, widths, *, branch2_3x3: str = "Conv3d_0b_3x3", **unit_kw):
        super().__init__()
        w0, w1a, w1b, w2a, w2b, w3 = widths
        self.out_channels = w0 + w1b + w2b + w3
        self.Branch_0 = nn.ModuleDict({"Conv3d_0a_1x1": Unit3D(cin, w0, **unit_kw)})
        self.Branch_1 = nn.ModuleDict({"Conv3d_0a_1x1": Unit3D(cin, w1a, **unit_kw),
                                       "Conv3d_0b_3x3": Unit3D(w1a, w1b, (3, 3, 3), **unit_kw)})
        self.Branch_2 = nn.ModuleDict({"Conv3d_0a_1x1": Unit3D(cin, w2a, **unit_kw),
                                       branch2_3x3: Unit3D(w2a, w2b, (3, 3, 3), **unit_kw)})
        self.branch3_pool = MaxPool3dSame((3, 3, 3), (1, 1, 1))  # "Branch_3/MaxPool3d_0a_3x3"
        self.Branch_3 = nn.ModuleDict({"Conv3d_0b_1x1": Unit3D(cin, w3, **unit_kw)})

    @staticmethod
    def _chain(units: nn.ModuleDict, x: torch.Tensor) -> torch.Tensor:
        for unit in units.values():
            x = unit(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self._chain(self.Branch_0, x), self._chain(self.Branch_1, x),
                          self._chain(self.Branch_2, x), self._chain(self.Branch_3, self.branch3_pool(x))], 1)


class Logits(nn.Module):
    """AvgPool3D (2, 7, 7) stride 1 VALID -> (dropout: identity at inference) -> 1x1x1 conv with bias."""

    def __init__(self, cin: int = 1024, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.Conv3d_0c_1x1 = nn.Conv3d(cin, num_classes, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.avg_pool3d(x, (2, 7, 7), stride=1)
        return self.Conv3d_0c_1x1(x)


def check_input(x: torch.Tensor, channels_last: bool) -> None:
    """Refuse what the graph cannot take: ``[B, 3, T, H, W]`` (``[B, T, H, W, 3]`` if ``channels_last``),
    float, ``T >= MIN_FRAMES``. The 224x224 size is checked at the head (the final grid must be 7x7)."""
    layout, c_dim, t_dim = ("[B, T, H, W, 3]", -1, 1) if channels_last else ("[B, 3, T, H, W]", 1, 2)
    if x.ndim != 5 or x.shape[c_dim] != 3:
        raise UsageError(f"I3D input must be {layout}, got shape {tuple(x.shape)}")
    if x.shape[t_dim] < MIN_FRAMES:
        raise UsageError(f"I3D needs clips of at least {MIN_FRAMES} frames, got {x.shape[t_dim]};"
                         " sample longer clips (the FVD protocols use 16 frames)")
    if not torch.is_floating_point(x):
        raise UsageError(f"I3D input must be float in [-1, 1], got dtype {x.dtype};"
                         " use I3DExtractor for uint8 clips")


def check_final_grid(grid) -> None:
    if tuple(grid) != (7, 7):
        raise UsageError(f"I3D input frames must be 224x224 (got a final {tuple(grid)} grid"
                         " instead of 7x7); resize frames to 224x224 first")


class I3D(nn.Module):
    """The TF-Hub I3D graph: ``[B, 3, T, H, W]`` in [-1, 1] -> ``[B, 400]`` time-averaged logits.

    ``bn_eps`` 1e-3 is the reference; 1e-5 reproduces the VideoGPT/TATS port. ``bn_scale`` adds a
    BatchNorm scale (only for ported state dicts whose scale is not all ones).
    """

    def __init__(self, *, bn_eps: float = REFERENCE_BN_EPS, bn_scale: bool = False):
        super().__init__()
        self.bn_eps, self.bn_scale = bn_eps, bn_scale
        kw = dict(bn_eps=bn_eps, bn_scale=bn_scale)
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2), **kw)
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64, **kw)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3), **kw)
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Mixed_3b = InceptionBlock(192, MIXED_WIDTHS["Mixed_3b"], **kw)
        self.Mixed_3c = InceptionBlock(256, MIXED_WIDTHS["Mixed_3c"], **kw)
        self.MaxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
        self.Mixed_4b = InceptionBlock(480, MIXED_WIDTHS["Mixed_4b"], **kw)
        self.Mixed_4c = InceptionBlock(512, MIXED_WIDTHS["Mixed_4c"], **kw)
        self.Mixed_4d = InceptionBlock(512, MIXED_WIDTHS["Mixed_4d"], **kw)
        self.Mixed_4e = InceptionBlock(512, MIXED_WIDTHS["Mixed_4e"], **kw)
        self.Mixed_4f = InceptionBlock(528, MIXED_WIDTHS["Mixed_4f"], **kw)
        self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
        # the TF-Hub graph names this one block's second Branch_2 conv "Conv3d_0a_3x3"
        self.Mixed_5b = InceptionBlock(832, MIXED_WIDTHS["Mixed_5b"], branch2_3x3="Conv3d_0a_3x3", **kw)
        self.Mixed_5c = InceptionBlock(832, MIXED_WIDTHS["Mixed_5c"], **kw)
        self.Logits = Logits(1024, NUM_CLASSES)
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, channels_last=False)
        for name in ("Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3",
                     "MaxPool3d_3a_3x3", "Mixed_3b", "Mixed_3c", "MaxPool3d_4a_3x3", "Mixed_4b",
                     "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f", "MaxPool3d_5a_2x2", "Mixed_5b",
                     "Mixed_5c"):
            x = getattr(self, name)(x)
        check_final_grid(x.shape[-2:])
        logits = self.Logits(x)  # [B, 400, T', 1, 1]
        return logits.squeeze(-1).squeeze(-1).mean(dim=2)  # averaged over time, pre-softmax
