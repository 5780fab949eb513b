"""The networks of VIDM (Mei & Patel, "VIDM: Video Implicit Diffusion Models", AAAI 2023).

* ``ContentDenoiser``: the content generator ``eps_theta(x_t, c, t)``, an ADM-style image U-Net
  (Dhariwal & Nichol 2021) whose noisy input is concatenated with a learnable constant ``c`` of the
  frame's shape at every step: "sampling space truncation", paper Eq. 3.
* ``MotionDenoiser``: the motion generator ``rho_phi``, a U-Net of the same family in which
  **Positional Group Normalization** (``PositionalGroupNorm``, Eq. 5-6) replaces the time-embedding
  modulation of every residual block; its input is the noisy frame ``x(n)_t`` concatenated with
  the **implicit motion code** ``z = v(x(0), x(n-1))`` (Eq. 8, ``MotionCodeNet``), and an encoder
  on the first frame and t (``FirstFrameEncoder``) adds its features at every down level
  ("adaptive feature residual", Sec. "Adaptive Feature Residual").

The Table-3 ablations are constructor switches: ``truncation`` (content), ``posgn`` (False: the
ordinary AdaGN ``GroupNorm(x) * (1 + scale) + shift`` from a time embedding) and
``implicit_condition`` (False: no motion code net, no code input).

Everything here is shape-agnostic at call time: PosGN's coordinates are built per call from the
actual batch and feature sizes (the official code cached them for the first batch size).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vfbench.errors import UsageError
from vfbench.nets.attention import SpatialSelfAttention
from vfbench.nets.layers import Downsample, Upsample, group_norm, timestep_embedding, zero_module


@dataclass
class BlockCondition:
    """What a residual block's modulated norm may read: the time (+ class) embedding for AdaGN,
    the normalised frame index and diffusion step (both in [-1, 1], shape [B]) for PosGN."""

    emb: Optional[torch.Tensor] = None
    frame_pos: Optional[torch.Tensor] = None
    time_pos: Optional[torch.Tensor] = None


# -- Positional Group Normalization (Eq. 5-6) -----------------------------------------------------

def positional_coordinates(frame_pos: torch.Tensor, time_pos: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The 4D coordinates (h, w, n, t) of every pixel of a [B, *, height, width] feature map: [B, H, W, 4].

    h and w are pixel centres mapped to [-1, 1] (so every resolution of the U-Net spans the same
    square); n and t are given already normalised, one value per sample. Built on every call from the
    actual sizes: nothing is cached, so any batch size and any feature size work.
    """
    b = frame_pos.shape[0]
    dev, dt = frame_pos.device, frame_pos.dtype
    ys = (torch.arange(height, device=dev, dtype=dt) + 0.5) * (2.0 / height) - 1.0
    xs = (torch.arange(width, device=dev, dtype=dt) + 0.5) * (2.0 / width) - 1.0
    hh, ww = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([
        hh.expand(b, height, width),
        ww.expand(b, height, width),
        frame_pos.view(b, 1, 1).expand(b, height, width),
        time_pos.to(dt).view(b, 1, 1).expand(b, height, width),
    ], dim=-1)


class SineLayer(nn.Module):
    """``sin(omega0 * (W x + b))`` with SIREN's first-layer initialisation W ~ U(-1/in, 1/in)
    (Sitzmann et al. 2020, Sec. 3.2), so inputs in [-1, 1] give a spread of frequencies."""

    def __init__(self, in_features: int, out_features: int, omega0: float):
        super().__init__()
        self.omega0 = float(omega0)
        self.linear = nn.Linear(in_features, out_features)
        with torch.no_grad():
            self.linear.weight.uniform_(-1.0 / in_features, 1.0 / in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.omega0 * self.linear(x))


