"""VIDM, the content/motion baseline (Mei & Patel, "VIDM: Video Implicit Diffusion Models", AAAI 2023).

Two diffusion models trained jointly (spec/baselines.md, "VIDM-style content/motion model"):

* the **content generator** ``eps_theta(x_t, c, t)`` is an image DPM on single frames with a learnable
  constant ``c`` concatenated to the noisy input ("sampling space truncation", paper Eq. 3);
* the **motion generator** ``rho_phi`` makes frame n from its noisy latent, conditioned on the implicit
  motion code ``z = v(x(0), x(n-1))`` (Eq. 8-9), with Positional Group Normalization (Eq. 5-6) in
  every residual block and the adaptive feature residual of a first-frame encoder
  (networks in ``vfbench.generators.vidm_nets``);
* both are trained with the Charbonnier "robustness penalty" (Eq. 4, Eq. 7) instead of dropout.

Training uses teacher forcing: for each clip, one random target frame n in 1..T-1, its ground-truth
previous frame x(n-1) and the clip's first frame x(0). Sampling is autoregressive: the content model
makes x(0) by a full reverse diffusion, then each later frame is a full reverse diffusion of the motion
model, so the cost is ``steps + (N - 1) * steps`` network evaluations for N frames
(``network_evaluations``); the paper names this as its main limitation.

The four Table-3 ablations are config switches: ``truncation``, ``robustness_penalty`` (False: plain
MSE), ``posgn`` (False: AdaGN from a time embedding) and ``implicit_condition`` (False: no motion code).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Dict, List, Literal, Optional, Tuple

import torch

from vfbench.clips import check_clips, uint8_to_unit, unit_to_uint8
from vfbench.diffusion import (DPMSolverPP2M, DiffusionSchedule, check_sampler, ddim_step, ddpm_step,
                               q_sample, resolve_eta, schedule_names, timestep_pairs)
from vfbench.errors import UsageError, check_range, did_you_mean
from vfbench.generator import Generator, make_generator
from vfbench.generators.vidm_nets import ContentDenoiser, MotionDenoiser
from vfbench.prediction import check_prediction, output_to_eps, prediction_target
from vfbench.registry import GENERATORS


@dataclass(frozen=True)
class VIDMConfig:
    """Every setting of a VIDM model. Widths are per U-Net level (each level halves the frame size)."""

    frames: int = 16                      # clip length for training and the default sample length
    size: int = 64                        # square frame size
    channels: int = 3
    num_classes: int = 0                  # > 0: class-conditional (label -1 = unlabelled)
    max_frames: Optional[int] = None      # longest sample and PosGN's frame normaliser; None -> frames
    content_widths: Tuple[int, ...] = (64, 128, 128)
    motion_widths: Tuple[int, ...] = (64, 128, 128)
    num_res_blocks: int = 1
    attention: bool = True                # self-attention in the middle (lowest-resolution) block
    groups: int = 32                      # GroupNorm groups (capped to divide each width)
    posgn_hidden: int = 64                # PosGN MLP width
    posgn_omega0: float = 30.0            # SIREN frequency of the sine after PosGN's first layer
    code_channels: int = 8                # channels of the implicit motion code z
    code_width: int = 32                  # conv width of the motion-code net
    code_levels: int = 3                  # pyramid levels of the motion-code net
    schedule: str = "cosine"
    num_timesteps: int = 1000
    sampler: Literal["ddim", "ddpm", "dpmpp_2m"] = "ddim"   # the paper sampled with DDPM (ancestral)
    sampling_steps: int = 50
    ddim_eta: float = 0.0
    charbonnier_eta: float = 1e-8         # eta of Eq. 4 (the paper's value)
    content_frames: Literal["random", "first"] = "random"  # content net trains on random frames (paper)
    truncation: bool = True               # Table 3: sampling space truncation
    # Table 3: Charbonnier (True, the paper's) or MSE. Default MSE: with x0-prediction the Charbonnier penalty
    # (a smooth L1) learns the per-pixel median, which on `shapes` is the background: the shape is erased
    # (README "Generators that learn"). The `paper` recipe and the Table 3 ablation keep Charbonnier.
    robustness_penalty: bool = False
    posgn: bool = True                    # Table 3: Positional Group Normalization
    implicit_condition: bool = True       # Table 3: implicit motion condition
    prediction: Literal["eps", "v", "x0"] = "x0"  # what both denoisers predict (vfbench.prediction); the paper: eps

    @property
    def frame_capacity(self) -> int:
        return self.max_frames if self.max_frames is not None else self.frames


SAMPLE_CONTROLS = ("batch_size", "frames", "sampler", "steps", "eta", "labels")

_PRESETS: Dict[str, Dict[str, Any]] = {
    "tiny": dict(content_widths=(8, 16), motion_widths=(8, 16), num_res_blocks=1, attention=False, groups=4,
                 posgn_hidden=16, code_channels=4, code_width=8, code_levels=2, sampling_steps=10),
    "small": dict(content_widths=(32, 64, 64), motion_widths=(32, 64, 64), num_res_blocks=1, attention=True,
                  groups=8, posgn_hidden=32, code_channels=8, code_width=16, code_levels=3, sampling_steps=50),
    # The paper's nets follow ADM / PixelCNN++ with attention at 16x16 and DDPM sampling.
    "paper": dict(content_widths=(128, 256, 256, 512), motion_widths=(128, 256, 256, 512), num_res_blocks=2,
                  attention=True, groups=32, posgn_hidden=128, code_channels=16, code_width=32, code_levels=4,
                  sampler="ddpm", sampling_steps=1000),
}


def charbonnier_loss(pred: torch.Tensor, target: torch.Tensor, eta: float = 1e-8) -> torch.Tensor:
    """The robustness penalty, paper Eq. 4: ``mean(sqrt((pred - target)^2 + eta^2))``.

    A smooth L1: it tends to the mean absolute error as eta -> 0 and stays differentiable at zero error.
    Computed in float32 at least, so eta^2 = 1e-16 is not lost.
    """
    diff = pred.float() - target.float()
    return torch.sqrt(diff * diff + float(eta) ** 2).mean()


def _fit_levels(widths: Tuple[int, ...], size: int, min_size: int = 4) -> Tuple[int, ...]:
    """Drop the deepest levels a frame of ``size`` cannot be halved into (tiny frames)."""
    levels = len(widths)
    while levels > 1 and (size % 2 ** (levels - 1) or size // 2 ** (levels - 1) < min_size):
        levels -= 1
    return tuple(widths[:levels])


def validate_config(cfg: VIDMConfig) -> None:
    """Raise a UsageError naming the option and the fix for any inconsistent setting."""
    check_range("frames", cfg.frames, 2)
    check_prediction(cfg.prediction, "vidm.prediction")
    check_range("size", cfg.size, 4)
    check_range("channels", cfg.channels, 1)
    check_range("num_classes", cfg.num_classes, 0)
    if cfg.max_frames is not None and cfg.max_frames < cfg.frames:
        raise UsageError(f"max_frames ({cfg.max_frames}) must be at least frames ({cfg.frames}); raise max_frames or leave it unset")
    for name in ("content_widths", "motion_widths"):
        widths = getattr(cfg, name)
        if not widths or any(w < 1 for w in widths):
            raise UsageError(f"{name} must be a non-empty list of positive channel counts, got {widths!r}")
        down = 2 ** (len(widths) - 1)
        if cfg.size % down:
            raise UsageError(f"size {cfg.size} must be divisible by {down} for the {len(widths)} levels of {name};"
                             f" choose a size that is a multiple of {down} or fewer levels")
    for name in ("num_res_blocks", "groups", "posgn_hidden", "code_channels", "code_width", "code_levels",
                 "num_timesteps", "sampling_steps"):
        check_range(name, getattr(cfg, name), 1)
    if cfg.size // 2 ** (cfg.code_levels - 1) < 1:
        raise UsageError(f"code_levels {cfg.code_levels} halves a {cfg.size}-pixel frame below one pixel; lower code_levels")
    if cfg.sampling_steps > cfg.num_timesteps:
        raise UsageError(f"sampling_steps ({cfg.sampling_steps}) cannot exceed num_timesteps ({cfg.num_timesteps}); lower sampling_steps")
    if cfg.schedule not in schedule_names():
        raise UsageError(f"schedule must be one of {', '.join(schedule_names())}, got {cfg.schedule!r}")
    check_range("ddim_eta", cfg.ddim_eta, 0.0, 1.0)
    check_sampler(cfg.sampler)
    check_range("charbonnier_eta", cfg.charbonnier_eta, 0.0, lo_open=True)
    check_range("posgn_omega0", cfg.posgn_omega0, 0.0, lo_open=True)


@GENERATORS.register("vidm", description="content DPM + autoregressive motion DPM with PosGN (Mei & Patel 2023)")
class VIDM(Generator):
    """Video Implicit Diffusion Model: a content DPM for the first frame and an autoregressive motion DPM.

    Sampling cost grows with N x steps: ``network_evaluations(frames, steps)`` = steps for the content
    frame plus steps for each of the N - 1 motion frames (the motion code is computed once per frame).
    """

    name = "vidm"
    Config = VIDMConfig
    LEGACY_DEFAULTS = {"prediction": "eps"}

    def __init__(self, config: VIDMConfig):
        super().__init__(config)
        validate_config(config)
        c = config
        self.schedule = DiffusionSchedule.named(c.schedule, c.num_timesteps)
        self.content = ContentDenoiser(c.channels, c.size, c.content_widths, c.num_res_blocks, c.attention, c.groups,
                                       truncation=c.truncation, num_classes=c.num_classes)
        self.motion = MotionDenoiser(c.channels, c.motion_widths, c.num_res_blocks, c.attention, c.groups,
                                     posgn=c.posgn, implicit_condition=c.implicit_condition,
                                     posgn_hidden=c.posgn_hidden, posgn_omega0=c.posgn_omega0,
                                     code_channels=c.code_channels, code_width=c.code_width,
                                     code_levels=c.code_levels, max_frames=c.frame_capacity,
                                     num_timesteps=c.num_timesteps, num_classes=c.num_classes)

    @classmethod
    def config_for(cls, preset: str, frames: int, size: int, num_classes: int = 0) -> VIDMConfig:
        """A preset (``tiny``: 8x8 / 4-frame CPU tests, ``small``: CPU demos at 32x32, ``paper``: the
        paper's scale) adapted to the clip shape: levels a small frame cannot hold are dropped."""
        if preset not in _PRESETS:
            raise UsageError(did_you_mean("vidm preset", preset, _PRESETS))
        p = dict(_PRESETS[preset])
        p["content_widths"] = _fit_levels(p["content_widths"], size)
        p["motion_widths"] = _fit_levels(p["motion_widths"], size)
        code_levels = p["code_levels"]
        while code_levels > 1 and size // 2 ** (code_levels - 1) < 2:
            code_levels -= 1
        p["code_levels"] = code_levels
        return VIDMConfig(frames=frames, size=size, num_classes=num_classes, **p)

    # -- helpers --------------------------------------------------------------------------------
    def denoising_penalty(self, eps_hat: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Eq. 4 / Eq. 7 (Charbonnier) or, in the "w/o robustness penalty" ablation, DDPM's plain MSE."""
        if self.config.robustness_penalty:
            return charbonnier_loss(eps_hat, eps, self.config.charbonnier_eta)
        return (eps_hat.float() - eps.float()).pow(2).mean()

    def _vidm_labels(self, labels, batch: int, device) -> Optional[torch.Tensor]:
        """Class labels of a training batch (-1 = unlabelled, its own learned embedding), or None."""
        if self.config.num_classes == 0 or labels is None:
            return None
        labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        if labels.shape[0] != batch:
            raise UsageError(f"batch['label'] has {labels.shape[0]} entries but there are {batch} clips; pass one label per clip")
        if bool((labels >= self.config.num_classes).any()) or bool((labels < -1).any()):
            raise UsageError(f"batch['label'] must lie in [-1, {self.config.num_classes - 1}] (-1 = unlabelled),"
                             f" got values in [{int(labels.min())}, {int(labels.max())}]; check num_classes")
        return labels.to(device)

    @staticmethod
    def _randn(shape, generator: torch.Generator, device) -> torch.Tensor:
        # drawn on the generator's device, so a run's noise does not depend on the device it trains on
        return torch.randn(shape, generator=generator, device=generator.device).to(device)

    @staticmethod
    def _randint(high: int, shape, generator: torch.Generator, device) -> torch.Tensor:
        return torch.randint(0, high, shape, generator=generator, device=generator.device).to(device)

    def network_evaluations(self, frames: Optional[int] = None, steps: Optional[int] = None,
                            sampler: Optional[str] = None) -> int:
        """Denoiser calls to sample one clip: ``steps`` (content) + ``(frames - 1) * steps`` (motion)."""
        frames = self.config.frames if frames is None else frames
        steps = self._resolve_steps(sampler or self.config.sampler, steps)
        return steps * frames

    def _resolve_steps(self, sampler: str, steps: Optional[int]) -> int:
        check_sampler(sampler)
        steps = self.config.sampling_steps if steps is None else steps
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= self.config.num_timesteps:
            raise UsageError(f"steps must be an integer in [1, {self.config.num_timesteps}], got {steps!r}")
        return steps

    # -- training ---------------------------------------------------------------------------------
    def loss(self, batch: Dict[str, torch.Tensor], generator: Optional[torch.Generator] = None) -> Dict[str, Any]:
        """Joint objective: content Charbonnier loss (Eq. 4) + motion Charbonnier loss (Eq. 9), one t per sample.

        Content: a frame of each clip (random by default, as in the paper; ``content_frames="first"``
        for x(0)). Motion, with teacher forcing: target frame n ~ U{1..T-1}, conditioned on the
        ground-truth x(n-1) through the motion code, on x(0) through the feature residual and on n
        through PosGN. ``generator`` makes the draws reproducible; without one the noise comes from
        torch's default generator (seeded by the trainer).
        """
        cfg = self.config
        video = batch["video"]
        check_clips(video, "batch['video']", min_frames=2, channels=cfg.channels)
        b, num_frames = video.shape[:2]
        self._check_frame_size(video)
        if num_frames > cfg.frame_capacity:
            raise UsageError(f"clips have {num_frames} frames but max_frames is {cfg.frame_capacity}; raise max_frames to at least {num_frames}")
        dev = self.device
        x = uint8_to_unit(video.to(dev))
        labels = self._vidm_labels(batch.get("label"), b, dev)
        rows = torch.arange(b, device=dev)
        # the trainer's contract is loss(batch): without a generator, torch's default one (seeded by the trainer)
        g = generator if generator is not None else torch.default_generator

        content_loss = self._content_loss(x, labels, g)

        # motion generator with teacher forcing: (x(0), ground-truth x(n-1), n) -> x(n)
        n = 1 + self._randint(num_frames - 1, (b,), g, dev)
        x_first, x_prev, x_target = x[:, 0], x[rows, n - 1], x[rows, n]
        t_m = self._randint(cfg.num_timesteps, (b,), g, dev)
        eps_m = self._randn(x_target.shape, g, dev)
        z_m = q_sample(self.schedule, x_target, t_m, eps_m)
        code = self.motion.motion_code(x_first, x_prev)
        target_m = prediction_target(self.schedule, x_target, eps_m, t_m, cfg.prediction)
        motion_loss = self.denoising_penalty(self.motion(z_m, t_m, n, x_first, code, labels), target_m)

        return {"loss": content_loss + motion_loss,
                "content_loss": content_loss.detach(), "motion_loss": motion_loss.detach()}

    def _check_frame_size(self, video: torch.Tensor) -> None:
        h, w = video.shape[-2:]
        if (h, w) != (self.config.size, self.config.size):
            raise UsageError(f"clips are {h}x{w} but this VIDM was built for size {self.config.size}; build it with"
                             f" size={h} or resize the clips")

    def _content_loss(self, x: torch.Tensor, labels: Optional[torch.Tensor], g: torch.Generator) -> torch.Tensor:
        """The content generator's term, eps_theta(x_t, c, t) on one frame per clip (Eq. 4)."""
        cfg, dev = self.config, self.device
        b, num_frames = x.shape[:2]
        k = (self._randint(num_frames, (b,), g, dev) if cfg.content_frames == "random"
             else torch.zeros(b, dtype=torch.long, device=dev))
        x_content = x[torch.arange(b, device=dev), k]
        t_c = self._randint(cfg.num_timesteps, (b,), g, dev)
        eps_c = self._randn(x_content.shape, g, dev)
        z_c = q_sample(self.schedule, x_content, t_c, eps_c)
        target_c = prediction_target(self.schedule, x_content, eps_c, t_c, cfg.prediction)
        return self.denoising_penalty(self.content(z_c, t_c, labels), target_c)

    # -- pretraining the content generator as an image DPM (as VideoFusion's base, spec Sec. 4) ---------
    @property
    def base(self) -> ContentDenoiser:
        """The image DPM of VIDM, its content generator: what ``pretrain_base`` trains on single frames."""
        return self.content

    def pretrain_loss(self, batch: Dict[str, torch.Tensor], generator: Optional[torch.Generator] = None) -> Dict[str, Any]:
        """The content term of ``loss`` alone: the content generator trained as an image DPM on frames of
        the training clips, before the joint training (the pretraining VideoFusion's base gets, so that a
        comparison gives both the same image pretraining; VIDM's paper trains the two jointly from scratch)."""
        cfg = self.config
        video = batch["video"]
        check_clips(video, "batch['video']", min_frames=1, channels=cfg.channels)
        self._check_frame_size(video)
        g = generator if generator is not None else torch.default_generator
        x = uint8_to_unit(video.to(self.device))
        return {"loss": self._content_loss(x, self._vidm_labels(batch.get("label"), x.shape[0], self.device), g)}

    def load_base_state(self, state_dict: Dict[str, torch.Tensor]) -> None:
        """Load a pretrained content generator (strict): its own state dict or a whole VIDM one."""
        from vfbench.checkpoint import check_state_fits, submodule_state

        state = submodule_state(state_dict, "content.")
        check_state_fits(self.content.state_dict(), state, "the checkpoint does not fit this VIDM's content generator")
        self.content.load_state_dict(state, strict=True)

    def param_groups(self, lr: float) -> List[Dict[str, Any]]:
        """Two named groups: ``content`` (eps_theta and the truncation constant) and ``motion``
        (rho_phi, the first-frame encoder and the motion-code net, trained jointly)."""
        return [
            {"params": [p for p in self.content.parameters() if p.requires_grad], "lr": lr, "name": "content"},
            {"params": [p for p in self.motion.parameters() if p.requires_grad], "lr": lr, "name": "motion"},
        ]

    # -- sampling ---------------------------------------------------------------------------------
    def _reverse_diffusion(self, net_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                           noise_fn: Callable[[], torch.Tensor], sampler: str, steps: int, eta: float) -> torch.Tensor:
        """A full reverse diffusion from N(0, I) to a frame in [-1, 1]; ``net_fn(z, t)`` is a denoiser's raw output
        (eps, v or x0 by ``config.prediction``), ``noise_fn()`` draws one [b, C, H, W]
        standard normal tensor (the start, then each stochastic step's noise).

        ``ddpm`` with all ``num_timesteps`` steps is the ancestral sampler of Eq. 3; ``ddpm`` with fewer
        steps is its respaced form (DDIM with eta = 1, Song et al. 2021 Eq. 16); ``ddim`` uses ``eta``;
        ``dpmpp_2m`` is DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2) on the same respaced timesteps.
        """
        cfg, dev = self.config, self.device

        def eps_fn(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return output_to_eps(self.schedule, z, t, net_fn(z, t), cfg.prediction)

        z = noise_fn()
        b = z.shape[0]
        if sampler == "ddpm" and steps == cfg.num_timesteps:
            for t in reversed(range(cfg.num_timesteps)):
                eps = eps_fn(z, torch.full((b,), t, dtype=torch.long, device=dev))
                z = ddpm_step(self.schedule, z, eps, t, noise=noise_fn() if t > 0 else None)
            return z
        if sampler == "dpmpp_2m":
            pairs = timestep_pairs(cfg.num_timesteps, steps)
            solver = DPMSolverPP2M(self.schedule, pairs=pairs)
            for t, t_prev in pairs:
                z = solver.step(z, eps_fn(z, torch.full((b,), t, dtype=torch.long, device=dev)), t, t_prev)
            return z
        if sampler == "ddpm":
            eta = 1.0
        for t, t_prev in timestep_pairs(cfg.num_timesteps, steps):
            eps = eps_fn(z, torch.full((b,), t, dtype=torch.long, device=dev))
            z = ddim_step(self.schedule, z, eps, t, t_prev, eta=eta, noise=noise_fn() if eta > 0 else None)
        return z

    @staticmethod
    def _as_frame(x: torch.Tensor) -> torch.Tensor:
        """Quantise a generated frame through uint8, so the motion net conditions on exactly the kind of
        frame it saw in training (real clips are uint8) and on exactly the bytes that are returned."""
        return uint8_to_unit(unit_to_uint8(x))

    @torch.no_grad()
    def sample(self, n: int, generator: Optional[torch.Generator] = None, batch_size: Optional[int] = None,
               frames: Optional[int] = None, sampler: Optional[str] = None, steps: Optional[int] = None,
               eta: Optional[float] = None, labels=None, **unknown) -> torch.Tensor:
        """``n`` clips, uint8 ``[n, frames, C, H, W]`` on the CPU, drawn autoregressively.

        The content generator makes x(0) by a full reverse diffusion; then for n = 1..frames-1 the motion
        code z = v(x(0), x(n-1)) is computed once and a full reverse diffusion of the motion generator makes
        x(n). The cost is ``frames * steps`` denoiser calls per clip: it grows with N x steps.

        Controls: ``frames`` (any length up to ``max_frames``), ``sampler`` (``ddim``, ``ddpm`` or ``dpmpp_2m``), ``steps``,
        ``eta`` (DDIM), ``batch_size``, ``labels`` (class-conditional models: one class, one per clip, or
        None = uniformly drawn). Randomness: from ``generator`` come the labels (if drawn) and one seed per
        clip; every noise tensor of a clip comes from its own seed, so clips do not depend on
        ``batch_size`` and the same generator state gives the same bytes.
        """
        cfg = self.config
        if unknown:
            raise UsageError(did_you_mean("VIDM sampling control", sorted(unknown)[0], SAMPLE_CONTROLS))
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise UsageError(f"the number of clips to sample must be a positive integer, got {n!r}")
        frames = cfg.frames if frames is None else frames
        if isinstance(frames, bool) or not isinstance(frames, int) or not 1 <= frames <= cfg.frame_capacity:
            raise UsageError(f"frames must be an integer in [1, {cfg.frame_capacity}] (max_frames), got {frames!r};"
                             f" build the model with a larger max_frames for longer clips")
        sampler = cfg.sampler if sampler is None else sampler
        steps = self._resolve_steps(sampler, steps)
        eta = resolve_eta(sampler, eta, cfg.ddim_eta)
        batch_size = min(n, 32) if batch_size is None else batch_size
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise UsageError(f"batch_size must be a positive integer, got {batch_size!r}")
        g = make_generator(generator=generator)
        class_labels = self._sample_labels(n, labels, g)
        clip_seeds = torch.randint(0, 2 ** 62, (n,), generator=g, device=g.device).tolist()

        dev = self.device
        frame_shape = (cfg.channels, cfg.size, cfg.size)
        chunks = []
        for start in range(0, n, batch_size):
            seeds = clip_seeds[start:start + batch_size]
            clip_gens = [torch.Generator(device=g.device).manual_seed(s) for s in seeds]

            def noise_fn() -> torch.Tensor:
                return torch.stack([torch.randn(frame_shape, generator=cg, device=cg.device) for cg in clip_gens]).to(dev)

            lab = None if class_labels is None else class_labels[start:start + batch_size].to(dev)
            b = len(seeds)
            x_first = self._as_frame(self._reverse_diffusion(
                lambda z, t: self.content(z, t, lab), noise_fn, sampler, steps, eta))
            clip = [x_first]
            for k in range(1, frames):
                code = self.motion.motion_code(x_first, clip[-1])  # once per frame, reused at every step
                index = torch.full((b,), k, dtype=torch.long, device=dev)
                clip.append(self._as_frame(self._reverse_diffusion(
                    lambda z, t: self.motion(z, t, index, x_first, code, lab), noise_fn, sampler, steps, eta)))
            chunks.append(unit_to_uint8(torch.stack(clip, dim=1)).cpu())
        return torch.cat(chunks, dim=0)

    @torch.no_grad()
    def sample_long(self, n: int, length: int, generator: Optional[torch.Generator] = None, **controls) -> torch.Tensor:
        """``n`` clips of ``length`` frames, uint8 ``[n, length, C, H, W]``: VIDM is autoregressive, so this is
        ``sample(n, generator, frames=length, **controls)`` (lengths up to ``max_frames``)."""
        if "frames" in controls:
            raise UsageError("sample_long takes the clip length as `length`; drop the `frames` control")
        return self.sample(n, generator, frames=length, **controls)

    def ablation(self, **switches: bool) -> "VIDM":
        """A fresh model with some Table-3 switches flipped, e.g. ``model.ablation(posgn=False)``."""
        allowed = {"truncation", "robustness_penalty", "posgn", "implicit_condition"}
        unknown = sorted(set(switches) - allowed)
        if unknown:
            raise UsageError(f"unknown ablation switch {unknown[0]!r}; use one of {', '.join(sorted(allowed))}")
        return type(self)(replace(self.config, **switches))


__all__ = ["VIDM", "VIDMConfig", "charbonnier_loss", "validate_config"]
