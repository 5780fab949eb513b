"""VideoFusion (Luo et al., CVPR 2023): decomposed diffusion with a shared base noise and per-frame residuals.

The generator pairs two 2D eps-prediction U-Nets (``vfbench.nets.unet``):

* the **base generator** ``z^b`` sees only the keyframe ``k = N // 2`` and predicts the shared base
  noise ``bhat = z^b(z_t^k, t)`` (Sec. 3.3; one pass per clip per step, whatever N);
* the **residual generator** ``z^r`` sees every other frame after the predicted base noise is removed,
  ``z'^i = z_t^i - sqrt(lam_i) sqrt(1 - abar_t) bhat`` (Eq. 12), conditioned on the step and the frame
  index ``i``, and predicts ``rhat^i``; the frame noise is ``sqrt(lam_i) bhat + sqrt(1 - lam_i) rhat^i``
  (Eq. 13).

Training is Eq. 14 with the three modes of Table 7 (``stopgrad``, ``no-stopgrad``, ``fixed``); the noise
math is in ``videofusion_noise``, the samplers (DDIM / DDPM, Algorithm 1, DPM-Solver++(2M), long videos of Sec. 4.6) in
``videofusion_sampling``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Mapping, Optional, Tuple, Union

import torch

from vfbench.clips import check_clips, uint8_to_unit
from vfbench.diffusion import (SAMPLERS, DiffusionSchedule, classifier_free_guidance, q_sample, sample_timesteps,
                               schedule_names)
from vfbench.errors import UsageError, WeightsError, check_range, did_you_mean
from vfbench.generator import Generator
from vfbench.generators.videofusion_noise import (
    compose_noise,
    decomposed_q_sample,
    draw_shared,
    group_ids,
    keyframe_index,
    lambda_tensor,
    lambda_vector,
    non_key_indices,
    remove_base_noise,
    residual_output_to_noise,
    residual_process,
    residual_target,
)
from vfbench.prediction import (check_min_snr_gamma, check_prediction, loss_weights, output_to_eps, output_to_x0,
                                prediction_target, weighted_mse)
from vfbench.nets.unet import UNet, UNetConfig, unet_preset
from vfbench.registry import GENERATORS

MODES = ("stopgrad", "no-stopgrad", "fixed")
NOISE_SHARING = ("none", "labels")
# What the residual generator is told about the clip's content (README "VideoFusion: departures"). The
# paper conditions both nets on the CLIP image embedding of the video's central frame: extracted from the
# real central frame in training, made by a DALL-E 2 prior at sampling time, i.e. the content is fixed
# before the video is denoised. vfbench has neither CLIP nor a prior; its equivalents, concatenated to the
# residual net's input (in pixels):
#   "keyframe": the clean keyframe: the real central frame in training, and at sampling the keyframe the
#               base generator (an image DPM) has finished denoising, in a first pass over the base
#               chain alone (its predictions are cached, so the base runs once per step as before);
#   "keyframe_x0": the base generator's current estimate of the keyframe at the same step (one pass);
#   "keyframe_latent": the noisy keyframe latent z_t^k;
#   "none": the paper's Eq. 12-13 without the CLIP conditioning (the frame's own latent only).
RESIDUAL_CONDITIONS = ("keyframe", "keyframe_x0", "keyframe_latent", "none")
# How the joint sampling pass holds the keyframe that the first pass finished (residual_condition="keyframe"):
#   "renoise": forward-noised with its base noise b at every step, z_t^k = sqrt(abar_t) x^k + sqrt(1 - abar_t) b,
#              the latent training gives the real keyframe (Eq. 9, 11), and the base predicts bhat on it (one
#              more base call per step);
#   "chain":   the first pass's own chain of latents, replayed from its cached base predictions.
KEYFRAME_PASSES = ("renoise", "chain")
RESIDUAL_INITS = ("random", "base")
# the U-Net fields that make the image DPM's spatial weights fit the residual net (residual_init="base")
RESIDUAL_SHAPE_FIELDS = ("base_width", "channel_mults", "blocks_per_scale", "attention_scales", "head_dim",
                         "groupnorm_groups", "time_embed_mult", "dropout")


@dataclass(frozen=True)
class VideoFusionConfig:
    """Everything that defines a VideoFusion model; saved with every run (paper defaults: Table 8)."""

    base: UNetConfig = field(default_factory=lambda: unet_preset("small", "base"))
    residual: UNetConfig = field(default_factory=lambda: unet_preset("small", "residual", num_frame_indices=16))
    frames: int = 16
    size: int = 64
    channels: int = 3
    lam: Union[float, Tuple[float, ...]] = 0.5  # one value for all non-key frames, or one per frame (lam[k] = 1)
    schedule: str = "cosine"
    num_timesteps: int = 1000
    mode: Literal["stopgrad", "no-stopgrad", "fixed"] = "stopgrad"
    base_lr_mult: float = 0.1  # a pretrained base is fine-tuned "with a small learning rate" (Sec. 3.4)
    # DPM-Solver++(2M) at 10 steps: the fewest whose FVD is within noise of DDIM-100 on the CPU reference run
    # (README "Samplers and the number of steps"); the paper's DDIM-50 (Table 8) is the `paper` recipe's
    sampler: Literal["ddim", "ddpm", "dpmpp_2m"] = "dpmpp_2m"
    sampling_steps: int = 10
    eta: float = 0.0
    guidance_scale: float = 3.0  # used only when num_classes > 0
    class_dropout: float = 0.1  # null-label probability in training (classifier-free guidance)
    num_classes: int = 0
    noise_sharing: Literal["none", "labels"] = "none"  # Sec. 4.7: share b by content, r by motion labels
    prediction: Literal["eps", "v", "x0"] = "x0"  # what both nets predict (vfbench.prediction); the paper: eps
    # What the base generator (the image DPM) predicts when it differs from ``prediction``; None: the same.
    # Lets a base pretrained in another parameterisation (v draws crisper textures) serve an x0 residual
    # generator, whose shapes stay coherent where a v one's sparkle (README "Generators that learn")
    base_prediction: Optional[Literal["eps", "v", "x0"]] = None
    min_snr_gamma: float = 0.0  # min-SNR-gamma loss weighting (Hang et al. 2023); 0 = off
    residual_condition: Literal["keyframe", "keyframe_x0", "keyframe_latent", "none"] = "keyframe"  # RESIDUAL_CONDITIONS
    # The residual generator as a video U-Net (temporal attention across the clip's frames, VDM-style) instead
    # of the paper's per-frame 2D net (README "VideoFusion: departures"): a keyframe does not say which way
    # its content moves, and frames denoised one at a time each pick their own way.
    residual_temporal: bool = True
    # How the joint sampling pass holds the finished keyframe (KEYFRAME_PASSES): "renoise"
    # gives the residual generator the latents it was trained on (README "VideoFusion: departures")
    keyframe_pass: Literal["renoise", "chain"] = "renoise"
    # What the residual generator starts from when a pretrained base is loaded (``load_base_state``): "random"
    # (the paper: "a randomly initialized 2D U-shaped denoising network", Sec. 4.1), or "base": the image
    # DPM's weights in its spatial layers, the conditioning input, the frame-index embedding and the temporal
    # blocks zero-initialised, so it starts as the image DPM on z'. "base" gives the residual net the base's
    # widths (RESIDUAL_SHAPE_FIELDS), so that the weights fit: at `small` 1.23x the training step time of width 24
    residual_init: Literal["random", "base"] = "random"

    def __post_init__(self):
        for name in ("frames", "size", "channels", "num_timesteps", "sampling_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"videofusion.{name} must be a positive integer, got {value!r}")
        lambda_vector(self.lam, self.frames)  # raises a UsageError naming `lam`
        if self.schedule not in schedule_names():
            raise UsageError(f"videofusion.schedule must be one of {', '.join(schedule_names())}, got {self.schedule!r}")
        check_prediction(self.prediction, "videofusion.prediction")
        if self.base_prediction is not None:
            check_prediction(self.base_prediction, "videofusion.base_prediction")
        check_min_snr_gamma(self.min_snr_gamma, "videofusion.min_snr_gamma")
        for name, allowed in (("mode", MODES), ("sampler", SAMPLERS), ("noise_sharing", NOISE_SHARING),
                              ("residual_condition", RESIDUAL_CONDITIONS), ("keyframe_pass", KEYFRAME_PASSES)):
            if getattr(self, name) not in allowed:
                raise UsageError(f"videofusion.{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.sampling_steps > self.num_timesteps:
            raise UsageError(f"videofusion.sampling_steps ({self.sampling_steps}) must not exceed num_timesteps "
                             f"({self.num_timesteps})")
        check_range("videofusion.base_lr_mult", self.base_lr_mult, 0)
        check_range("videofusion.eta", self.eta, 0, 1)
        check_range("videofusion.guidance_scale", self.guidance_scale, 0)
        check_range("videofusion.class_dropout", self.class_dropout, 0, 1, hi_open=True)
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 0:
            raise UsageError(f"videofusion.num_classes must be a non-negative integer, got {self.num_classes!r}")
        for role in ("base", "residual"):
            net: UNetConfig = getattr(self, role)
            if net.in_channels != self.channels or net.out_channels != self.channels:
                raise UsageError(f"videofusion.{role}.in_channels/out_channels must equal channels={self.channels}; "
                                 f"build the nets with VideoFusion.config_for")
            if net.video and role == "base":
                raise UsageError("videofusion.base.video must be false: the base generator is a 2D image U-Net")
            if net.num_classes != self.num_classes:
                raise UsageError(f"videofusion.{role}.num_classes ({net.num_classes}) must equal num_classes "
                                 f"({self.num_classes}); build the nets with VideoFusion.config_for")
            factor = 2 ** (len(net.channel_mults) - 1)
            if self.size % factor:
                raise UsageError(f"videofusion.size={self.size} must be divisible by {factor} (the {role} U-Net has "
                                 f"{len(net.channel_mults)} scales); choose another size or preset")
        want = self.channels if self.residual_condition != "none" else 0
        if self.residual.extra_input_channels != want:
            # the residual net's conditioning input follows residual_condition, so that changing the option
            # (config file, --control, an ablation) changes the net with it
            if self.residual.extra_input_channels not in (0, self.channels):
                raise UsageError(f"videofusion.residual.extra_input_channels must be {want} with residual_condition="
                                 f"{self.residual_condition!r}; build the nets with VideoFusion.config_for")
            object.__setattr__(self, "residual", dataclasses.replace(self.residual, extra_input_channels=want))
        if not isinstance(self.residual_temporal, bool):
            raise UsageError(f"videofusion.residual_temporal must be true or false, got {self.residual_temporal!r}")
        if self.residual.video != self.residual_temporal:  # the net follows the option, like its conditioning input
            object.__setattr__(self, "residual", dataclasses.replace(self.residual, video=self.residual_temporal))
        if self.base.extra_input_channels:
            raise UsageError("videofusion.base.extra_input_channels must be 0: the base generator sees the keyframe only")
        if self.base.num_frame_indices != 0:
            raise UsageError("videofusion.base.num_frame_indices must be 0: the base generator is a plain image DPM")
        if self.residual_init not in RESIDUAL_INITS:
            raise UsageError(f"videofusion.residual_init must be one of {', '.join(RESIDUAL_INITS)}, got "
                             f"{self.residual_init!r}")
        if self.residual_init == "base":  # the net follows the option: the image DPM's weights must fit it
            shape = {f: getattr(self.base, f) for f in RESIDUAL_SHAPE_FIELDS}
            object.__setattr__(self, "residual", dataclasses.replace(self.residual, **shape))
        if self.residual.num_frame_indices < self.frames:
            raise UsageError(f"videofusion.residual.num_frame_indices must be at least frames={self.frames} "
                             f"(the residual generator is conditioned on the frame index, Eq. 12)")


@GENERATORS.register("videofusion", description="decomposed diffusion: shared base noise + per-frame residual "
                                                "(Luo et al. 2023)")
class VideoFusion(Generator):
    """Base + residual generators over the decomposed diffusion process (Eq. 7-14 of VideoFusion)."""

    name = "videofusion"
    Config = VideoFusionConfig
    LEGACY_DEFAULTS = {"prediction": "eps", "min_snr_gamma": 0.0, "residual_condition": "none",
                       "residual_temporal": False, "keyframe_pass": "chain", "base_prediction": None,
                       "residual_init": "random"}

    def __init__(self, config: VideoFusionConfig):
        super().__init__(config)
        self.base = UNet(config.base)
        self.residual = UNet(config.residual)
        # Whether the base holds pretrained weights (load_base_state). Saved with the weights, so a resumed
        # or reloaded run keeps its learning rates. A base trained from scratch gets the full rate: the
        # paper's small rate is for fine-tuning a pretrained base (Sec. 3.4); at 0.1x a random base barely
        # learns (it sees one frame per clip) and its keyframe stays noise.
        self.register_buffer("base_pretrained", torch.zeros((), dtype=torch.bool))
        self.schedule = DiffusionSchedule.named(config.schedule, config.num_timesteps)
        self.lam: Tuple[float, ...] = lambda_vector(config.lam, config.frames)
        self.key = keyframe_index(config.frames)
        self.others: List[int] = non_key_indices(config.frames, self.key)
        if config.mode == "fixed":
            self.base.requires_grad_(False)
            self.base.eval()

    @classmethod
    def config_for(cls, preset: str, frames: int, size: int, num_classes: int = 0, **overrides) -> VideoFusionConfig:
        """A config at preset ``tiny`` / ``small`` / ``paper`` (Table 8 widths: base 192, residual 128)."""
        base = unet_preset(preset, "base", num_classes=num_classes)
        residual = unet_preset(preset, "residual", num_classes=num_classes, num_frame_indices=frames)
        return VideoFusionConfig(base=base, residual=residual, frames=frames, size=size, num_classes=num_classes,
                                 **overrides)

    @property
    def base_prediction(self) -> str:
        """What the base generator's output is (``config.base_prediction``, else ``config.prediction``)."""
        return self.config.base_prediction or self.config.prediction

    def train(self, mode: bool = True):
        super().train(mode)
        if self.config.mode == "fixed":  # a frozen base is an inference-only network (no dropout)
            self.base.eval()
        return self

    # -- Eq. 12-13: the predicted noise of every frame ----------------------------------------------
    def predict_base_and_residual(self, z_t: torch.Tensor, t: torch.Tensor, class_labels: Optional[torch.Tensor] = None,
                                  stop_gradient: bool = False, keyframe: Optional[torch.Tensor] = None,
                                  base_hat: Optional[torch.Tensor] = None) -> Dict[str, Any]:
        """Both networks on one batch: ``bhat = z^b(z_t^k, t)`` and ``rhat^i = z^r(z'^i_t, t, i[, cond])`` with
        ``z'`` from Eq. 12.

        ``z_t`` is ``[B, N, C, H, W]``, ``t`` ``[B]``. Returns a dict: ``base_out`` / ``residual_out`` (the nets'
        raw outputs, eps, v or x0 by ``config.prediction``), ``base_hat`` (the base noise estimate ``bhat``),
        ``base_used`` (what the non-key frames see: ``bhat.detach()`` when ``stop_gradient``, the ``[.]_sg``
        of Eq. 14), ``residual_hat`` (``rhat``, ``[B, N - 1, C, H, W]``; None for one-frame clips),
        ``z_prime`` and ``process`` (``residual_process``).

        ``keyframe``: the clean keyframe ``[B, C, H, W]`` in [-1, 1] that ``residual_condition="keyframe"``
        conditions on (the real one in training, the finished base sample at sampling; without it the base's
        current estimate stands in). ``base_hat``: an already computed ``bhat`` (sampling's first pass); the
        base net is then not called and ``base_out`` is None.
        """
        b = z_t.shape[0]
        cfg = self.config
        z_key = z_t[:, self.key]
        if base_hat is not None:
            base_out = None
        elif cfg.mode == "fixed":
            with torch.no_grad():
                base_out = self.base(z_key, t, class_labels=class_labels)
        else:
            base_out = self.base(z_key, t, class_labels=class_labels)
        if base_out is not None:
            base_hat = output_to_eps(self.schedule, z_key, t, base_out, self.base_prediction)
        base_used = base_hat.detach() if stop_gradient else base_hat
        out: Dict[str, Any] = {"base_out": base_out, "base_hat": base_hat, "base_used": base_used,
                               "residual_out": None, "residual_hat": None, "z_prime": None, "process": None}
        if not self.others:
            return out
        m = len(self.others)
        lam_others = [self.lam[i] for i in self.others]
        # Eq. 12 on every frame: the keyframe's (lam_k = 1) is what the temporal residual net sees in its slot
        z_prime_all = remove_base_noise(self.schedule, z_t, t, base_used, self.lam)
        z_prime = z_prime_all[:, self.others]
        cond = self._residual_condition(z_key, t, base_out, base_hat, stop_gradient, keyframe)
        if cfg.residual_temporal:
            residual_out = self._residual_video(z_prime_all, t, class_labels, cond)
        else:
            frame_index = torch.tensor(self.others, device=z_t.device).repeat(b)
            labels = class_labels.repeat_interleave(m) if class_labels is not None else None
            # frames folded into the batch: one batched residual call for all non-key frames
            residual_out = self.residual(z_prime.flatten(0, 1), t.repeat_interleave(m), class_labels=labels,
                                         frame_index=frame_index,
                                         cond=cond.repeat_interleave(m, dim=0) if cond is not None else None)
            residual_out = residual_out.view(b, m, *z_t.shape[2:])
        process = residual_process(self.schedule, t, lam_others, residual_out)
        out.update(residual_out=residual_out, z_prime=z_prime, process=process,
                   residual_hat=residual_output_to_noise(z_prime, residual_out, process, cfg.prediction))
        return out

    def _residual_video(self, z_prime_all: torch.Tensor, t: torch.Tensor, class_labels: Optional[torch.Tensor],
                        cond: Optional[torch.Tensor]) -> torch.Tensor:
        """``residual_temporal``: one video-U-Net call over the whole clip, so the frames' temporal attention sees
        true frame offsets. The keyframe's slot holds its latent with the base noise removed (Eq. 12 with
        ``lam_k = 1``, i.e. ``sqrt(abar_t)`` times the base's keyframe estimate); its output is discarded, since
        the keyframe's noise is ``bhat`` alone (Eq. 13). ``z_prime_all`` is Eq. 12 on all N frames; returns the non-key
        frames' outputs ``[B, N - 1, C, H, W]``."""
        b, n = z_prime_all.shape[:2]
        frame_index = torch.arange(n, device=z_prime_all.device).expand(b, n)
        video_cond = cond.unsqueeze(2).expand(-1, -1, n, -1, -1) if cond is not None else None
        out = self.residual(z_prime_all.transpose(1, 2), t, class_labels=class_labels, frame_index=frame_index,
                            cond=video_cond)
        return out.transpose(1, 2)[:, self.others]

    def _residual_condition(self, z_key: torch.Tensor, t: torch.Tensor, base_out: Optional[torch.Tensor],
                            base_hat: torch.Tensor, stop_gradient: bool,
                            keyframe: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """What the residual generator is told about the clip (``RESIDUAL_CONDITIONS``): the clean keyframe,
        the base generator's current keyframe estimate (clipped to [-1, 1]; detached under stop-gradient,
        like ``bhat``), the noisy keyframe latent, or nothing."""
        kind = self.config.residual_condition
        if kind == "none":
            return None
        if kind == "keyframe_latent":
            return z_key
        if kind == "keyframe" and keyframe is not None:
            return keyframe.to(z_key.dtype)
        if base_out is not None:
            x0 = output_to_x0(self.schedule, z_key, t, base_out, self.base_prediction)
        else:
            x0 = output_to_x0(self.schedule, z_key, t, base_hat, "eps")
        x0 = x0.clamp(-1.0, 1.0)
        return x0.detach() if stop_gradient else x0

    def predict_noise(self, z_t: torch.Tensor, t: torch.Tensor, class_labels: Optional[torch.Tensor] = None,
                      keyframe: Optional[torch.Tensor] = None, base_hat: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Eq. 13: the predicted noise ``epshat`` of every frame, ``[B, N, C, H, W]`` (``keyframe``, ``base_hat``:
        see ``predict_base_and_residual``)."""
        parts = self.predict_base_and_residual(z_t, t, class_labels, keyframe=keyframe, base_hat=base_hat)
        if parts["residual_hat"] is None:
            return parts["base_hat"].unsqueeze(1)
        return compose_noise(parts["base_used"], parts["residual_hat"], self.lam, self.key)

    def guided_noise(self, z_t: torch.Tensor, t: torch.Tensor, class_labels: Optional[torch.Tensor],
                     scale: float, keyframe: Optional[torch.Tensor] = None,
                     base_hat: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Classifier-free guidance on both networks (Ho & Salimans 2022).

        The conditional and the unconditional (null label) passes each run the full Eq. 12-13 path, so
        each residual call sees its own pass's ``z'``; since Eq. 13 is linear, guiding ``epshat`` equals
        guiding ``bhat`` and ``rhat`` separately. A given ``base_hat`` (already guided) is shared by both.
        """
        if class_labels is None or self.config.num_classes == 0 or scale == 1.0:
            return self.predict_noise(z_t, t, class_labels, keyframe=keyframe, base_hat=base_hat)
        null = torch.full_like(class_labels, self.config.num_classes)
        two = lambda x: None if x is None else torch.cat([x, x])  # noqa: E731
        both = self.predict_noise(torch.cat([z_t, z_t]), torch.cat([t, t]), torch.cat([class_labels, null]),
                                  keyframe=two(keyframe), base_hat=two(base_hat))
        eps_cond, eps_uncond = both.chunk(2)
        return classifier_free_guidance(eps_cond, eps_uncond, scale)

    def guided_base_noise(self, z_key: torch.Tensor, t: torch.Tensor, class_labels: Optional[torch.Tensor],
                          scale: float) -> torch.Tensor:
        """``bhat`` of the keyframe alone (the base generator as an image DPM), with classifier-free guidance."""
        def bhat(z, tt, labels):
            return output_to_eps(self.schedule, z, tt, self.base(z, tt, class_labels=labels), self.base_prediction)

        if class_labels is None or self.config.num_classes == 0 or scale == 1.0:
            return bhat(z_key, t, class_labels)
        null = torch.full_like(class_labels, self.config.num_classes)
        cond, uncond = bhat(torch.cat([z_key, z_key]), torch.cat([t, t]), torch.cat([class_labels, null])).chunk(2)
        return classifier_free_guidance(cond, uncond, scale)

    # -- training: Eq. 14 -------------------------------------------------------------------------
    def _noise_groups(self, batch: Mapping[str, Any], size: int):
        """Sec. 4.7: with noise_sharing='labels', clips sharing a content label share b, clips sharing a
        motion label share r; otherwise every clip has its own noises."""
        if self.config.noise_sharing == "none":
            return group_ids(None, size), group_ids(None, size)
        ids = []
        for key in ("content", "motion"):
            labels = batch.get(key)
            if labels is None or bool((torch.as_tensor(labels) < 0).all()):
                raise UsageError(f"noise_sharing='labels' needs batch['{key}'] labels; use a dataset with content and "
                                 f"motion labels (e.g. shapes) or set noise_sharing='none'")
            ids.append(group_ids(labels, size))
        return ids[0], ids[1]

    @staticmethod
    def _training_generator(generator: Optional[torch.Generator]) -> torch.Generator:
        # The trainer's contract is loss(batch): without an explicit generator the training noise comes
        # from torch's default CPU generator, which the shared trainer seeds and checkpoints. Every draw
        # is made on the CPU, so a run's noise does not depend on the device it trains on.
        return generator if generator is not None else torch.default_generator

    def training_noise(self, batch: Mapping[str, Any], shape: torch.Size, generator: torch.Generator):
        """The draws of one training step: ``t`` (one per clip), base noise ``b`` ``[B, C, H, W]`` and residual
        noise ``r`` ``[B, N, C, H, W]``, shared between clips by label when ``noise_sharing='labels'``."""
        size = shape[0]
        t = sample_timesteps(self.schedule, size, generator, self.device)
        base_ids, residual_ids = self._noise_groups(batch, size)
        base = draw_shared(shape[2:], base_ids, generator, self.device)
        residual = draw_shared(shape[1:], residual_ids, generator, self.device)
        return t, base, residual

    def loss(self, batch: Mapping[str, Any], generator: Optional[torch.Generator] = None) -> Dict[str, Any]:
        """Eq. 14, mean squared error over every element of the clip.

        ``loss = (loss_key + (N - 1) loss_residual) / N`` where ``loss_key = mean ||eps^k - bhat||^2`` and
        ``loss_residual = mean_{i != k} ||eps^i - sqrt(lam_i) [bhat]_sg - sqrt(1 - lam_i) rhat^i||^2``.
        ``stopgrad``: the residual term sees a detached ``bhat`` (inside ``z'`` and ``epshat``), so the base
        generator is trained by the keyframe term only; ``no-stopgrad``: gradient flows through ``bhat``;
        ``fixed``: the base is frozen. Draw order from ``generator``: t, b, r, label dropout.
        """
        g = self._training_generator(generator)
        x0 = self._clips(batch)
        frames = x0.shape[1]
        t, base, residual = self.training_noise(batch, x0.shape, g)
        labels = self._training_labels(batch, x0.shape[0], g)
        labels = labels.to(self.device) if labels is not None else None
        z_t, eps = decomposed_q_sample(self.schedule, x0, t, base, residual, self.lam)

        stop = self.config.mode in ("stopgrad", "fixed")
        parts = self.predict_base_and_residual(z_t, t, labels, stop_gradient=stop, keyframe=x0[:, self.key])
        cfg = self.config
        weights = loss_weights(self.schedule, t, cfg.prediction, cfg.min_snr_gamma, like=z_t)
        # the error terms in float32 even when the nets run under autocast
        key_target = prediction_target(self.schedule, x0[:, self.key], eps[:, self.key], t, self.base_prediction)
        key_weights = loss_weights(self.schedule, t, self.base_prediction, cfg.min_snr_gamma, like=z_t)
        loss_key = weighted_mse(parts["base_out"], key_target, key_weights)
        if parts["residual_out"] is None:
            return {"loss": loss_key, "loss_key": loss_key, "loss_residual": torch.zeros_like(loss_key)}
        lam_t = lambda_tensor([self.lam[i] for i in self.others], eps)
        if cfg.prediction == "eps":
            # Eq. 14 as written: the error of the composed frame noise sqrt(lam) [bhat]_sg + sqrt(1 - lam) rhat
            eps_hat_others = lam_t.sqrt() * parts["base_used"].float().unsqueeze(1) + (1.0 - lam_t).sqrt() * \
                parts["residual_hat"].float()
            loss_residual = weighted_mse(eps_hat_others, eps[:, self.others], weights)
        else:
            # Eq. 14's residual term in the residual net's own parameterisation. The noise it must find in z'
            # is (eps^i - sqrt(lam_i) [bhat]_sg) / sqrt(1 - lam_i); as in Eq. 14, where rhat's error enters the
            # frame's noise scaled by sqrt(1 - lam_i), the error is weighted by sqrt(1 - lam_i) (so frames
            # with lam_i = 1, which have no residual, weigh nothing and need no division)
            scale = (1.0 - lam_t).sqrt()
            found_scaled = eps[:, self.others] - lam_t.sqrt() * parts["base_used"].unsqueeze(1)
            target_scaled = residual_target(scale * x0[:, self.others], found_scaled, parts["process"], cfg.prediction)
            loss_residual = weighted_mse(scale * parts["residual_out"], target_scaled, weights)
        loss = (loss_key + len(self.others) * loss_residual) / frames
        return {"loss": loss, "loss_key": loss_key, "loss_residual": loss_residual}

    # -- pretraining the base generator (Sec. 3.3, Table 6) --------------------------------------
    def pretrain_loss(self, batch: Mapping[str, Any], generator: Optional[torch.Generator] = None) -> Dict[str, Any]:
        """Image-DPM loss of the base generator, ``||eps - z^b(sqrt(abar) x + sqrt(1 - abar) eps, t)||^2``.

        Images are one random frame per clip of ``batch['video']``, or ``batch['image']`` (uint8
        ``[B, C, H, W]``, e.g. an external image folder). Same randomness rule as ``loss``.
        """
        if self.config.mode == "fixed":
            raise UsageError("the base generator is frozen in mode 'fixed'; pretrain it with mode 'stopgrad' and load "
                             "the checkpoint with load_base_state")
        g = self._training_generator(generator)
        if "image" in batch:
            images = check_clips(torch.as_tensor(batch["image"]).unsqueeze(1), "batch['image']",
                                 channels=self.config.channels)[:, 0]
            x0 = uint8_to_unit(images.to(self.device))
        else:
            clips = self._clips(batch)
            pick = torch.randint(0, clips.shape[1], (clips.shape[0],), generator=g, device=g.device).to(self.device)
            x0 = clips[torch.arange(clips.shape[0], device=self.device), pick]
        size = x0.shape[0]
        t = sample_timesteps(self.schedule, size, g, self.device)
        eps = torch.randn(x0.shape, generator=g, device=g.device).to(self.device, x0.dtype)
        labels = self._training_labels(batch, size, g)
        labels = labels.to(self.device) if labels is not None else None
        target = prediction_target(self.schedule, x0, eps, t, self.base_prediction)
        weights = loss_weights(self.schedule, t, self.base_prediction, self.config.min_snr_gamma, like=x0)
        out = self.base(q_sample(self.schedule, x0, t, eps), t, class_labels=labels)
        return {"loss": weighted_mse(out, target, weights)}

    def load_base_state(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Load a pretrained base U-Net (strict). Accepts the base's own state dict or a full VideoFusion one."""
        from vfbench.checkpoint import check_state_fits, submodule_state

        state = submodule_state(state_dict, "base.")
        check_state_fits(self.base.state_dict(), state, "the base checkpoint does not fit this VideoFusion's base U-Net")
        self.base.load_state_dict(state, strict=True)
        self.base_pretrained.fill_(True)
        if self.config.residual_init == "base":
            # the keyframe-condition input and the frame embedding at zero, the temporal blocks' outputs too:
            # the residual net starts as the image DPM applied to each frame's z'
            self.residual.load_spatial_state(state)

    def param_groups(self, lr: float) -> List[Dict[str, Any]]:
        """Residual generator at ``lr``; base generator at ``lr * base_lr_mult`` once it is pretrained, else at
        ``lr`` (absent when ``fixed``)."""
        groups = []
        if self.config.mode != "fixed":
            mult = self.config.base_lr_mult if bool(self.base_pretrained) else 1.0
            groups.append({"name": "base", "params": list(self.base.parameters()), "lr": lr * mult})
        groups.append({"name": "residual", "params": list(self.residual.parameters()), "lr": lr})
        return groups

    # -- sampling (Fig. 4, Appendix A, Sec. 4.6) ------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, generator: Optional[torch.Generator] = None, *, base_noise=None, residual_noise=None,
               base_seed: Optional[int] = None, residual_seed: Optional[int] = None, labels=None,
               guidance_scale: Optional[float] = None, sampler: Optional[str] = None, steps: Optional[int] = None,
               eta: Optional[float] = None, batch_size: Optional[int] = None, keyframe_pass: Optional[str] = None,
               **unknown) -> torch.Tensor:
        """uint8 clips ``[n, T, C, H, W]`` (Fig. 4 / Algorithm 1); the controls are documented in
        ``videofusion_sampling`` (same generator state, same bytes; clips independent of ``batch_size``)."""
        from vfbench.generators.videofusion_sampling import sample_clips

        _refuse_unknown(unknown)
        return sample_clips(self, n, generator, base_noise=base_noise, residual_noise=residual_noise,
                            base_seed=base_seed, residual_seed=residual_seed, labels=labels,
                            guidance_scale=guidance_scale, sampler=sampler, steps=steps, eta=eta, batch_size=batch_size,
                            keyframe_pass=keyframe_pass)

    @torch.no_grad()
    def sample_long(self, n: int, length: int, generator: Optional[torch.Generator] = None, *,
                    overlap: Optional[int] = None, **controls) -> torch.Tensor:
        """uint8 clips ``[n, length, C, H, W]`` by the replacement method with a fixed base noise (Sec. 4.6);
        ``overlap`` defaults to ``N // 2 + 1`` (the known frames must include the keyframe to condition)."""
        from vfbench.generators.videofusion_sampling import sample_long_clips

        _refuse_unknown({k: v for k, v in controls.items() if k not in SAMPLE_CONTROLS})
        return sample_long_clips(self, n, length, generator, overlap=overlap, **controls)


SAMPLE_CONTROLS = ("base_noise", "residual_noise", "base_seed", "residual_seed", "labels", "guidance_scale",
                   "sampler", "steps", "eta", "batch_size", "keyframe_pass")


def _refuse_unknown(unknown: Mapping[str, Any]) -> None:
    if unknown:
        raise UsageError(did_you_mean("VideoFusion sampling control", sorted(unknown)[0], SAMPLE_CONTROLS))


__all__ = ["VideoFusion", "VideoFusionConfig", "MODES", "SAMPLERS", "NOISE_SHARING", "SAMPLE_CONTROLS"]