class PositionalGroupNorm(nn.Module):
    """PosGN, paper Eq. 5-6: ``alpha, beta = MLP(h, w, n, t)``; ``PosGN(x) = alpha * GroupNorm(x) + beta``.

    The MLP acts per pixel on the 4D coordinates, with a sine activation after its first layer
    (Sec. "Positional Group Normalization"); its last layer's bias starts at alpha = 1, beta = 0 so a
    fresh block starts near a plain GroupNorm.
    """

    def __init__(self, channels: int, groups: int, hidden: int, omega0: float = 30.0):
        super().__init__()
        self.channels = channels
        self.norm = nn.GroupNorm(math.gcd(groups, channels), channels, affine=False, eps=1e-6)
        self.mlp = nn.Sequential(
            SineLayer(4, hidden, omega0),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, 2 * channels),
        )
        with torch.no_grad():
            last = self.mlp[-1]
            last.bias.zero_()
            last.bias[:channels] = 1.0

    def modulation(self, frame_pos: torch.Tensor, time_pos: torch.Tensor, height: int, width: int):
        """Per-pixel (alpha, beta), each [B, C, H, W]."""
        coords = positional_coordinates(frame_pos, time_pos, height, width)
        ab = self.mlp(coords).permute(0, 3, 1, 2)
        return ab[:, : self.channels], ab[:, self.channels:]

    def forward(self, x: torch.Tensor, cond: BlockCondition) -> torch.Tensor:
        alpha, beta = self.modulation(cond.frame_pos.to(x.dtype), cond.time_pos, x.shape[-2], x.shape[-1])
        return alpha * self.norm(x) + beta


