"""The I3D of ``metrics/i3d.py`` reorganised for inference throughput, same weights, same fp32 function.

``FusedI3D(net)`` computes what ``I3D.forward`` computes, with the layers rearranged for speed
(``benchmarks/i3d_throughput.py`` measures it against a straightforward eager port, and
``tests/test_i3d.py`` checks the known answers of spec/metrics.md through both):

* activations stay **channels-last (NDHWC)** from the input to the head: 3x3x3 / 7x7x7 convolutions run
  as oneDNN channels-last-3d convolutions with no layout reorder between layers, and every 1x1x1
  convolution is one GEMM (``F.linear`` over the channel axis) instead of the NCDHW ``slow_conv3d`` path;
* the three 1x1x1 convolutions of an Inception block that read the same input (Branch_0 and the
  Branch_1 / Branch_2 reductions) are **merged into one GEMM**;
* the frozen **BatchNorm is folded** into the convolution in float64 (``w * gamma / sqrt(var + eps)``,
  bias ``beta - mean * scale``), then stored in fp32;
* max-pools are the exact separable maxima of ``separable_max_pool`` with TF "SAME" ``-inf`` padding.

Exactness: fp32 throughout (no TF32, no reduced precision). Folding and merging re-associate fp32 sums,
so logits differ from the eager port by ~1e-5 on logits of magnitude ~10 (relative ~1e-6, the size of
the port's own difference from TensorFlow); the known answers hold to the same tolerances.
"""

from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vfbench.metrics.i3d import (I3D, InceptionBlock, MaxPool3dSame, Unit3D, _as_f_pad, _same_pads, check_final_grid,
                                 check_input, separable_max_pool)

_ORDER = ("Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3", "Mixed_3b",
          "Mixed_3c", "MaxPool3d_4a_3x3", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f",
          "MaxPool3d_5a_2x2", "Mixed_5b", "Mixed_5c")


def fold_batch_norm(unit: Unit3D):
    """(weight, bias) of ``unit`` with its frozen inference BatchNorm folded in, computed in float64."""
    scale = torch.rsqrt(unit.moving_variance.double() + unit.bn_eps)
    if unit.gamma is not None:
        scale = scale * unit.gamma.double()
    weight = (unit.weight.double() * scale.view(-1, 1, 1, 1, 1)).float()
    bias = (unit.beta.double() - unit.moving_mean.double() * scale).float()
    return weight, bias


