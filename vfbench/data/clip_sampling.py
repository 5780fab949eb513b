"""Which frames of a video make up a clip: a named, recorded object (DESIGN.md "Datasets").

A clip is ``frames`` frames taken every ``stride`` frames (16 at stride 4 for TaiChi-HD, stride 1
otherwise), so it spans ``(frames - 1) * stride + 1`` source frames. The window's first frame is
chosen by ``mode``:

* ``"random"``: uniform over every valid start, drawn from ``numpy.random.default_rng([seed,
  index, epoch])`` -- the same (seed, index, epoch) always gives the same window, on any machine
  and in any DataLoader worker, and a new epoch gives a new window;
* ``"first"``: the first frames of the video;
* ``"center"``: the window centred in the video (ties towards the start).

``describe()`` is what a result records, so a reference statistic cached for one clip sampling is
never reused for another.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import List, Literal

import numpy as np

from vfbench.errors import DataError, UsageError

SamplingMode = Literal["random", "first", "center"]
MODES = ("random", "first", "center")


@dataclass(frozen=True)
class ClipSampling:
    frames: int = 16
    stride: int = 1
    mode: SamplingMode = "random"
    seed: int = 0

    def __post_init__(self):
        if not isinstance(self.frames, int) or self.frames < 1:
            raise UsageError(f"clip frames must be a positive integer, got {self.frames!r}")
        if not isinstance(self.stride, int) or self.stride < 1:
            raise UsageError(f"clip stride must be a positive integer, got {self.stride!r}")
        if self.mode not in MODES:
            raise UsageError(f"clip sampling mode must be one of {', '.join(MODES)}, got {self.mode!r}")

    @property
    def span(self) -> int:
        """Number of source frames a clip covers, first to last inclusive."""
        return (self.frames - 1) * self.stride + 1

    def fits(self, num_frames: int) -> bool:
        return num_frames >= self.span

    def start(self, num_frames: int, index: int, epoch: int = 0, source: str = "video") -> int:
        """First source frame of the clip of item ``index`` in a video of ``num_frames`` frames."""
        if not self.fits(num_frames):
            raise DataError(f"{source} has {num_frames} frames but a clip of {self.frames} frames at stride"
                            f" {self.stride} needs {self.span}; use fewer --frames, a smaller stride, or"
                            " remove the file")
        last_start = num_frames - self.span
        if self.mode == "first" or last_start == 0:
            return 0
        if self.mode == "center":
            return last_start // 2
        rng = np.random.default_rng([self.seed, index, epoch])
        return int(rng.integers(0, last_start + 1))

    def indices(self, num_frames: int, index: int, epoch: int = 0, source: str = "video") -> List[int]:
        """Source frame indices of the clip (``frames`` of them, ``stride`` apart)."""
        first = self.start(num_frames, index, epoch, source)
        return list(range(first, first + self.span, self.stride))

    def describe(self) -> dict:
        return {"frames": self.frames, "stride": self.stride, "mode": self.mode, "seed": self.seed}

    def to_dict(self) -> dict:
        return asdict(self)