class TimeModulatedGroupNorm(nn.Module):
    """The ordinary AdaGN of ADM (Dhariwal & Nichol 2021, Sec. 3): ``GroupNorm(x) * (1 + scale) + shift``
    with (scale, shift) a linear map of the time (+ class) embedding. Used by the content net, the
    first-frame encoder, and the motion net in the "w/o PosGN" ablation."""

    def __init__(self, channels: int, emb_dim: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(math.gcd(groups, channels), channels, affine=False, eps=1e-6)
        self.proj = nn.Linear(emb_dim, 2 * channels)

    def forward(self, x: torch.Tensor, cond: BlockCondition) -> torch.Tensor:
        scale, shift = self.proj(F.silu(cond.emb))[:, :, None, None].chunk(2, dim=1)
        return self.norm(x) * (1 + scale) + shift


NormFactory = Callable[[int], nn.Module]


class ModulatedResBlock(nn.Module):
    """GN -> SiLU -> conv3x3 -> modulated norm (PosGN or AdaGN) -> SiLU -> conv3x3 (zero-initialised),
    plus a 1x1 skip when the width changes. The modulated norm is the only place a block is conditioned."""

    def __init__(self, in_ch: int, out_ch: int, make_norm: NormFactory, groups: int):
        super().__init__()
        self.in_norm = group_norm(in_ch, groups)
        self.in_conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.out_norm = make_norm(out_ch)
        self.out_conv = zero_module(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor, cond: BlockCondition) -> torch.Tensor:
        h = self.in_conv(F.silu(self.in_norm(x)))
        h = self.out_conv(F.silu(self.out_norm(h, cond)))
        return self.skip(x) + h


class TimeEmbedding(nn.Module):
    """Sinusoidal embedding of t (DDPM) -> MLP, plus a learned class embedding when ``num_classes > 0``
    (label -1, "unlabelled", has its own learned row)."""

    def __init__(self, base_width: int, emb_dim: int, num_classes: int = 0):
        super().__init__()
        self.base_width = base_width
        self.mlp = nn.Sequential(nn.Linear(base_width, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.num_classes = num_classes
        self.label_embed = nn.Embedding(num_classes + 1, emb_dim) if num_classes > 0 else None

    def forward(self, t: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        emb = self.mlp(timestep_embedding(t, self.base_width))
        if self.label_embed is not None:
            if labels is None:
                labels = torch.full_like(t, -1)
            idx = torch.where(labels < 0, torch.full_like(labels, self.num_classes), labels)
            emb = emb + self.label_embed(idx.to(t.device))
        return emb


# -- the shared U-Net skeleton ------------------------------------------------------------------

class DenoisingUNet(nn.Module):
    """A compact ADM-style U-Net: per level ``num_res_blocks`` modulated residual blocks then a stride-2
    downsample; a middle block (with self-attention if asked, the paper's attention at low resolution);
    the mirror path with one skip concatenation per level; a zero-initialised output conv (so a fresh
    net predicts eps = 0). ``level_residuals`` (one tensor per level) are added after each down
    level's blocks: the motion net's adaptive feature residual."""

    def __init__(self, in_ch: int, out_ch: int, widths: Sequence[int], num_res_blocks: int, attention: bool,
                 groups: int, make_norm: NormFactory, head_dim: int = 32):
        super().__init__()
        widths = list(widths)
        self.in_conv = nn.Conv2d(in_ch, widths[0], 3, padding=1)
        self.down_blocks = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        cur = widths[0]
        for i, w in enumerate(widths):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(ModulatedResBlock(cur, w, make_norm, groups))
                cur = w
            self.down_blocks.append(blocks)
            self.downsamples.append(Downsample(w) if i < len(widths) - 1 else nn.Identity())
        self.mid_in = ModulatedResBlock(cur, cur, make_norm, groups)
        # heads of head_dim channels where the width allows, else one head over all channels
        self.mid_attn = (SpatialSelfAttention(cur, head_dim if cur % head_dim == 0 else cur, groups)
                         if attention else None)
        self.mid_out = ModulatedResBlock(cur, cur, make_norm, groups)
        self.up_blocks = nn.ModuleList()
        self.upsamples = nn.ModuleList()
        for i in reversed(range(len(widths))):
            w = widths[i]
            blocks = nn.ModuleList()
            for j in range(num_res_blocks):
                blocks.append(ModulatedResBlock(cur + w if j == 0 else w, w, make_norm, groups))
                cur = w
            self.up_blocks.append(blocks)
            self.upsamples.append(Upsample(w) if i > 0 else nn.Identity())
        self.out_norm = group_norm(cur, groups)
        self.out_conv = zero_module(nn.Conv2d(cur, out_ch, 3, padding=1))

    def forward(self, x: torch.Tensor, cond: BlockCondition,
                level_residuals: Optional[List[torch.Tensor]] = None) -> torch.Tensor:
        h = self.in_conv(x)
        skips = []
        for i, (blocks, down) in enumerate(zip(self.down_blocks, self.downsamples)):
            for block in blocks:
                h = block(h, cond)
            if level_residuals is not None:
                h = h + level_residuals[i]
            skips.append(h)
            h = down(h)
        h = self.mid_in(h, cond)
        if self.mid_attn is not None:
            h = self.mid_attn(h)
        h = self.mid_out(h, cond)
        for blocks, up in zip(self.up_blocks, self.upsamples):
            h = torch.cat([h, skips.pop()], dim=1)
            for block in blocks:
                h = block(h, cond)
            h = up(h)
        return self.out_conv(F.silu(self.out_norm(h)))


# -- content generator ----------------------------------------------------------------------------

class ContentDenoiser(nn.Module):
    """``eps_theta(x_t, c, t)`` (paper Eq. 3-4): an image DPM on single frames. With ``truncation`` a
    learnable constant ``c`` of the frame's shape (initialised to ones, like StyleGAN's constant input)
    is concatenated to the noisy frame at every diffusion step; without it the net sees x_t alone."""

    def __init__(self, channels: int, size: int, widths: Sequence[int], num_res_blocks: int, attention: bool,
                 groups: int, truncation: bool, num_classes: int = 0):
        super().__init__()
        emb_dim = 4 * widths[0]
        self.truncation_constant = nn.Parameter(torch.ones(channels, size, size)) if truncation else None
        self.time_embed = TimeEmbedding(widths[0], emb_dim, num_classes)
        in_ch = 2 * channels if truncation else channels
        self.unet = DenoisingUNet(in_ch, channels, widths, num_res_blocks, attention, groups,
                                  lambda c: TimeModulatedGroupNorm(c, emb_dim, groups))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.truncation_constant is not None:
            c = self.truncation_constant.to(x_t.dtype).expand(x_t.shape[0], -1, -1, -1)
            x_t = torch.cat([x_t, c], dim=1)
        return self.unet(x_t, BlockCondition(emb=self.time_embed(t, labels)))


# -- motion generator -----------------------------------------------------------------------------

class MotionCodeNet(nn.Module):
    """The implicit motion code ``z = v(x(0), x(n-1))`` (paper Eq. 8): a small flow-style network.

    The paper uses a SpyNet (Ranjan & Black 2017) fine-tuned jointly; here it is trained from scratch,
    with SpyNet's coarse-to-fine structure: an average-pooled pyramid of both frames; at the coarsest
    level a conv stack estimates the code from the two frames; at each finer level the code is
    upsampled and a residual update is estimated from (frame 0, frame n-1, upsampled code). No warping:
    the code is a learned latent with ``code_channels`` channels, not a metric flow field. Both frames
    must be in the same [-1, 1] range in training and sampling (the official code mixed [0, 1] and
    [-1, 1]).
    """

    def __init__(self, channels: int, code_channels: int, width: int, levels: int):
        super().__init__()
        self.code_channels, self.levels = code_channels, levels
        self.refiners = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(2 * channels + code_channels, width, 3, padding=1), nn.SiLU(),
                nn.Conv2d(width, width, 3, padding=1), nn.SiLU(),
                nn.Conv2d(width, code_channels, 3, padding=1),
            )
            for _ in range(levels)
        )

    def forward(self, x_first: torch.Tensor, x_prev: torch.Tensor) -> torch.Tensor:
        firsts, prevs = [x_first], [x_prev]
        for _ in range(self.levels - 1):
            firsts.append(F.avg_pool2d(firsts[-1], 2))
            prevs.append(F.avg_pool2d(prevs[-1], 2))
        coarse = firsts[-1]
        code = coarse.new_zeros(coarse.shape[0], self.code_channels, *coarse.shape[-2:])
        for level in reversed(range(self.levels)):
            a, b = firsts[level], prevs[level]
            if code.shape[-2:] != a.shape[-2:]:
                code = F.interpolate(code, size=a.shape[-2:], mode="bilinear", align_corners=False)
            code = code + self.refiners[level](torch.cat([a, b, code], dim=1))
        return code


class FirstFrameEncoder(nn.Module):
    """The adaptive feature residual's encoder ``rho_hat_phi(x(0), t)``: the down path of the same U-Net
    family on the first frame, AdaGN-conditioned on t; returns one feature map per level (projected by a
    1x1 conv) that the motion U-Net adds to its own down features, so it learns a residual over the
    content features (Sec. "Adaptive Feature Residual")."""

    def __init__(self, channels: int, widths: Sequence[int], num_res_blocks: int, groups: int, emb_dim: int):
        super().__init__()
        make_norm = lambda c: TimeModulatedGroupNorm(c, emb_dim, groups)  # noqa: E731
        self.in_conv = nn.Conv2d(channels, widths[0], 3, padding=1)
        self.levels = nn.ModuleList()
        self.projections = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        cur = widths[0]
        for i, w in enumerate(widths):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(ModulatedResBlock(cur, w, make_norm, groups))
                cur = w
            self.levels.append(blocks)
            self.projections.append(nn.Conv2d(w, w, 1))
            self.downsamples.append(Downsample(w) if i < len(widths) - 1 else nn.Identity())

    def forward(self, x_first: torch.Tensor, emb: torch.Tensor) -> List[torch.Tensor]:
        cond = BlockCondition(emb=emb)
        h = self.in_conv(x_first)
        feats = []
        for blocks, proj, down in zip(self.levels, self.projections, self.downsamples):
            for block in blocks:
                h = block(h, cond)
            feats.append(proj(h))
            h = down(h)
        return feats


class MotionDenoiser(nn.Module):
    """``rho_phi(x(n)_t, z, t, n)`` (paper Eq. 7 and 9) with its three conditioning paths.

    * frame index n and step t reach every residual block through PosGN, normalised as
      ``2 n / (max_frames - 1) - 1`` and ``2 t / (num_timesteps - 1) - 1``: the same constants in
      training and sampling (the official code used 128 frames in one and 64 in the other);
    * the motion code z (``motion_code``, computed once per generated frame) is concatenated to the
      noisy frame;
    * the first frame x(0) enters through ``FirstFrameEncoder`` features added at each down level.

    ``posgn=False`` replaces PosGN by AdaGN of a time embedding (n is then not an input: the paper's
    "w/o PosGN" ablation); ``implicit_condition=False`` drops the code net and the code input.
    """

    def __init__(self, channels: int, widths: Sequence[int], num_res_blocks: int, attention: bool, groups: int, *,
                 posgn: bool, implicit_condition: bool, posgn_hidden: int, posgn_omega0: float,
                 code_channels: int, code_width: int, code_levels: int, max_frames: int, num_timesteps: int,
                 num_classes: int = 0):
        super().__init__()
        emb_dim = 4 * widths[0]
        self.max_frames, self.num_timesteps = max_frames, num_timesteps
        self.motion_code_net = (MotionCodeNet(channels, code_channels, code_width, code_levels)
                                if implicit_condition else None)
        self.time_embed = TimeEmbedding(widths[0], emb_dim, num_classes)
        if posgn:
            make_norm = lambda c: PositionalGroupNorm(c, groups, posgn_hidden, posgn_omega0)  # noqa: E731
        else:
            make_norm = lambda c: TimeModulatedGroupNorm(c, emb_dim, groups)  # noqa: E731
        in_ch = channels + (code_channels if implicit_condition else 0)
        self.unet = DenoisingUNet(in_ch, channels, widths, num_res_blocks, attention, groups, make_norm)
        self.first_frame_encoder = FirstFrameEncoder(channels, widths, num_res_blocks, groups, emb_dim)

    def frame_position(self, frame_index: torch.Tensor) -> torch.Tensor:
        return frame_index.float() * (2.0 / max(self.max_frames - 1, 1)) - 1.0

    def time_position(self, t: torch.Tensor) -> torch.Tensor:
        return t.float() * (2.0 / max(self.num_timesteps - 1, 1)) - 1.0

    def motion_code(self, x_first: torch.Tensor, x_prev: torch.Tensor) -> Optional[torch.Tensor]:
        """z = v(x(0), x(n-1)) (Eq. 8), or None in the "w/o implicit condition" ablation."""
        if self.motion_code_net is None:
            return None
        return self.motion_code_net(x_first, x_prev)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, frame_index: torch.Tensor, x_first: torch.Tensor,
                code: Optional[torch.Tensor], labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        emb = self.time_embed(t, labels)
        cond = BlockCondition(emb=emb, frame_pos=self.frame_position(frame_index).to(x_t.device),
                              time_pos=self.time_position(t).to(x_t.device))
        residuals = self.first_frame_encoder(x_first, emb)
        if self.motion_code_net is not None:
            if code is None:
                raise UsageError("this motion net conditions on a motion code; pass code=motion_code(x_first, x_prev)")
            x_t = torch.cat([x_t, code.to(x_t.dtype)], dim=1)
        return self.unet(x_t, cond, level_residuals=residuals)
