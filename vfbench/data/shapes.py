"""``shapes``: the built-in procedural dataset with two independent labelled factors (DESIGN.md "Datasets").

* **content** = shape x colour x background texture
  (5 x 6 x 4 = 120 classes; ``content = (shape * 6 + colour) * 4 + texture``);
* **motion** = one of 8 trajectory families: translation right / left / up / down, orbit
  clockwise / counter-clockwise (as seen on screen), bounce off the borders, zoom (scale pulse).

``label`` is the motion family by default (``label_factor="content"`` switches it), so
class-conditional training and the built-in classifier see motion classes. It plays the role of
Weizmann (content x motion) and of a quick sanity dataset.

Determinism: item ``i`` of split ``s`` draws its factors and every nuisance parameter (size,
orientation jitter, position, speed, phase, texture phase, value-noise grid) from
``numpy.random.default_rng([seed, split_code, i])`` with ``split_code`` 0 for train and 1 for test,
so the two splits are disjoint random streams and the same (seed, split, index) gives the same
bytes. Per-frame trajectory scalars are rounded to multiples of 2**-12 so that last-bit
differences of ``sin``/``cos`` between math libraries cannot change a pixel; the per-pixel work is
only IEEE-exact float32 arithmetic (+, -, *, /, sqrt, min, max).

Rendering is direct at any size and length (no resampling): coordinates are pixel centres in
[-1, 1], each shape is a signed distance function and its coverage is
``clip(0.5 - sdf / pixel_width, 0, 1)`` (a one-pixel box-filter ramp), so edges are
anti-aliased at every resolution. ``stride`` multiplies the time step (a 16-frame clip at stride
2 covers the same motion as 31 consecutive frames at stride 1). Translations wrap around a
torus slightly larger than the image, so any number of frames stays well defined.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np
import torch

from vfbench.data.clip_sampling import ClipSampling
from vfbench.errors import UsageError, check_positive
from vfbench.registry import DATASETS

SHAPES = ("circle", "square", "triangle", "diamond", "cross")
COLOURS = ("red", "green", "blue", "yellow", "magenta", "cyan")
TEXTURES = ("plain", "stripes", "checker", "noise_gradient")
MOTIONS = ("right", "left", "up", "down", "orbit_cw", "orbit_ccw", "bounce", "zoom")

_RGB = np.array([(230, 40, 40), (40, 200, 60), (50, 90, 235),
                 (240, 210, 40), (220, 50, 210), (40, 210, 220)], dtype=np.float32)
_SPLIT_CODES = {"train": 0, "test": 1}
_RENDER_STREAM = 2  # render(content, motion, seed) draws nuisance from its own stream
_WRAP = 3.0  # torus period for translations: the image is [-1, 1], so a shape fully leaves before it re-enters
_QUANT = 4096.0
_BOUNDING_RADIUS = 1.25  # every unit shape lies inside this circle (square corner: 0.85 * sqrt 2)
RENDERER_VERSION = "shapes-v1"  # bump when pixels change: it is part of every cached statistic's key


def _q(a) -> np.ndarray:
    """Round trajectory scalars to a 2**-12 grid (see module docstring: cross-platform bytes)."""
    return np.round(np.asarray(a, dtype=np.float64) * _QUANT) / _QUANT


# -- signed distances in the shape's unit frame (negative inside) ------------------------------
def _sd_box(x, y, bx, by):
    qx, qy = np.abs(x) - bx, np.abs(y) - by
    outside = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2)
    return outside + np.minimum(np.maximum(qx, qy), 0)


def _sd_triangle(x, y):
    """Equilateral triangle of side 2 centred on its centroid, apex up on screen (Quilez's construction)."""
    k = np.float32(math.sqrt(3.0))
    px = np.abs(x) - 1
    py = -y + 1 / k  # image y points down; flip so the apex is at the top
    fold = px + k * py > 0
    px, py = np.where(fold, (px - k * py) / 2, px), np.where(fold, (-k * px - py) / 2, py)
    px = px - np.clip(px, -2, 0)
    return -np.sqrt(px * px + py * py) * np.sign(py)


def _sd_shape(shape: int, x, y):
    if shape == 0:
        return np.sqrt(x * x + y * y) - 1
    if shape == 1:
        return _sd_box(x, y, 0.85, 0.85)
    if shape == 2:
        return _sd_triangle(x, y)
    if shape == 3:  # a square standing on a corner
        r = np.float32(math.sqrt(0.5))
        return _sd_box((x + y) * r, (y - x) * r, 0.8, 0.8)
    return np.minimum(_sd_box(x, y, 1.0, 0.33), _sd_box(x, y, 0.33, 1.0))


def _edge(signed_dist, pixel_width):
    """Anti-aliased coverage of the region ``signed_dist < 0`` (distance in image units)."""
    return np.clip(0.5 - signed_dist / pixel_width, 0, 1)


@dataclass(frozen=True)
class _Nuisance:
    """Everything about a clip that is neither content nor motion, drawn in a fixed order."""

    radius: float
    cos_t: float
    sin_t: float
    brightness: float
    bg_level: float
    tex_cos: float
    tex_sin: float
    tex_period: float
    tex_phase: Tuple[float, float]
    noise_grid: np.ndarray  # [4, 4] in [-1, 1]
    start: Tuple[float, float]
    speed: float
    orbit_centre: Tuple[float, float]
    orbit_radius: float
    angular_speed: float
    phase: float
    bounce_angle: float
    zoom_amplitude: float

    @classmethod
    def draw(cls, rng: np.random.Generator) -> "_Nuisance":
        u = rng.random(20)
        grid = rng.random((4, 4)) * 2 - 1
        theta = math.radians(-10 + 20 * u[1])
        tex_angle = math.pi / 4 * math.floor(u[5] * 4)
        quadrant = math.floor(u[15] * 4)
        bounce = math.pi / 4 + math.pi / 2 * quadrant + math.radians(-15 + 30 * u[16])
        return cls(
            radius=0.22 + 0.08 * u[0], cos_t=float(_q(math.cos(theta))), sin_t=float(_q(math.sin(theta))),
            brightness=0.85 + 0.15 * u[2], bg_level=45 + 35 * u[3],
            tex_cos=float(_q(math.cos(tex_angle))), tex_sin=float(_q(math.sin(tex_angle))),
            tex_period=0.45 + 0.35 * u[4], tex_phase=(u[6], u[7]), noise_grid=grid.astype(np.float32),
            start=(-0.6 + 1.2 * u[8], -0.6 + 1.2 * u[9]), speed=0.06 + 0.05 * u[10],
            orbit_centre=(-0.15 + 0.3 * u[11], -0.15 + 0.3 * u[12]), orbit_radius=0.35 + 0.2 * u[13],
            angular_speed=0.25 + 0.15 * u[14], phase=2 * math.pi * u[17], bounce_angle=bounce,
            zoom_amplitude=0.3 + 0.15 * u[18],
        )


def _trajectory(motion: int, nz: _Nuisance, times: np.ndarray):
    """Centre (x, y) and scale per frame, quantised; ``times`` are frame times (index * stride)."""
    ones = np.ones_like(times)
    x0, y0 = nz.start
    if motion < 4:  # right, left, up, down (image y grows downwards)
        dx, dy = [(1, 0), (-1, 0), (0, -1), (0, 1)][motion]
        cx, cy = x0 + dx * nz.speed * times, y0 + dy * nz.speed * times
        return _q(cx), _q(cy), ones
    if motion < 6:  # with y down, an increasing angle turns clockwise on screen
        sign = 1.0 if motion == 4 else -1.0
        ang = nz.phase + sign * nz.angular_speed * times
        cx = nz.orbit_centre[0] + nz.orbit_radius * np.cos(ang)
        cy = nz.orbit_centre[1] + nz.orbit_radius * np.sin(ang)
        return _q(cx), _q(cy), ones
    if motion == 6:  # straight diagonal-ish line reflected at the borders
        wall = 1.0 - 1.2 * nz.radius
        speed = 1.6 * nz.speed
        def reflect(p):  # triangle wave folding the line into [-wall, wall]
            return wall - np.abs(np.mod(p + wall, 4 * wall) - 2 * wall)
        cx = reflect(x0 * wall + speed * math.cos(nz.bounce_angle) * times)
        cy = reflect(y0 * wall + speed * math.sin(nz.bounce_angle) * times)
        return _q(cx), _q(cy), ones
    scale = 1 + nz.zoom_amplitude * np.sin(nz.phase + 1.5 * nz.angular_speed * times)
    return _q(0.55 * x0 * ones), _q(0.55 * y0 * ones), _q(scale)


def _background(texture: int, nz: _Nuisance, size: int) -> np.ndarray:
    """Grey background [H, W] (float32, 0..255) of one texture family; static over the clip."""
    pw = np.float32(2.0 / size)
    c = ((np.arange(size, dtype=np.float32) + 0.5) * pw - 1).astype(np.float32)
    x, y = c[None, :], c[:, None]
    level = np.float32(nz.bg_level)
    if texture == 0:
        return np.full((size, size), level, dtype=np.float32)
    if texture == 1:  # anti-aliased stripes: triangle wave of the coordinate along the stripe normal
        f = (x * np.float32(nz.tex_cos) + y * np.float32(nz.tex_sin)) / np.float32(nz.tex_period) + np.float32(nz.tex_phase[0])
        tri = np.abs(f - np.floor(f) - 0.5)
        stripe = _edge((np.float32(0.25) - tri) * np.float32(nz.tex_period), pw)
        return level + 45 * stripe
    if texture == 2:  # anti-aliased checkerboard: product of two +-1 square waves
        def square(v, phase):
            f = v / np.float32(nz.tex_period) + np.float32(phase)
            return 2 * _edge((np.float32(0.25) - np.abs(f - np.floor(f) - 0.5)) * np.float32(nz.tex_period), pw) - 1
        return level + 45 * (0.5 + 0.5 * square(x, nz.tex_phase[0]) * square(y, nz.tex_phase[1]))
    # linear gradient plus bilinear value noise on a 4x4 grid (arithmetic only: exact everywhere)
    ramp = 0.5 + 0.35 * (x * np.float32(nz.tex_cos) + y * np.float32(nz.tex_sin))
    g = (c + 1) / 2 * 3  # grid coordinates in [0, 3]
    i0 = np.minimum(np.floor(g).astype(np.int64), 2)
    w = (g - i0).astype(np.float32)
    grid = nz.noise_grid
    rows = grid[i0] * (1 - w)[:, None] + grid[i0 + 1] * w[:, None]  # [H, 4]
    noise = rows[:, i0] * (1 - w)[None, :] + rows[:, i0 + 1] * w[None, :]  # [H, W]
    return (level + 40 * ramp + 18 * noise).astype(np.float32)


def render_clip(shape: int, colour: int, texture: int, motion: int, nz: _Nuisance,
                frames: int, size: int, stride: int = 1) -> np.ndarray:
    """uint8 [T, 3, H, W] of one factor combination with the given nuisance parameters.

    The shape is evaluated only in a K x K pixel window per frame that contains its bounding
    circle plus a pixel of margin; outside it the coverage is exactly 0, so the frame there is
    the (rounded) background. This keeps rendering ~10x cheaper than a full-frame evaluation.
    """
    pw = np.float32(2.0 / size)
    times = np.arange(frames, dtype=np.float64) * stride
    cx, cy, scale = _trajectory(motion, nz, times)
    # the copy of the shape on the torus that can be visible: centre wrapped into [-WRAP/2, WRAP/2)
    half = _WRAP / 2
    cx = (np.mod(cx + half, _WRAP) - half).astype(np.float32)
    cy = (np.mod(cy + half, _WRAP) - half).astype(np.float32)
    extent = np.float32(nz.radius) * scale.astype(np.float32)  # [T]
    reach = float(extent.max()) * _BOUNDING_RADIUS + 2 * float(pw)
    k = int(math.ceil(2 * reach / float(pw))) + 1
    offsets = np.arange(k)
    cols = np.floor((cx.astype(np.float64) + 1 - reach) / float(pw)).astype(np.int64)[:, None] + offsets  # [T, K]
    rows = np.floor((cy.astype(np.float64) + 1 - reach) / float(pw)).astype(np.int64)[:, None] + offsets  # [T, K]
    dx = ((cols.astype(np.float32) + 0.5) * pw - 1 - cx[:, None])[:, None, :]  # [T, 1, K]
    dy = ((rows.astype(np.float32) + 0.5) * pw - 1 - cy[:, None])[:, :, None]  # [T, K, 1]
    ext = extent[:, None, None]
    ct, st = np.float32(nz.cos_t), np.float32(nz.sin_t)
    lx = (dx * ct + dy * st) / ext
    ly = (dy * ct - dx * st) / ext
    alpha = _edge(_sd_shape(shape, lx, ly) * ext, pw)  # [T, K, K]

    bg = _background(texture, nz, size)  # [H, W]
    bg_win = bg[np.clip(rows, 0, size - 1)[:, :, None], np.clip(cols, 0, size - 1)[:, None, :]]  # [T, K, K]
    fg = _RGB[colour] * np.float32(nz.brightness)  # [3]
    win = np.rint(bg_win[:, None] + (fg[None, :, None, None] - bg_win[:, None]) * alpha[:, None]).astype(np.uint8)

    out = np.empty((frames, 3, size, size), dtype=np.uint8)
    out[:] = np.rint(bg).astype(np.uint8)
    for t in range(frames):  # paste each frame's window, clipped to the image
        r0, c0 = int(rows[t, 0]), int(cols[t, 0])
        ra, rb, ca, cb = max(r0, 0), min(r0 + k, size), max(c0, 0), min(c0 + k, size)
        if ra < rb and ca < cb:
            out[t, :, ra:rb, ca:cb] = win[t, :, ra - r0:rb - r0, ca - c0:cb - c0]
    return out


@DATASETS.register("shapes", description="built-in procedural clips: content (shape x colour x texture) x motion")
class ShapesDataset(torch.utils.data.Dataset):
    """Procedural clips; see the module docstring for factors, splits and determinism."""

    shapes: Tuple[str, ...] = SHAPES
    colours: Tuple[str, ...] = COLOURS
    textures: Tuple[str, ...] = TEXTURES
    motions: Tuple[str, ...] = MOTIONS
    num_content: int = len(SHAPES) * len(COLOURS) * len(TEXTURES)
    num_motion: int = len(MOTIONS)
    factor_names: Dict[str, Tuple[str, ...]] = {"shape": SHAPES, "colour": COLOURS, "texture": TEXTURES,
                                                 "motion": MOTIONS}
    default_lengths = {"train": 10000, "test": 2000}

    def __init__(self, split: str = "train", frames: int = 16, size: int = 64, data_root=None,
                 stride: Optional[int] = None, seed: int = 0, length: Optional[int] = None,
                 label_factor: str = "motion"):
        if split not in _SPLIT_CODES:
            raise UsageError(f"shapes has splits 'train' and 'test', got split={split!r}")
        if label_factor not in ("motion", "content"):
            raise UsageError(f"shapes label_factor must be 'motion' or 'content', got {label_factor!r}")
        check_positive("--frames", frames)
        check_positive("--size", size)
        self.split, self.frames, self.size, self.seed = split, int(frames), int(size), int(seed)
        self.stride = 1 if stride is None else int(check_positive("--stride", stride))
        self.length = self.default_lengths[split] if length is None else int(check_positive("length", length))
        self.label_factor = label_factor
        self.num_classes = self.num_motion if label_factor == "motion" else self.num_content
        # procedural clips always start at time 0; the random phase/position is the variety
        self.sampling = ClipSampling(self.frames, self.stride, "first", self.seed)

    # -- factor bookkeeping ----------------------------------------------------------------
    @classmethod
    def content_id(cls, shape: int, colour: int, texture: int) -> int:
        return (shape * len(COLOURS) + colour) * len(TEXTURES) + texture

    @classmethod
    def content_factors(cls, content: int) -> Tuple[int, int, int]:
        """content id -> (shape, colour, texture) indices."""
        if not 0 <= content < cls.num_content:
            raise UsageError(f"shapes content must be in [0, {cls.num_content - 1}], got {content}")
        rest, texture = divmod(int(content), len(TEXTURES))
        shape, colour = divmod(rest, len(COLOURS))
        return shape, colour, texture

    @classmethod
    def content_name(cls, content: int) -> str:
        s, c, t = cls.content_factors(content)
        return f"{COLOURS[c]} {SHAPES[s]} on {TEXTURES[t]}"

    @classmethod
    def render(cls, content: int, motion: int, seed: int = 0, frames: int = 16, size: int = 64,
               stride: int = 1) -> torch.Tensor:
        """uint8 [T, 3, H, W] of an explicit (content, motion) pair.

        The nuisance parameters depend on ``seed`` only, so changing ``content`` with the same seed and
        motion changes only the appearance, and changing ``motion`` only the trajectory.
        """
        shape, colour, texture = cls.content_factors(content)
        if not 0 <= motion < cls.num_motion:
            raise UsageError(f"shapes motion must be in [0, {cls.num_motion - 1}], got {motion}")
        nz = _Nuisance.draw(np.random.default_rng([int(seed), _RENDER_STREAM]))
        return torch.from_numpy(render_clip(shape, colour, texture, int(motion), nz, int(frames), int(size), int(stride)))

    def factors(self, index: int) -> Tuple[int, int, _Nuisance]:
        """(content, motion, nuisance) of item ``index`` (cheap: no rendering)."""
        rng = np.random.default_rng([self.seed, _SPLIT_CODES[self.split], int(index)])
        content = int(rng.integers(self.num_content))
        motion = int(rng.integers(self.num_motion))
        return content, motion, _Nuisance.draw(rng)

    # -- torch Dataset ---------------------------------------------------------------------
    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        if not -self.length <= index < self.length:
            raise IndexError(f"shapes {self.split} has {self.length} clips, index {index} is out of range")
        index = int(index) % self.length
        content, motion, nz = self.factors(index)
        shape, colour, texture = self.content_factors(content)
        video = render_clip(shape, colour, texture, motion, nz, self.frames, self.size, self.stride)
        label = motion if self.label_factor == "motion" else content
        return {"video": torch.from_numpy(video), "label": label, "content": content, "motion": motion,
                "index": index}

    def describe(self) -> dict:
        return {"name": "shapes", "split": self.split, "root": None, "frames": self.frames, "size": self.size,
                "clip_sampling": self.sampling.describe(), "count": self.length, "seed": self.seed,
                "label": self.label_factor, "num_classes": self.num_classes, "num_content": self.num_content,
                "num_motion": self.num_motion, "renderer": RENDERER_VERSION}

    def __repr__(self) -> str:
        return f"ShapesDataset(split={self.split!r}, frames={self.frames}, size={self.size}, n={self.length})"
