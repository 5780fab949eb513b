"""The built-in procedural dataset: format, determinism, anti-aliasing, factors, motion semantics."""

import hashlib
import math

import numpy as np
import pytest
import torch

from vfbench.data import build_dataset, collate_clips
from vfbench.data import shapes as S
from vfbench.data.shapes import ShapesDataset
from vfbench.errors import UnknownNameError, UsageError


def test_item_is_uint8_clip_with_both_labels():
    ds = build_dataset("shapes", split="train", frames=16, size=64)
    item = ds[3]
    assert item["video"].dtype == torch.uint8 and tuple(item["video"].shape) == (16, 3, 64, 64)
    assert 0 <= item["content"] < ds.num_content == 120
    assert 0 <= item["motion"] < ds.num_motion == 8
    assert item["label"] == item["motion"] and ds.num_classes == 8 and item["index"] == 3
    assert len(ds) == 10000 and len(build_dataset("shapes", split="test")) == 2000
    assert ds.describe()["count"] == 10000 and ds.describe()["renderer"] == S.RENDERER_VERSION


def test_same_seed_and_index_same_bytes_and_different_otherwise():
    a = build_dataset("shapes", frames=8, size=32, seed=5)
    b = build_dataset("shapes", frames=8, size=32, seed=5)
    assert torch.equal(a[7]["video"], b[7]["video"])
    assert not torch.equal(a[7]["video"], a[8]["video"])
    assert not torch.equal(a[7]["video"], build_dataset("shapes", frames=8, size=32, seed=6)[7]["video"])
    test = build_dataset("shapes", split="test", frames=8, size=32, seed=5)
    assert not torch.equal(a[7]["video"], test[7]["video"])  # disjoint random streams per split


def test_golden_bytes_pin_the_renderer():
    # If this fails the pixels changed: bump RENDERER_VERSION (cached statistics depend on it).
    ds = build_dataset("shapes", frames=4, size=32, seed=0)
    digest = hashlib.sha256(b"".join(ds[i]["video"].numpy().tobytes() for i in range(6))).hexdigest()
    assert digest == GOLDEN_SHA256, digest


GOLDEN_SHA256 = "d018ff8bafe1285faf6b01e59109b61c849a153f5dddba65397fcb8965387858"


@pytest.mark.parametrize("size", [32, 64, 128])
@pytest.mark.parametrize("frames", [1, 5, 16])
def test_any_size_and_length(size, frames):
    video = build_dataset("shapes", frames=frames, size=size)[11]["video"]
    assert tuple(video.shape) == (frames, 3, size, size)


def _plain_circle(colour=0, motion=0, size=64, seed=3, frames=4):
    content = ShapesDataset.content_id(shape=0, colour=colour, texture=0)
    return ShapesDataset.render(content, motion, seed=seed, frames=frames, size=size)


def test_edges_are_anti_aliased():
    video = _plain_circle().numpy()
    red = video[0, 0].astype(int)
    bg = int(np.bincount(red.ravel()).argmax())
    fg = int(red.max())
    between = ((red > bg) & (red < fg)).sum()
    assert fg > bg + 100 and between >= 8  # a hard threshold would give only bg and fg


def test_circle_coverage_matches_its_area():
    size, seed = 128, 3
    nz = S._Nuisance.draw(np.random.default_rng([seed, S._RENDER_STREAM]))
    frame = _plain_circle(size=size, seed=seed).numpy()[0, 0].astype(np.float64)
    bg = np.round(nz.bg_level)
    fg = S._RGB[0][0] * np.float32(nz.brightness)
    coverage = (frame - bg) / (fg - bg)
    expected = math.pi * (nz.radius * size / 2) ** 2
    assert abs(coverage.sum() / expected - 1) < 0.02


def _reference_full_frame(shape, colour, texture, motion, nz, frames, size, stride=1):
    """Evaluate the coverage at every pixel (no window): the optimised renderer must match it."""
    pw = np.float32(2.0 / size)
    c = ((np.arange(size, dtype=np.float32) + 0.5) * pw - 1).astype(np.float32)
    cx, cy, scale = S._trajectory(motion, nz, np.arange(frames, dtype=np.float64) * stride)
    cx = (np.mod(cx + S._WRAP / 2, S._WRAP) - S._WRAP / 2).astype(np.float32)
    cy = (np.mod(cy + S._WRAP / 2, S._WRAP) - S._WRAP / 2).astype(np.float32)
    ext = (np.float32(nz.radius) * scale.astype(np.float32))[:, None, None]
    dx = (c[None, :] - cx[:, None])[:, None, :]
    dy = (c[None, :] - cy[:, None])[:, :, None]
    ct, st = np.float32(nz.cos_t), np.float32(nz.sin_t)
    alpha = S._edge(S._sd_shape(shape, (dx * ct + dy * st) / ext, (dy * ct - dx * st) / ext) * ext, pw)
    bg = S._background(texture, nz, size)
    fg = S._RGB[colour] * np.float32(nz.brightness)
    return np.rint(bg[None, None] + (fg[None, :, None, None] - bg[None, None]) * alpha[:, None]).astype(np.uint8)