class FusedConv(nn.Module):
    """Conv + folded BN + ReLU on NDHWC ``[N, T, H, W, C]``, TF "SAME" padding. Several 1x1x1 units that
    read the same input become one GEMM whose output channels are their concatenation (``splits``)."""

    def __init__(self, units: Sequence[Unit3D]):
        super().__init__()
        kernels = {(u.kernel, u.stride) for u in units}
        if len(kernels) != 1:
            raise ValueError("only units with the same kernel and stride can be merged")
        folded = [fold_batch_norm(u) for u in units]
        weight = torch.cat([w for w, _ in folded])
        self.kernel, self.stride = units[0].kernel, units[0].stride
        self.splits: List[int] = [w.shape[0] for w, _ in folded]
        self.pointwise = self.kernel == (1, 1, 1) and self.stride == (1, 1, 1)
        if self.pointwise:
            self.register_buffer("weight", weight.flatten(1).contiguous())  # [Cout, Cin]
        else:
            self.register_buffer("weight", weight.contiguous(memory_format=torch.channels_last_3d))
        self.register_buffer("bias", torch.cat([b for _, b in folded]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pointwise:
            return F.relu_(F.linear(x, self.weight, self.bias))
        n, t, h, w, c = x.shape
        pads = _same_pads((n, c, t, h, w), self.kernel, self.stride)
        xc = x.permute(0, 4, 1, 2, 3)  # an NCDHW view with channels-last-3d strides: no copy
        if all(f == b for f, b in pads):
            y = F.conv3d(xc, self.weight, self.bias, self.stride, tuple(f for f, _ in pads))
        else:  # TF puts the odd padding pixel at the back, which conv3d's symmetric padding cannot express
            xc = F.pad(xc, _as_f_pad(pads)).contiguous(memory_format=torch.channels_last_3d)
            y = F.conv3d(xc, self.weight, self.bias, self.stride)
        return F.relu_(y.permute(0, 2, 3, 4, 1))


class FusedMaxPool(nn.Module):
    """TF "SAME" max-pool of NDHWC ``[N, T, H, W, C]``: -inf padding, exact separable maxima."""

    def __init__(self, pool: MaxPool3dSame):
        super().__init__()
        self.kernel, self.stride = pool.kernel, pool.stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, h, w, c = x.shape
        pads = _same_pads((n, c, t, h, w), self.kernel, self.stride)
        if any(f or b for f, b in pads):
            (tf_, tb), (hf, hb), (wf, wb) = pads
            x = F.pad(x, (0, 0, wf, wb, hf, hb, tf_, tb), value=float("-inf"))
        return separable_max_pool(x, self.kernel, self.stride, dims=(1, 2, 3))


class FusedInception(nn.Module):
    """An Inception block on NDHWC; output channels in the TF order (Branch_0, 1, 2, 3)."""

    def __init__(self, block: InceptionBlock):
        super().__init__()
        b2 = list(block.Branch_2.values())
        self.reduce = FusedConv([block.Branch_0["Conv3d_0a_1x1"], block.Branch_1["Conv3d_0a_1x1"], b2[0]])
        self.branch1 = FusedConv([block.Branch_1["Conv3d_0b_3x3"]])
        self.branch2 = FusedConv([b2[1]])
        self.pool = FusedMaxPool(block.branch3_pool)
        self.branch3 = FusedConv([block.Branch_3["Conv3d_0b_1x1"]])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y0, y1, y2 = self.reduce(x).split(self.reduce.splits, dim=-1)
        return torch.cat([y0, self.branch1(y1.contiguous()), self.branch2(y2.contiguous()),
                          self.branch3(self.pool(x))], dim=-1)


class FusedI3D(nn.Module):
    """``I3D`` as NDHWC inference layers: ``[B, T, 224, 224, 3]`` float32 in [-1, 1] -> ``[B, 400]`` logits."""

    def __init__(self, net: I3D):
        super().__init__()
        layers = []
        for name in _ORDER:
            m = getattr(net, name)
            if isinstance(m, Unit3D):
                layers.append(FusedConv([m]))
            elif isinstance(m, MaxPool3dSame):
                layers.append(FusedMaxPool(m))
            elif isinstance(m, InceptionBlock):
                layers.append(FusedInception(m))
            else:  # pragma: no cover - I3D's layer list is fixed
                raise TypeError(f"unexpected I3D layer {name}: {type(m).__name__}")
        self.layers = nn.ModuleList(layers)
        head = net.Logits.Conv3d_0c_1x1
        self.register_buffer("head_weight", head.weight.detach().flatten(1).clone())  # [400, 1024]
        self.register_buffer("head_bias", head.bias.detach().clone())
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, channels_last=True)
        for layer in self.layers:
            x = layer(x)
        check_final_grid(x.shape[2:4])
        # the head of I3D.Logits: AvgPool3D (2, 7, 7) stride 1 VALID, then the 1x1x1 conv with bias
        pooled = F.avg_pool3d(x.permute(0, 4, 1, 2, 3), (2, 7, 7), stride=1)  # [B, 1024, T', 1, 1]
        logits = F.linear(pooled.flatten(2).transpose(1, 2), self.head_weight, self.head_bias)  # [B, T', 400]
        return logits.mean(dim=1)


def preprocess_ndhwc(clips, resize: str = "tf1-legacy-bilinear") -> torch.Tensor:
    """uint8 ``[B, T, C, H, W]`` -> float32 ``[B, T, 224, 224, 3]`` in [-1, 1]: the values of
    ``i3d_extractor.preprocess``, laid out channels-last."""
    from vfbench.metrics.i3d_extractor import preprocess

    return preprocess(clips, resize, channels_last=True)


__all__ = ["FusedI3D", "FusedConv", "FusedInception", "FusedMaxPool", "fold_batch_norm", "preprocess_ndhwc"]
