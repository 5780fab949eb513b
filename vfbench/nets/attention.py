"""Self-attention blocks of the U-Net: spatial (per frame) and temporal (per pixel, over frames).

The temporal block follows Ho et al. 2022, "Video Diffusion Models", Sec. 3: a factorised space-time
U-Net where each pixel attends over the T frames with a relative-position bias, the bias bucketed
as in T5 (Raffel et al. 2020, Sec. 2.1), so that frame order is known without absolute positions.
Both blocks are residual with a zero-initialised output projection: a freshly inflated video U-Net
computes exactly the per-frame image U-Net.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from vfbench.errors import UsageError
from vfbench.nets.layers import group_norm, zero_module


def split_heads(channels: int, head_dim: int, num_heads: int = 0, where: str = "attention") -> int:
    """Number of heads: ``num_heads`` if given, else ``channels // head_dim`` (one head when narrower)."""
    if num_heads > 0:
        if channels % num_heads:
            raise UsageError(f"{where}: {channels} channels cannot be split into {num_heads} heads; "
                             f"choose temporal_attention_heads dividing {channels}")
        return num_heads
    if channels <= head_dim:
        return 1
    if channels % head_dim:
        raise UsageError(f"{where}: {channels} channels are not a multiple of head_dim={head_dim}; "
                         f"choose a head_dim that divides every attended width")
    return channels // head_dim


class SpatialSelfAttention(nn.Module):
    """Multi-head self-attention over the H*W positions of each image (frames folded into the batch)."""

    def __init__(self, channels: int, head_dim: int, groups: int):
        super().__init__()
        self.heads = split_heads(channels, head_dim, where="spatial attention")
        self.norm = group_norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = zero_module(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, self.heads, c // self.heads, h * w).transpose(-1, -2).unbind(1)
        # strided q/k/v send CPU SDPA to its math fallback (materialised softmax, 8x slower at 32x32);
        # contiguous ones select the flash kernel (benchmarks/sampling_throughput.py --strided-attention-baseline)
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        out = F.scaled_dot_product_attention(q, k, v)  # [n, heads, hw, d]
        out = out.transpose(-1, -2).reshape(n, c, h, w)
        return x + self.proj(out)


def relative_position_bucket(relative_position: torch.Tensor, num_buckets: int = 32, max_distance: int = 32) -> torch.Tensor:
    """T5's bidirectional bucketing of ``key - query`` offsets: half the buckets per direction; within a
    direction, offsets below ``num_buckets/4`` get their own bucket and larger ones share logarithmically
    spaced buckets up to ``max_distance`` (everything beyond falls in the last one)."""
    half = num_buckets // 2
    bucket = (relative_position > 0).long() * half
    n = relative_position.abs()
    max_exact = half // 2
    is_small = n < max_exact
    log_ratio = torch.log(n.float().clamp_min(1) / max_exact) / math.log(max_distance / max_exact)
    large = (max_exact + (log_ratio * (half - max_exact)).long()).clamp_max(half - 1)
    return bucket + torch.where(is_small, n, large)


class RelativePositionBias(nn.Module):
    """A learned per-head scalar for each bucketed frame offset: bias[h, i, j] = table[bucket(j - i), h]."""

    def __init__(self, heads: int, num_buckets: int = 32, max_distance: int = 32):
        super().__init__()
        self.num_buckets, self.max_distance = num_buckets, max_distance
        self.table = nn.Embedding(num_buckets, heads)

    def forward(self, num_frames: int, device: torch.device) -> torch.Tensor:
        pos = torch.arange(num_frames, device=device)
        buckets = relative_position_bucket(pos[None, :] - pos[:, None], self.num_buckets, self.max_distance)
        return self.table(buckets).permute(2, 0, 1)  # [heads, T, T]


class TemporalSelfAttention(nn.Module):
    """Each spatial position attends over the T frames of its clip (Video Diffusion Models, Sec. 3).

    Input ``x`` is ``[B*T, C, H, W]`` (frames folded into the batch). The norm is per frame, so frames
    that are masked from each other (joint image-video training) never exchange information.
    ``mask`` ``[B, T, T]`` bool: ``mask[b, i, j]`` says whether frame i may attend to frame j (every
    frame always attends to itself).
    """

    def __init__(self, channels: int, head_dim: int, groups: int, num_heads: int = 0,
                 num_buckets: int = 32, max_distance: int = 32):
        super().__init__()
        self.heads = split_heads(channels, head_dim, num_heads, where="temporal attention")
        self.norm = group_norm(channels, groups)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.rel_bias = RelativePositionBias(self.heads, num_buckets, max_distance)
        self.proj = zero_module(nn.Linear(channels, channels))

    def forward(self, x: torch.Tensor, num_frames: int, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        bt, c, h, w = x.shape
        b, t = bt // num_frames, num_frames
        # [B*T, C, H, W] -> [B, H*W, T, C]: one sequence of T frames per pixel
        seq = self.norm(x).reshape(b, t, c, h * w).permute(0, 3, 1, 2)
        # 4-D [B*HW, heads, T, d] so that the fused SDPA kernels apply
        q, k, v = self.qkv(seq).reshape(b * h * w, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.rel_bias(t, x.device).to(q.dtype)[None]  # [1, heads, T, T], broadcast over clips and pixels
        if mask is not None:
            allowed = mask | torch.eye(t, dtype=torch.bool, device=mask.device)
            bias = bias.masked_fill(~allowed[:, None], float("-inf"))  # [B, heads, T, T]
            bias = bias[:, None].expand(b, h * w, self.heads, t, t).reshape(b * h * w, self.heads, t, t)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # [B*HW, heads, T, d]
        out = self.proj(out.transpose(1, 2).reshape(b, h * w, t, c))
        return x + out.permute(0, 2, 3, 1).reshape(bt, c, h, w)