def test_windowed_renderer_equals_full_frame_evaluation():
    rng = np.random.default_rng(0)
    for trial in range(24):
        shape, colour, texture = trial % 5, trial % 6, trial % 4
        motion = trial % 8
        nz = S._Nuisance.draw(rng)
        size = (32, 64)[trial % 2]
        fast = S.render_clip(shape, colour, texture, motion, nz, 20, size, stride=2)
        ref = _reference_full_frame(shape, colour, texture, motion, nz, 20, size, stride=2)
        assert np.array_equal(fast, ref), (trial, np.abs(fast.astype(int) - ref).max())


def test_stride_is_a_time_step():
    ds1 = build_dataset("shapes", frames=16, size=32, stride=1, seed=2)
    ds2 = build_dataset("shapes", frames=8, size=32, stride=2, seed=2)
    assert torch.equal(ds2[4]["video"], ds1[4]["video"][::2])


def _centroid(frame_rgb, bg_frame):
    """Coverage-weighted centre of the shape (sub-pixel accurate thanks to anti-aliasing)."""
    weight = np.abs(frame_rgb - bg_frame).sum(axis=0).astype(np.float64)
    ys, xs = np.mgrid[: weight.shape[0], : weight.shape[1]]
    return (weight * xs).sum() / weight.sum(), (weight * ys).sum() / weight.sum()


@pytest.mark.parametrize("motion,dx,dy", [(0, 1, 0), (1, -1, 0), (2, 0, -1), (3, 0, 1)])
def test_translation_directions(motion, dx, dy):
    video = _plain_circle(motion=motion, size=64, seed=11, frames=3).numpy().astype(int)
    nz = S._Nuisance.draw(np.random.default_rng([11, S._RENDER_STREAM]))
    bg = np.full_like(video[0], int(np.rint(nz.bg_level)))
    (x0, y0), (x2, y2) = _centroid(video[0], bg), _centroid(video[2], bg)
    move = np.array([x2 - x0, y2 - y0])
    expected = np.array([dx, dy])
    assert move @ expected > 2  # pixels along the direction
    assert abs(move @ expected[::-1]) < 0.05  # and none across it


@pytest.mark.parametrize("motion,sign", [(4, 1), (5, -1)])
def test_orbit_turns_clockwise_or_counter_clockwise_on_screen(motion, sign):
    video = _plain_circle(motion=motion, size=128, seed=4, frames=3).numpy().astype(int)
    nz = S._Nuisance.draw(np.random.default_rng([4, S._RENDER_STREAM]))
    bg = np.full_like(video[0], int(np.rint(nz.bg_level)))
    p = [np.array(_centroid(video[t], bg)) for t in range(3)]
    d1, d2 = p[1] - p[0], p[2] - p[1]
    # image y points down, so a positive cross product is a clockwise turn on screen
    assert np.sign(d1[0] * d2[1] - d1[1] * d2[0]) == sign


def test_render_changes_only_the_requested_factor():
    red = ShapesDataset.content_id(2, 0, 1)
    blue = ShapesDataset.content_id(2, 2, 1)
    a = ShapesDataset.render(red, 6, seed=9, frames=6, size=64)
    assert torch.equal(a, ShapesDataset.render(red, 6, seed=9, frames=6, size=64))
    b = ShapesDataset.render(blue, 6, seed=9, frames=6, size=64)
    changed = (a != b).any(dim=1).float().mean().item()
    assert 0 < changed < 0.2  # only the shape's pixels change, not the textured background


def test_factor_ids_round_trip_and_validate():
    seen = set()
    for s in range(5):
        for c in range(6):
            for t in range(4):
                cid = ShapesDataset.content_id(s, c, t)
                assert ShapesDataset.content_factors(cid) == (s, c, t)
                seen.add(cid)
    assert seen == set(range(ShapesDataset.num_content))
    assert ShapesDataset.content_name(ShapesDataset.content_id(0, 0, 0)) == "red circle on plain"
    with pytest.raises(UsageError, match="content must be in"):
        ShapesDataset.render(120, 0)
    with pytest.raises(UsageError, match="motion must be in"):
        ShapesDataset.render(0, 8)


def test_options_and_errors():
    with pytest.raises(UsageError, match="splits 'train' and 'test'"):
        build_dataset("shapes", split="val")
    ds = build_dataset("shapes", length=5, label_factor="content")
    assert len(ds) == 5 and ds.num_classes == 120 and ds[1]["label"] == ds[1]["content"]
    with pytest.raises(IndexError):
        ds[5]
    with pytest.raises(UsageError, match="has no option 'lenght'"):
        build_dataset("shapes", lenght=5)
    with pytest.raises(UsageError, match="--size"):
        build_dataset("shapes", size=0)


def test_unknown_dataset_name_suggests_the_close_one():
    with pytest.raises(UnknownNameError, match="did you mean 'shapes'"):
        build_dataset("shapez")


def test_collate_gives_exchange_format():
    ds = build_dataset("shapes", frames=4, size=32)
    batch = collate_clips([ds[i] for i in range(3)])
    assert batch["video"].dtype == torch.uint8 and tuple(batch["video"].shape) == (3, 4, 3, 32, 32)
    for key in ("label", "content", "motion", "index"):
        assert batch[key].dtype == torch.int64 and batch[key].shape == (3,)
    assert batch["index"].tolist() == [0, 1, 2]
