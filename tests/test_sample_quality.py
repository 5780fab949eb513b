"""Sample statistics (vfbench.sample_quality), filmstrips (vfbench.previews) and ``vfbench quality``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vfbench.data.shapes import ShapesDataset
from vfbench.errors import UsageError
from vfbench.previews import filmstrip
from vfbench.sample_quality import clip_statistics, frame_to_frame_std, label_statistics, pixel_std, shape_motion


def test_pixel_and_frame_to_frame_std_known_answers():
    flat = np.full((2, 4, 3, 8, 8), 128, np.uint8)
    assert pixel_std(flat) == 0.0 and frame_to_frame_std(flat) == 0.0
    # frames alternating 100 / 140 everywhere: pixel std 20; frame differences +40, -40, +40 (mean 40/3)
    alt = np.stack([np.full((3, 8, 8), v, np.uint8) for v in (100, 140, 100, 140)])[None]
    assert pixel_std(alt) == pytest.approx(20.0)
    assert frame_to_frame_std(alt) == pytest.approx((40.0 ** 2 - (40.0 / 3) ** 2) ** 0.5)
    # independent noise frames: frame differences have sqrt(2) x the pixel std
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (4, 16, 3, 16, 16), dtype=np.uint8)
    assert frame_to_frame_std(noise) / pixel_std(noise) == pytest.approx(2 ** 0.5, rel=0.03)
    with pytest.raises(UsageError, match="uint8"):
        pixel_std(noise.astype(np.float32))


def test_real_shapes_clips_look_like_shapes_to_shapes_net_and_shuffled_frames_do_not():
    ds = ShapesDataset("train", frames=16, size=32)
    clips = np.stack([np.asarray(ds[i]["video"]) for i in range(24)])
    real = label_statistics(clips)
    assert real["content_confidence"] > 0.6 and real["motion_confidence"] > 0.8
    assert real["content_consistency"] > 0.6 and real["content_coverage"] > 0.5
    # frames of different videos in one clip: the content is not consistent across the clip any more
    mixed = clips.copy()
    mixed[:, 8:] = np.roll(clips, 1, axis=0)[:, 8:]
    assert label_statistics(mixed)["content_consistency"] < real["content_consistency"] - 0.3
    stats = clip_statistics(clips, with_labels=False)
    assert set(stats) == {"num_clips", "pixel_std", "frame_to_frame_std", "shape_speed", "shape_displacement",
                          "shape_jitter", "shape_visible"} and 10 < stats["pixel_std"] < 40


def _square_clip(positions, size=32, side=4, colour=(230, 40, 40), grey=90):
    """One clip of a saturated square whose top-left corner is at ``positions`` (x, y pixels) on flat grey."""
    clip = np.full((len(positions), 3, size, size), grey, np.uint8)
    for f, (x, y) in enumerate(positions):
        if x is not None:
            clip[f, :, y:y + side, x:x + side] = np.array(colour, np.uint8)[:, None, None]
    return clip


def test_shape_motion_known_answers():
    # a square moving 1 px right per frame on a 32 px frame: speed = displacement = 1/32 image widths per frame,
    # no jitter; standing still: 0; grey noise is no shape at all
    moving = _square_clip([(2 + f, 10) for f in range(16)])[None]
    got = shape_motion(moving)
    assert got["shape_speed"] == pytest.approx(1 / 32, abs=1e-6)
    assert got["shape_displacement"] == pytest.approx(1 / 32, abs=1e-6)
    assert got["shape_jitter"] == pytest.approx(0.0, abs=1e-6) and got["shape_visible"] == 1.0
    still = shape_motion(_square_clip([(5, 5)] * 16)[None])
    assert still["shape_speed"] == 0.0 and still["shape_displacement"] == 0.0 and still["shape_jitter"] == 0.0
    # back and forth by 3 px: fast, jittery, going nowhere
    shaky = shape_motion(_square_clip([(10 + 3 * (f % 2), 10) for f in range(16)])[None])
    assert shaky["shape_speed"] == pytest.approx(3 / 32, abs=1e-6)
    assert shaky["shape_displacement"] < 0.01 and shaky["shape_jitter"] == pytest.approx(6 / 32, abs=1e-6)
    # frames without the shape neither move it nor count as visible; the speed uses visible neighbours only
    gaps = shape_motion(_square_clip([(2 + f, 10) if f % 4 else (None, None) for f in range(16)])[None])
    assert gaps["shape_visible"] == pytest.approx(12 / 16) and gaps["shape_speed"] == pytest.approx(1 / 32, abs=1e-6)
    grey = np.random.default_rng(0).integers(60, 120, (2, 16, 1, 32, 32), dtype=np.uint8).repeat(3, axis=2)
    assert shape_motion(grey) == {"shape_speed": 0.0, "shape_displacement": 0.0, "shape_jitter": 0.0,
                                  "shape_visible": 0.0}


def test_shape_motion_separates_real_still_and_shuffled_shapes_clips():
    ds = ShapesDataset("train", frames=16, size=32)
    clips = np.stack([np.asarray(ds[i]["video"]) for i in range(64)])
    real = shape_motion(clips)
    assert 0.03 < real["shape_speed"] < 0.07 and real["shape_jitter"] < 0.02 and real["shape_visible"] > 0.85
    still = shape_motion(np.repeat(clips[:, 8:9], 16, axis=1))
    assert still["shape_speed"] == 0.0
    shuffled = shape_motion(clips[:, np.random.default_rng(0).permutation(16)])
    assert shuffled["shape_jitter"] > 10 * real["shape_jitter"]


def test_filmstrip_layout():
    a = np.zeros((2, 3, 3, 4, 4), np.uint8)
    b = np.full((1, 3, 3, 4, 4), 255, np.uint8)
    img = filmstrip([("a", a), ("b", b)], scale=2, pad=1)
    # 3 frames of 8 px + 2 separators; 3 rows of 8 px, a separator after each row, a 3 px band after each group
    assert img.shape == (3 * 8 + 3 * 1 + 2 * 3, 3 * 8 + 2, 3) and img.dtype == np.uint8
    assert img[0, 0].tolist() == [0, 0, 0]


def test_quality_table_end_to_end(tmp_path):
    from vfbench.learning import ClipSet, build
    from vfbench.quality import quality_table
    from vfbench.results import ResultsStore
    from vfbench.runs import create_run
    from vfbench.training import TrainConfig, train

    store = ResultsStore(tmp_path)
    ds = ShapesDataset("train", frames=16, size=16)
    clips = torch.stack([ds[i]["video"] for i in range(4)])
    model = build("videofusion", clips, "tiny", {"sampling_steps": 2})
    tcfg = TrainConfig(steps=2, batch_size=2, lr=1e-3, ckpt_every=2)
    run_dir = create_run(store, "vf", "videofusion", model.config,
                         {"name": "shapes", "frames": 16, "size": 16, "split": "train", "seed": 0}, tcfg)
    train(run_dir, model, ClipSet(clips), tcfg, progress=False)
    out = quality_table(store, ["vf"], num=8, steps=2, figure=tmp_path / "fig.png", progress=False, log=lambda s: None)
    rows = {r["row"]: r for r in out["rows"]}
    assert out["metric"] == "fvd_shapes8"
    assert set(rows) == {"vf", "real shapes test split (floor)", "real shapes train split", "untrained videofusion (ceiling)"}
    assert all(np.isfinite(r["fvd"]) for k, r in rows.items() if "train split" not in k)
    assert rows["real shapes test split (floor)"]["fvd"] < rows["untrained videofusion (ceiling)"]["fvd"]
    saved = json.loads((tmp_path / "tables" / "quality.json").read_text())
    assert saved["rows"][0]["row"] == "vf" and "| vf |" in (tmp_path / "tables" / "quality.md").read_text()
    assert (tmp_path / "fig.png").stat().st_size > 0
    # a run given by its folder, scored from another results directory: same samples, same FVD
    other = quality_table(ResultsStore(tmp_path / "other"), [str(run_dir)], num=8, steps=2, untrained=False,
                          progress=False, log=lambda s: None)
    assert other["rows"][0]["row"] == "vf" and other["rows"][0]["fvd"] == pytest.approx(rows["vf"]["fvd"])
