"""The generator contract (DESIGN.md "Core contracts").

A generator is a ``torch.nn.Module`` with a frozen, serialisable dataclass config (``Config``):

* ``loss(batch) -> dict``: the training objective; ``batch["video"]`` is uint8 ``[B, T, C, H, W]``
  plus optional integer labels (``label``, ``content``, ``motion``; -1 where absent); returns a dict
  with a scalar ``loss`` and any logged terms (floats or 0-d tensors).
* ``sample(n, generator=..., **controls) -> uint8 [n, T, C, H, W]``: same ``torch.Generator`` state,
  same bytes.
* ``param_groups(lr)``: optimiser groups (VideoFusion's smaller base learning rate).
* ``sample_long(n, length, generator=..., **controls) -> uint8 [n, length, C, H, W]``: clips longer than
  the training length; the default raises ``UsageError`` (VideoFusion, VDM and VIDM implement it).

Everything else (optimiser, EMA, precision, DDP, checkpoints, logging) is the shared trainer's.
Checkpoints hold only tensors and plain data, loaded with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Dict, List, Mapping, Optional

import torch
from torch import nn

from vfbench.config import from_dict, to_dict
from vfbench.options import DEFAULT_MIN_FRAMES, DEFAULT_MIN_FRAMES_REASON


class Generator(nn.Module):
    name: ClassVar[str] = "generator"
    Config: ClassVar[type]
    # Config fields added after runs already existed, with the value those runs were trained with. A saved
    # config that lacks one of them is loaded with this value, not with the new default: an eps-trained
    # checkpoint read as v-prediction would sample noise.
    LEGACY_DEFAULTS: ClassVar[Dict[str, Any]] = {}
    # The fewest frames a clip may have for this method, and why (``vfbench.options.check_frames``: every
    # command refuses fewer before building anything). An image generator plug-in would set 1.
    min_frames: ClassVar[int] = DEFAULT_MIN_FRAMES
    min_frames_reason: ClassVar[str] = DEFAULT_MIN_FRAMES_REASON

    def __init__(self, config):
        super().__init__()
        if not dataclasses.is_dataclass(config):
            raise TypeError(f"{type(self).__name__} needs a {self.Config.__name__} config")
        self.config = config

    # -- contract -------------------------------------------------------------------------
    def loss(self, batch: Dict[str, torch.Tensor]) -> Dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, n: int, *, generator: Optional[torch.Generator] = None, **controls) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def sample_long(self, n: int, length: int, generator: Optional[torch.Generator] = None, **controls) -> torch.Tensor:
        """uint8 clips ``[n, length, C, H, W]`` longer than the training length, for generators that can
        extend videos (VideoFusion, VDM, VIDM override this); the default refuses clearly."""
        from vfbench.errors import UsageError

        name = self.name if self.name != Generator.name else type(self).__name__
        frames = getattr(self.config, "frames", None)
        what = f"{frames}-frame clips" if isinstance(frames, int) else "clips of its training length"
        raise UsageError(f"{name} cannot sample clips longer than its training length; sample {what} without"
                         f" --length, or use a generator that extends videos (videofusion, vdm or vidm)")

    def param_groups(self, lr: float) -> List[Dict[str, Any]]:
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr, "name": "all"}]

    # -- shared batch handling (configs with frames, size, channels, num_classes, class_dropout) -----
    def _clips(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """``batch["video"]`` checked against the config's clip shape, as float [-1, 1] on the model's device."""
        from vfbench.clips import check_clips, uint8_to_unit
        from vfbench.errors import UsageError

        if "video" not in batch:
            raise UsageError(f"a {self.name} batch needs a 'video' entry: uint8 clips [B, T, C, H, W]")
        video = check_clips(batch["video"], "batch['video']", channels=self.config.channels)
        _, t, _, h, w = video.shape
        c = self.config
        if t != c.frames or h != c.size or w != c.size:
            raise UsageError(f"batch clips are {t} x {h} x {w} but this {self.name} was built for {c.frames} x {c.size} x "
                             f"{c.size}; set --frames/--size to match the dataset")
        return uint8_to_unit(video.to(self.device))

    def _training_labels(self, batch: Mapping[str, Any], size: int, generator: torch.Generator) -> Optional[torch.Tensor]:
        """Class labels (CPU) with classifier-free-guidance dropout to the null label ``num_classes``."""
        from vfbench.errors import UsageError

        k = self.config.num_classes
        if k == 0:
            return None
        labels = batch.get("label")
        if labels is None:
            raise UsageError(f"this {self.name} is class-conditional (num_classes={k}) but the batch has no 'label'; "
                             f"use a labelled dataset or num_classes=0")
        labels = torch.as_tensor(labels).long().view(-1).cpu()
        if labels.numel() != size or int(labels.min()) < 0 or int(labels.max()) >= k:
            raise UsageError(f"batch['label'] must hold {size} class labels in [0, {k - 1}], got {labels.tolist()[:8]}; "
                             f"check the dataset's num_classes")
        drop = torch.rand(size, generator=generator, device=generator.device).cpu() < self.config.class_dropout
        return torch.where(drop, torch.full_like(labels, k), labels)

    def _sample_labels(self, n: int, labels, generator: torch.Generator) -> Optional[torch.Tensor]:
        """The classes to sample (CPU): the given ones (one or ``n``), or uniform draws when none are given."""
        from vfbench.errors import UsageError

        k = self.config.num_classes
        if k == 0:
            if labels is not None:
                raise UsageError(f"labels were given but this {self.name} is unconditional; train it with"
                                 " num_classes > 0 or drop the labels")
            return None
        if labels is None:  # unconditional benchmark samples: classes drawn uniformly
            return torch.randint(0, k, (n,), generator=generator, device=generator.device).cpu()
        labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1).cpu()
        if labels.numel() == 1:
            labels = labels.expand(n).clone()
        if labels.numel() != n or int(labels.min()) < 0 or int(labels.max()) >= k:
            raise UsageError(f"labels must be one class or {n} classes in [0, {k - 1}], got {labels.tolist()[:8]}")
        return labels

    # -- serialisation --------------------------------------------------------------------
    def config_dict(self) -> Dict[str, Any]:
        return to_dict(self.config)

    @classmethod
    def with_legacy_defaults(cls, data: Dict[str, Any]) -> Dict[str, Any]:
        """A saved config dict with the fields it predates filled in by the values that reproduce how it was
        made (``LEGACY_DEFAULTS``), so that it compares equal to the same config saved by this version. Nested
        configs (a U-Net's) are filled by their own class's ``LEGACY_DEFAULTS``."""
        filled = {**{k: v for k, v in cls.LEGACY_DEFAULTS.items() if k not in data}, **data}
        return _fill_nested_legacy(cls.Config, filled)

    @classmethod
    def from_config_dict(cls, data: Dict[str, Any]) -> "Generator":
        return cls(from_dict(cls.Config, cls.with_legacy_defaults(data), where=f"{cls.name} config"))

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")


def _fill_nested_legacy(config_cls: Any, data: Dict[str, Any]) -> Dict[str, Any]:
    import typing

    if not dataclasses.is_dataclass(config_cls):
        return data
    out = dict(data)
    for name, tp in typing.get_type_hints(config_cls).items():
        legacy = getattr(tp, "LEGACY_DEFAULTS", None) if dataclasses.is_dataclass(tp) else None
        if legacy and isinstance(out.get(name), dict):
            out[name] = {**{k: v for k, v in legacy.items() if k not in out[name]}, **out[name]}
    return out


def make_generator(seed: Optional[int] = None, generator: Optional[torch.Generator] = None,
                   device: str | torch.device = "cpu") -> torch.Generator:
    """Explicit randomness: a torch.Generator from a seed (or the one given)."""
    if generator is not None:
        return generator
    g = torch.Generator(device=device)
    g.manual_seed(0 if seed is None else int(seed))
    return g
