"""VDM baseline: Video Diffusion Models (Ho et al. 2022) on VideoFusion's base U-Net, inflated for video.

Standard Gaussian diffusion on the whole clip (i.i.d. noise for every frame, one timestep per clip),
eps-prediction with the simple loss (DDPM Eq. 14; MSE, L1 optional), denoised by the factorised
space-time U-Net of ``vfbench.nets.unet`` (``video=True``): spatial layers per frame, temporal attention
over frames with a relative-position bias (VDM Sec. 3). The U-Net has the widths of VideoFusion's base
generator at the same preset, so VideoFusion's Table 4 comparison ("VDM re-implemented on the base
generator") is like for like.

Extras of the VDM paper implemented here:

* classifier-free guidance (Ho & Salimans 2022) for class-conditional runs: null-label dropout in
  training, guided eps at sampling (default scale 3.0, VideoFusion Table 8);
* joint image-video training (VDM Sec. 3/4.3): ``joint_images`` independent frames from other clips
  are appended to each clip, with temporal attention masked so they do not see each other or the clip;
* reconstruction-guided extension to longer videos (VDM Sec. 3.1, Eq. 7): ``sample_long``, in ``vdm_long.py``.

Sampling is DDIM (Song et al. 2021) with 50 respaced steps by default, or ancestral DDPM.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Literal, Mapping, Optional, Sequence, Union

import torch

from vfbench.clips import unit_to_uint8
from vfbench.diffusion import (SAMPLERS, DiffusionSchedule, classifier_free_guidance, q_sample, sample_timesteps,
                               schedule_names)
from vfbench.errors import UsageError, check_range, did_you_mean
from vfbench.generator import Generator
from vfbench.nets.unet import UNet, UNetConfig, unet_preset
from vfbench.prediction import (check_min_snr_gamma, check_prediction, loss_weights, output_to_eps,
                                prediction_target)
from vfbench.registry import GENERATORS

LOSSES = ("mse", "l1")
SAMPLE_CONTROLS = ("batch_size", "sampler", "steps", "eta", "labels", "guidance_scale")
RECONSTRUCTION_WEIGHT = 2.0  # default w_r of long videos (Ho et al. 2022, Sec. 3.1, Eq. 7); see vdm_long.py


@dataclass(frozen=True)
class VDMConfig:
    """Everything that defines a VDM model; saved with every run."""

    unet: UNetConfig = field(default_factory=lambda: unet_preset("small", "base", video=True))
    frames: int = 16
    size: int = 64
    channels: int = 3
    schedule: str = "cosine"
    num_timesteps: int = 1000
    loss: Literal["mse", "l1"] = "mse"
    # DPM-Solver++(2M) at 20 steps: the fewest whose FVD is within noise of DDIM-100 on the CPU reference run
    # `ref-vdm-pre` (10 steps, enough for VideoFusion, score ~19 above it; README "Samplers and the number of steps")
    sampler: Literal["ddim", "ddpm", "dpmpp_2m"] = "dpmpp_2m"
    sampling_steps: int = 20
    eta: float = 0.0
    guidance_scale: float = 3.0  # used only when the U-Net is class-conditional
    class_dropout: float = 0.1  # null-label probability in training (classifier-free guidance)
    joint_images: int = 0  # independent images appended per clip in training (temporal attention masked)
    prediction: Literal["eps", "v", "x0"] = "x0"  # what the U-Net predicts (vfbench.prediction); the VDM paper: eps
    min_snr_gamma: float = 0.0  # min-SNR-gamma loss weighting (Hang et al. 2023); 0 = off
    spatial_lr_mult: float = 1.0  # learning-rate factor of the spatial layers (those an image DPM initialises)

    def __post_init__(self):
        for name in ("frames", "size", "channels", "num_timesteps", "sampling_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"vdm.{name} must be a positive integer, got {value!r}")
        if isinstance(self.joint_images, bool) or not isinstance(self.joint_images, int) or self.joint_images < 0:
            raise UsageError(f"vdm.joint_images must be a non-negative integer, got {self.joint_images!r}")
        if self.schedule not in schedule_names():
            raise UsageError(f"vdm.schedule must be one of {', '.join(schedule_names())}, got {self.schedule!r}")
        for name, allowed in (("loss", LOSSES), ("sampler", SAMPLERS)):
            if getattr(self, name) not in allowed:
                raise UsageError(f"vdm.{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.sampling_steps > self.num_timesteps:
            raise UsageError(f"vdm.sampling_steps ({self.sampling_steps}) must not exceed num_timesteps ({self.num_timesteps})")
        check_range("vdm.eta", self.eta, 0, 1)
        check_range("vdm.spatial_lr_mult", self.spatial_lr_mult, 0)
        check_prediction(self.prediction, "vdm.prediction")
        check_min_snr_gamma(self.min_snr_gamma, "vdm.min_snr_gamma")
        check_range("vdm.guidance_scale", self.guidance_scale, 0)
        check_range("vdm.class_dropout", self.class_dropout, 0, 1, hi_open=True)
        u = self.unet
        if not u.video:
            raise UsageError("vdm.unet.video must be true: VDM denoises whole clips with a space-time U-Net")
        if u.in_channels != self.channels or u.out_channels != self.channels:
            raise UsageError(f"vdm.unet.in_channels/out_channels must equal channels={self.channels}; build it with VDM.config_for")
        if u.extra_input_channels or u.num_frame_indices:
            raise UsageError("vdm.unet.extra_input_channels and num_frame_indices must be 0: VDM has no such conditioning")
        factor = 2 ** (len(u.channel_mults) - 1)
        if self.size % factor:
            raise UsageError(f"vdm.size={self.size} must be divisible by {factor} (the U-Net has {len(u.channel_mults)} scales)")

    @property
    def num_classes(self) -> int:
        return self.unet.num_classes


@GENERATORS.register("vdm", description="video diffusion with a factorized space-time U-Net (Ho et al. 2022)")
class VDM(Generator):
    """Gaussian diffusion on clips with a factorised space-time U-Net (Video Diffusion Models)."""

    name = "vdm"
    Config = VDMConfig
    LEGACY_DEFAULTS = {"prediction": "eps", "min_snr_gamma": 0.0, "spatial_lr_mult": 1.0}

    def __init__(self, config: VDMConfig):
        super().__init__(config)
        self.unet = UNet(config.unet)
        self.schedule = DiffusionSchedule.named(config.schedule, config.num_timesteps)

    @classmethod
    def config_for(cls, preset: str, frames: int, size: int, num_classes: int = 0, **overrides) -> VDMConfig:
        """A config at preset ``tiny`` / ``small`` / ``paper`` whose U-Net has VideoFusion's *base* widths
        (``unet_preset(preset, "base")``), inflated with temporal attention."""
        channels = overrides.get("channels", 3)
        unet = unet_preset(preset, "base", video=True, num_classes=num_classes, in_channels=channels,
                           out_channels=channels)
        return VDMConfig(unet=unet, frames=frames, size=size, **overrides)

    @property
    def base(self) -> UNet:
        """The module a 2D image-DPM checkpoint initialises (``load_base_state``): the whole space-time
        U-Net, whose spatial layers have the base generator's widths."""
        return self.unet

    def load_base_state(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Initialise the U-Net's spatial layers from a pretrained 2D image DPM (``vfbench pretrain base``,
        VideoFusion's base generator at the same preset); the temporal attention blocks keep their
        zero-initialised output, so the inflated net starts as the image DPM applied to every frame.

        This is how video DPMs are commonly started from an image model (VDM Sec. 4 trains jointly on
        images instead; VideoFusion Sec. 4.4 re-implements VDM "based on the base generator"); it gives
        VDM the same image pretraining as a ``--base-init`` VideoFusion. Accepts the base's own state dict
        or a whole VideoFusion one (its ``base.*`` weights)."""
        from vfbench.checkpoint import check_state_fits, submodule_state

        state = submodule_state(state_dict, "base.")
        check_state_fits(self.unet.state_dict(), state, "the image-DPM checkpoint does not fit this VDM's U-Net",
                         optional=self.unet.temporal_parameter_names())
        self.unet.load_spatial_state(state)

    # -- the denoiser -------------------------------------------------------------------------
    def predict_noise(self, z_t: torch.Tensor, t: torch.Tensor, class_labels: Optional[torch.Tensor] = None,
                      temporal_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """eps_theta(z_t, t[, c]) for clips ``[B, T, C, H, W]``: the U-Net's output converted from
        ``config.prediction`` (``vfbench.prediction.output_to_eps``)."""
        out = self.network_output(z_t, t, class_labels, temporal_mask)
        return output_to_eps(self.schedule, z_t, t, out, self.config.prediction)

    def network_output(self, z_t: torch.Tensor, t: torch.Tensor, class_labels: Optional[torch.Tensor] = None,
                       temporal_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The U-Net's raw output (eps, v or x0 by ``config.prediction``), ``[B, T, C, H, W]`` (the U-Net's
        layout is ``[B, C, T, H, W]``)."""
        out = self.unet(z_t.transpose(1, 2), t, class_labels=class_labels, temporal_mask=temporal_mask)
        return out.transpose(1, 2)

    def guided_noise(self, z_t: torch.Tensor, t: torch.Tensor, class_labels: Optional[torch.Tensor],
                     scale: float) -> torch.Tensor:
        """Classifier-free guidance; the conditional and null-label passes share one batched forward."""
        if class_labels is None or self.config.num_classes == 0 or scale == 1.0:
            return self.predict_noise(z_t, t, class_labels)
        null = torch.full_like(class_labels, self.config.num_classes)
        eps_cond, eps_uncond = self.predict_noise(torch.cat([z_t, z_t]), torch.cat([t, t]),
                                                  torch.cat([class_labels, null])).chunk(2)
        return classifier_free_guidance(eps_cond, eps_uncond, scale)

    # -- training -----------------------------------------------------------------------------
    def param_groups(self, lr: float):
        """Temporal layers at ``lr``; the spatial layers (the image DPM's) at ``lr * spatial_lr_mult``."""
        mult = self.config.spatial_lr_mult
        if mult == 1.0:
            return super().param_groups(lr)
        temporal = set(self.unet.temporal_parameter_names())
        named = [(n, p) for n, p in self.unet.named_parameters() if p.requires_grad]
        return [{"name": "spatial", "params": [p for n, p in named if n not in temporal], "lr": lr * mult},
                {"name": "temporal", "params": [p for n, p in named if n in temporal], "lr": lr}]

    def _joint_images(self, x0: torch.Tensor, labels: Optional[torch.Tensor], generator: torch.Generator):
        """Append ``joint_images`` single frames from other clips to every clip (VDM joint training).

        For clip b the frames come from clips of the same (non-dropped) class when the model is
        class-conditional (its conditioning is per clip), else from any other clip; a clip with no such
        partner in the batch uses frames of its own. Returns the extended clips and the temporal mask
        ``[B, T + J, T + J]`` in which the T video frames attend to each other and each image only to itself.
        """
        j = self.config.joint_images
        b, t = x0.shape[:2]
        pick_clip = torch.empty(b, j, dtype=torch.long)
        for i in range(b):
            if labels is None or int(labels[i]) == self.config.num_classes:
                partners = [p for p in range(b) if p != i]
            else:
                partners = [p for p in range(b) if p != i and int(labels[p]) == int(labels[i])]
            partners = torch.tensor(partners or [i])
            pick_clip[i] = partners[torch.randint(0, len(partners), (j,), generator=generator, device=generator.device).cpu()]
        pick_frame = torch.randint(0, t, (b, j), generator=generator, device=generator.device).cpu()
        images = x0[pick_clip.to(x0.device), pick_frame.to(x0.device)]  # [B, J, C, H, W]
        mask = torch.zeros(b, t + j, t + j, dtype=torch.bool, device=x0.device)
        mask[:, :t, :t] = True
        return torch.cat([x0, images], dim=1), mask

    @staticmethod
    def _training_generator(generator: Optional[torch.Generator]) -> torch.Generator:
        # The trainer's contract is loss(batch): without an explicit generator the noise comes from torch's
        # default CPU generator, which the shared trainer seeds per step (and checkpoints). All draws are on
        # the generator's device, so a run's noise does not depend on the device it trains on.
        return generator if generator is not None else torch.default_generator

    def loss(self, batch: Mapping[str, Any], generator: Optional[torch.Generator] = None) -> Dict[str, Any]:
        """``|| target - f_theta(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t[, c]) ||`` averaged over every element
        of every frame (DDPM Eq. 14 on clips; squared error, or absolute error with ``loss='l1'``), where the
        target is eps, v or x0 by ``config.prediction`` and each clip is weighted by min-SNR-gamma when set.

        One t per clip, i.i.d. noise per frame. Draw order from ``generator``: t, label dropout, joint-image
        picks, noise.
        """
        g = self._training_generator(generator)
        x0 = self._clips(batch)
        size = x0.shape[0]
        t = sample_timesteps(self.schedule, size, g, self.device)
        labels = self._training_labels(batch, size, g)
        mask = None
        if self.config.joint_images:
            x0, mask = self._joint_images(x0, labels, g)
        noise = torch.randn(x0.shape, generator=g, device=g.device).to(self.device, x0.dtype)
        z_t = q_sample(self.schedule, x0, t, noise)
        pred = self.network_output(z_t, t, labels.to(self.device) if labels is not None else None, mask).float()
        target = prediction_target(self.schedule, x0, noise, t, self.config.prediction).float()
        weights = loss_weights(self.schedule, t, self.config.prediction, self.config.min_snr_gamma, like=pred)
        diff = (pred - target).square() if self.config.loss == "mse" else (pred - target).abs()
        err = (weights * diff.flatten(1).mean(dim=1)).mean()
        out = {"loss": err}
        if mask is not None:  # the video and image parts, for the log
            frames = self.config.frames
            with torch.no_grad():
                out["loss_video"] = diff[:, :frames].mean()
                out["loss_images"] = diff[:, frames:].mean()
        return out

    # -- sampling -----------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, generator: Optional[torch.Generator] = None, batch_size: Optional[int] = None,
               sampler: Optional[str] = None, steps: Optional[int] = None, eta: Optional[float] = None,
               labels: Optional[Union[int, Sequence[int], torch.Tensor]] = None,
               guidance_scale: Optional[float] = None, **unknown) -> torch.Tensor:
        """``n`` clips, uint8 ``[n, T, C, H, W]``.

        ``sampler='ddim'`` (default; ``steps`` respaced steps, ``eta`` 0 = deterministic), ``'ddpm'``
        (ancestral, "fixed small" variance; with fewer steps than ``num_timesteps`` it runs on the respaced
        chain, which is DDIM with eta = 1, Song et al. Sec. 4.1) or ``'dpmpp_2m'`` (DPM-Solver++(2M), Lu et
        al. 2022 Algorithm 2, deterministic, on the same respaced timesteps; one network call per step). Class-conditional models use ``labels``
        (one class, one per clip, or None = uniformly drawn) with classifier-free guidance ``guidance_scale``.

        Randomness: from ``generator`` come the labels (if drawn) and one seed per clip; each clip's
        initial noise and per-step noise come from its own seed, so the clips do not depend on
        ``batch_size``, and the same generator state gives the same bytes.
        """
        if unknown:
            name = sorted(unknown)[0]
            raise UsageError(did_you_mean("VDM sampling control", name, SAMPLE_CONTROLS))
        from vfbench.generators.vdm_long import denoise_window, make_plan, sample_in_batches

        plan = make_plan(self, n, generator, batch_size=batch_size, sampler=sampler, steps=steps, eta=eta,
                         labels=labels, guidance_scale=guidance_scale)
        return sample_in_batches(self, plan, lambda noise, lab: unit_to_uint8(denoise_window(self, plan, noise, lab)))

    @torch.no_grad()
    def sample_long(self, n: int, length: int, generator: Optional[torch.Generator] = None, *,
                    overlap: Optional[int] = None, guidance_weight: float = RECONSTRUCTION_WEIGHT,
                    **controls) -> torch.Tensor:
        """``n`` clips of ``length`` frames, uint8 ``[n, length, C, H, W]``, by reconstruction-guided extension
        (Ho et al. 2022, Sec. 3.1, Eq. 7): windows of ``frames`` frames, each new one sharing ``overlap``
        (default ``frames // 2``) known frames with the video so far, guided with weight ``guidance_weight``
        (w_r; 0 = plain replacement). Other controls as in ``sample``; the first ``frames`` frames equal
        ``sample(n, generator)``. Algorithm, default weight and randomness: ``vfbench.generators.vdm_long``."""
        from vfbench.generators.vdm_long import sample_long_clips

        return sample_long_clips(self, n, length, generator, overlap=overlap, guidance_weight=guidance_weight,
                                 **controls)


__all__ = ["VDM", "VDMConfig", "LOSSES", "SAMPLERS", "RECONSTRUCTION_WEIGHT"]
