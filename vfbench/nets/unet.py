"""The one U-Net family of vfbench: a 2D denoiser that can be inflated into a factorised space-time
video U-Net.

* 2D net: the DDPM / ADM U-Net (Ho et al. 2020, App. B; Dhariwal & Nichol 2021, Sec. 3): sinusoidal
  time embedding -> MLP, residual blocks with adaptive GroupNorm (scale/shift), multi-head
  self-attention at chosen downsample factors and in the middle block, skip connections.
  VideoFusion's base and residual generators are two widths of it (Luo et al. 2023, Table 8).
* Video inflation (``video=True``), Video Diffusion Models (Ho et al. 2022, Sec. 3): frames are folded
  into the batch for every spatial layer (frames are never downsampled); after every spatial
  attention block, in the middle block, and (optionally) right after the first conv, a temporal
  attention block lets each pixel attend over the T frames with a T5-style relative-position bias.
  Temporal blocks are residual with zero-initialised outputs, so a freshly inflated net equals the
  per-frame 2D net; ``forward(..., temporal=False)`` skips them (the per-frame 2D net, any weights).

Conditioning: class labels (``num_classes`` rows + one null row for classifier-free guidance, Ho &
Salimans 2022) and an integer frame index (VideoFusion Eq. 12's residual generator ``z^r(z', t, i)``),
both added to the time embedding; optional extra input channels concatenated to ``x``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Optional, Tuple

import torch
from torch import nn

from vfbench.errors import UnknownNameError, UsageError
from vfbench.nets.attention import SpatialSelfAttention, TemporalSelfAttention
from vfbench.nets.layers import Downsample, ResBlock, Upsample, group_norm, timestep_embedding, zero_module


@dataclass(frozen=True)
class UNetConfig:
    # the values that reproduce nets saved before a field existed (vfbench.generator.Generator.with_legacy_defaults)
    LEGACY_DEFAULTS: ClassVar[Dict[str, Any]] = {"temporal_attention_scales": None}

    in_channels: int = 3
    out_channels: int = 3
    base_width: int = 64
    channel_mults: Tuple[int, ...] = (1, 2, 2)
    blocks_per_scale: int = 2
    attention_scales: Tuple[int, ...] = (4,)  # downsample factors with attention: 2 -> resolution 1/2
    head_dim: int = 32
    dropout: float = 0.0
    num_classes: int = 0  # 0: unconditional; else num_classes + 1 embedding rows (the last is the null label)
    num_frame_indices: int = 0  # 0: off; else an embedding of the frame index i in [0, num_frame_indices)
    extra_input_channels: int = 0  # conditioning channels concatenated to x before the first conv
    video: bool = False  # inflate with temporal attention; x is [B, C, T, H, W]
    temporal_attention_heads: int = 0  # 0: as spatial attention (width // head_dim)
    # downsample factors with temporal attention (video); None: the attention_scales, i.e. one after every spatial
    # attention block (VDM Sec. 3, spec/baselines.md); more scales coordinate frames sooner in training (README)
    temporal_attention_scales: Optional[Tuple[int, ...]] = None
    use_initial_temporal_attention: bool = True
    temporal_buckets: int = 32
    temporal_max_distance: int = 32
    groupnorm_groups: int = 32
    time_embed_mult: int = 4
    gradient_checkpointing: bool = False  # recompute each stage in the backward pass (less activation memory, more compute)

    def __post_init__(self):
        for name in ("in_channels", "out_channels", "base_width", "blocks_per_scale", "head_dim",
                     "groupnorm_groups", "time_embed_mult", "temporal_buckets", "temporal_max_distance"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"unet.{name} must be a positive integer, got {value!r}")
        for name in ("num_classes", "num_frame_indices", "extra_input_channels", "temporal_attention_heads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise UsageError(f"unet.{name} must be a non-negative integer, got {value!r}")
        if not self.channel_mults or any(int(m) < 1 for m in self.channel_mults):
            raise UsageError(f"unet.channel_mults must be a non-empty list of positive integers, got {self.channel_mults!r}")
        factors = self.downsample_factors
        for name in ("attention_scales", "temporal_attention_scales"):
            bad = [a for a in (getattr(self, name) or ()) if a not in factors]
            if bad:
                raise UsageError(f"unet.{name} {list(bad)} are not downsample factors of this net "
                                 f"(available: {list(factors)}); use values from that list")
        if not 0.0 <= self.dropout < 1.0:
            raise UsageError(f"unet.dropout must be in [0, 1), got {self.dropout!r}")
        if self.temporal_buckets < 4:
            raise UsageError(f"unet.temporal_buckets must be at least 4, got {self.temporal_buckets}")

    @property
    def downsample_factors(self) -> Tuple[int, ...]:
        return tuple(2 ** i for i in range(len(self.channel_mults)))

    @property
    def temporal_scales(self) -> Tuple[int, ...]:
        """Downsample factors whose stages have temporal attention (video nets)."""
        return tuple(self.attention_scales if self.temporal_attention_scales is None else self.temporal_attention_scales)

    @property
    def embed_dim(self) -> int:
        return self.base_width * self.time_embed_mult


# -- presets ------------------------------------------------------------------------------------
# One table shared by every generator: VideoFusion's base/residual nets and VDM (which uses the
# base widths, inflated) are built from the same rows, so comparisons are like for like.

_PRESETS: Dict[str, Dict[str, Dict]] = {
    "tiny": {  # tests: 8x8 frames, seconds on a CPU
        "base": dict(base_width=8, channel_mults=(1, 2), blocks_per_scale=1, attention_scales=(2,), head_dim=4,
                     groupnorm_groups=4),
        # VideoFusion's temporal residual net without the full-resolution temporal attention: at width 8 it
        # was 24% of a training step (16x16x16, batch 8), and the coherence test and demo samples were the
        # same without it (README, "a residual generator that sees the whole clip")
        "residual": dict(base_width=8, channel_mults=(1, 2), blocks_per_scale=1, attention_scales=(2,), head_dim=4,
                         groupnorm_groups=4, use_initial_temporal_attention=False),
    },
    "small": {  # CPU demos: 16 x 32 x 32 clips train in minutes
        "base": dict(base_width=32, channel_mults=(1, 2, 2), blocks_per_scale=1, attention_scales=(4,), head_dim=32,
                     groupnorm_groups=8),
        "residual": dict(base_width=24, channel_mults=(1, 2, 2), blocks_per_scale=1, attention_scales=(4,), head_dim=24,
                         groupnorm_groups=8),
    },
    "paper": {  # VideoFusion Table 8 (UCF101 / Sky / TaiChi): base dims 192, residual 128
        "base": dict(base_width=192, channel_mults=(1, 2, 3, 5), blocks_per_scale=2, attention_scales=(2, 4, 8),
                     head_dim=64, groupnorm_groups=32, dropout=0.1),
        "residual": dict(base_width=128, channel_mults=(1, 2, 3, 5), blocks_per_scale=2, attention_scales=(2, 4, 8),
                         head_dim=64, groupnorm_groups=32, dropout=0.1),
    },
}


def unet_preset_names() -> List[str]:
    return sorted(_PRESETS)


def unet_preset(name: str, role: str = "base", **overrides) -> UNetConfig:
    """The U-Net config of preset ``name`` (tiny/small/paper) for ``role`` (base/residual), with field
    overrides (e.g. ``in_channels``, ``num_classes``, ``video=True``)."""
    if name not in _PRESETS:
        raise UnknownNameError("preset", name, _PRESETS)
    if role not in _PRESETS[name]:
        raise UnknownNameError("U-Net role", role, _PRESETS[name])
    fields = set(UNetConfig.__dataclass_fields__)
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise UsageError(f"unknown U-Net option(s) {unknown}; valid options: {', '.join(sorted(fields))}")
    return UNetConfig(**{**_PRESETS[name][role], **overrides})


# -- the network --------------------------------------------------------------------------------

class _Stage(nn.Module):
    """A residual block, optionally followed by spatial attention and (video) temporal attention."""

    def __init__(self, res: ResBlock, spatial: Optional[nn.Module], temporal: Optional[nn.Module]):
        super().__init__()
        self.res, self.spatial, self.temporal = res, spatial, temporal

    def forward(self, h, emb, num_frames, mask, temporal_on, checkpoint=False):
        if checkpoint and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint as recompute

            return recompute(self._run, h, emb, num_frames, mask, temporal_on, use_reentrant=False)
        return self._run(h, emb, num_frames, mask, temporal_on)

    def _run(self, h, emb, num_frames, mask, temporal_on):
        h = self.res(h, emb)
        if self.spatial is not None:
            h = self.spatial(h)
        if self.temporal is not None and temporal_on:
            h = self.temporal(h, num_frames, mask)
        return h


class UNet(nn.Module):
    """``forward(x, t, class_labels=None, frame_index=None, temporal_mask=None, cond=None, temporal=True)``
    predicts eps with the shape of ``x``: ``[B, C, H, W]``, or ``[B, C, T, H, W]`` when ``cfg.video``."""

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        w, e, g = cfg.base_width, cfg.embed_dim, cfg.groupnorm_groups
        self.time_mlp = nn.Sequential(nn.Linear(w, e), nn.SiLU(), nn.Linear(e, e))
        self.class_embed = nn.Embedding(cfg.num_classes + 1, e) if cfg.num_classes > 0 else None
        self.frame_embed = nn.Embedding(cfg.num_frame_indices, e) if cfg.num_frame_indices > 0 else None
        self.in_conv = nn.Conv2d(cfg.in_channels + cfg.extra_input_channels, w, 3, padding=1)
        self.initial_temporal = self._temporal(w) if cfg.video and cfg.use_initial_temporal_attention else None

        def stage(cin, cout, factor):
            return _Stage(ResBlock(cin, cout, e, cfg.dropout, g),
                          SpatialSelfAttention(cout, cfg.head_dim, g) if factor in cfg.attention_scales else None,
                          self._temporal(cout) if cfg.video and factor in cfg.temporal_scales else None)

        widths = [w * int(m) for m in cfg.channel_mults]
        self.down = nn.ModuleList()
        skip_widths, ch = [w], w
        for level, width in enumerate(widths):
            for _ in range(cfg.blocks_per_scale):
                self.down.append(stage(ch, width, 2 ** level))
                ch = width
                skip_widths.append(ch)
            if level < len(widths) - 1:
                self.down.append(Downsample(ch))
                skip_widths.append(ch)
        self.middle = nn.ModuleList([
            _Stage(ResBlock(ch, ch, e, cfg.dropout, g), SpatialSelfAttention(ch, cfg.head_dim, g),
                   self._temporal(ch) if cfg.video else None),
            _Stage(ResBlock(ch, ch, e, cfg.dropout, g), None, None),
        ])
        self.up = nn.ModuleList()
        for level in reversed(range(len(widths))):
            for i in range(cfg.blocks_per_scale + 1):
                self.up.append(stage(ch + skip_widths.pop(), widths[level], 2 ** level))
                ch = widths[level]
            if level > 0:
                self.up.append(Upsample(ch))
        self.out = nn.Sequential(group_norm(ch, g), nn.SiLU(), zero_module(nn.Conv2d(ch, cfg.out_channels, 3, padding=1)))

    def _temporal(self, channels: int) -> TemporalSelfAttention:
        c = self.cfg
        return TemporalSelfAttention(channels, c.head_dim, c.groupnorm_groups, c.temporal_attention_heads,
                                     c.temporal_buckets, c.temporal_max_distance)

    # -- helpers ----------------------------------------------------------------------------
    def temporal_parameter_names(self) -> List[str]:
        """Names of the parameters that exist only in the video inflation (for loading 2D weights)."""
        return [n for n, _ in self.named_parameters() if "temporal" in n.split(".")[0] or ".temporal." in f".{n}"]

    def load_spatial_state(self, state: Dict[str, torch.Tensor]) -> None:
        """Load a 2D image U-Net's weights into this net, which may add what the image net lacks: temporal
        blocks (video; they keep their zero-initialised outputs), extra input channels and a frame-index
        embedding (both start at zero), so that it starts as that image net applied to each frame."""
        state = dict(state)
        extra = self.cfg.extra_input_channels
        w = state.get("in_conv.weight")
        if extra and w is not None and w.shape[1] == self.cfg.in_channels:
            state["in_conv.weight"] = torch.cat([w, w.new_zeros(w.shape[0], extra, *w.shape[2:])], dim=1)
        missing, unexpected = self.load_state_dict(state, strict=False)
        added = set(self.temporal_parameter_names()) | ({"frame_embed.weight"} if self.frame_embed is not None else set())
        really_missing = [k for k in missing if k not in added]
        if really_missing or unexpected:
            raise UsageError(f"the 2D U-Net weights do not match this architecture (missing {really_missing[:3]}, "
                             f"unexpected {list(unexpected)[:3]}); build both nets from the same preset")
        if "frame_embed.weight" in missing:
            with torch.no_grad():
                self.frame_embed.weight.zero_()

    def _embedding(self, t: torch.Tensor, batch: int, class_labels, frame_index) -> torch.Tensor:
        cfg = self.cfg
        t = torch.as_tensor(t, device=self.in_conv.weight.device)
        if t.ndim == 0:
            t = t.expand(batch)
        if t.shape != (batch,):
            raise UsageError(f"t must be a scalar or have shape [{batch}] (one timestep per sample), got {tuple(t.shape)}")
        emb = self.time_mlp(timestep_embedding(t, cfg.base_width).to(self.in_conv.weight.dtype))
        if self.class_embed is not None:
            if class_labels is None:  # no label given: the classifier-free-guidance null label
                class_labels = torch.full((batch,), cfg.num_classes, dtype=torch.long, device=emb.device)
            class_labels = torch.as_tensor(class_labels, device=emb.device).long()
            if class_labels.shape != (batch,):
                raise UsageError(f"class_labels must have shape [{batch}], got {tuple(class_labels.shape)}")
            if class_labels.numel() and (int(class_labels.min()) < 0 or int(class_labels.max()) > cfg.num_classes):
                raise UsageError(f"class_labels must lie in [0, {cfg.num_classes}] ({cfg.num_classes} = the null label "
                                 f"for guidance), got values in [{int(class_labels.min())}, {int(class_labels.max())}]")
            emb = emb + self.class_embed(class_labels)
        elif class_labels is not None:
            raise UsageError("class_labels were given to an unconditional U-Net; build it with unet.num_classes > 0")
        if self.frame_embed is not None:
            if frame_index is None:
                raise UsageError("this U-Net is conditioned on the frame index (unet.num_frame_indices > 0); pass frame_index")
            frame_index = torch.as_tensor(frame_index, device=emb.device).long()
            if frame_index.ndim not in (1, 2) or frame_index.shape[0] != batch:
                raise UsageError(f"frame_index must have shape [{batch}] or [{batch}, T], got {tuple(frame_index.shape)}")
            if frame_index.numel() and (int(frame_index.min()) < 0 or int(frame_index.max()) >= cfg.num_frame_indices):
                raise UsageError(f"frame_index must lie in [0, {cfg.num_frame_indices - 1}] (unet.num_frame_indices="
                                 f"{cfg.num_frame_indices}), got values in [{int(frame_index.min())}, {int(frame_index.max())}]")
            femb = self.frame_embed(frame_index)
            emb = emb[:, None] + femb if frame_index.ndim == 2 else emb + femb  # [B, T, E] for per-frame indices
        elif frame_index is not None:
            raise UsageError("frame_index was given to a U-Net without a frame-index embedding; set unet.num_frame_indices")
        return emb

    # -- forward ----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, t: torch.Tensor, class_labels: Optional[torch.Tensor] = None,
                frame_index: Optional[torch.Tensor] = None, temporal_mask: Optional[torch.Tensor] = None,
                cond: Optional[torch.Tensor] = None, temporal: bool = True) -> torch.Tensor:
        cfg = self.cfg
        if cond is not None:
            x = torch.cat([x, cond], dim=1)
        expected_ch = cfg.in_channels + cfg.extra_input_channels
        if cfg.video:
            if x.ndim != 5:
                raise UsageError(f"a video U-Net takes x of shape [B, C, T, H, W], got {tuple(x.shape)}")
            b, c, f, h, w = x.shape
            x = x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
        else:
            if x.ndim != 4:
                raise UsageError(f"an image U-Net takes x of shape [B, C, H, W], got {tuple(x.shape)}; "
                                 f"set unet.video=true for [B, C, T, H, W]")
            if temporal_mask is not None:
                raise UsageError("temporal_mask only applies to a video U-Net (unet.video=true)")
            b, c, h, w = x.shape
            f = 1
        if c != expected_ch:
            raise UsageError(f"x has {c} channels but the U-Net expects {expected_ch} "
                             f"(in_channels={cfg.in_channels} + extra_input_channels={cfg.extra_input_channels})")
        factor = 2 ** (len(cfg.channel_mults) - 1)
        if h % factor or w % factor:
            raise UsageError(f"frame size {h}x{w} must be divisible by {factor} for {len(cfg.channel_mults)} scales; "
                             f"resize the data or use fewer channel_mults")
        if temporal_mask is not None and tuple(temporal_mask.shape) != (b, f, f):
            raise UsageError(f"temporal_mask must have shape [B, T, T] = [{b}, {f}, {f}], got {tuple(temporal_mask.shape)}")
        if temporal_mask is not None:
            temporal_mask = temporal_mask.to(device=x.device, dtype=torch.bool)

        emb = self._embedding(t, b, class_labels, frame_index)
        if emb.ndim == 3:  # per-frame embeddings [B, T, E]
            if emb.shape[1] != f:
                raise UsageError(f"frame_index of shape [B, T] must have T = {f} frames, got {emb.shape[1]}")
            emb = emb.reshape(b * f, -1)
        elif f > 1:
            emb = emb.repeat_interleave(f, dim=0)

        temporal_on = temporal and cfg.video
        ckpt = cfg.gradient_checkpointing and self.training
        h_ = self.in_conv(x)
        if self.initial_temporal is not None and temporal_on:
            h_ = self.initial_temporal(h_, f, temporal_mask)
        skips = [h_]
        for layer in self.down:
            h_ = layer(h_, emb, f, temporal_mask, temporal_on, ckpt) if isinstance(layer, _Stage) else layer(h_)
            skips.append(h_)
        for layer in self.middle:
            h_ = layer(h_, emb, f, temporal_mask, temporal_on, ckpt)
        for layer in self.up:
            if isinstance(layer, _Stage):
                h_ = layer(torch.cat([h_, skips.pop()], dim=1), emb, f, temporal_mask, temporal_on, ckpt)
            else:
                h_ = layer(h_)
        out = self.out(h_)
        if cfg.video:
            out = out.reshape(b, f, cfg.out_channels, h, w).permute(0, 2, 1, 3, 4)
        return out


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["UNetConfig", "UNet", "unet_preset", "unet_preset_names", "count_parameters"]
