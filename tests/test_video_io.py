"""Video/frame-folder reading, the protocol crop+resize, clip sampling; tiny files written here.

The helpers at the top (``coded_frames``, ``write_png_frames``, ``write_video``) are shared with
test_folders.py and test_data_cli.py: frame ``k`` of video ``v`` has red = k, green = 10 * v and
blue = the column index, so a clip says exactly which frames and columns it came from.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from vfbench.data.clip_sampling import ClipSampling
from vfbench.data.video_io import (center_crop_resize, count_frames, list_frame_files, load_clip,
                                   natural_key, read_frames)
from vfbench.errors import DataError, UsageError


def coded_frames(n, h=16, w=20, video=0):
    frames = np.zeros((n, h, w, 3), dtype=np.uint8)
    frames[..., 0] = np.arange(n, dtype=np.uint8)[:, None, None]
    frames[..., 1] = 10 * video
    frames[..., 2] = np.arange(w, dtype=np.uint8)[None, None, :]
    return frames


def write_png_frames(folder, frames, pattern="frame_{}.png"):
    """Lossless frames; names are not zero-padded so only a natural sort orders them right."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for k, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / pattern.format(k))
    return folder


def write_video(path, frames, lossless=True):
    """mp4 (H.264 RGB at qp 0 = lossless, else MPEG-4 part 2) or avi (FFV1, lossless) via PyAV.

    decord 0.6 returns torn frames for some widths (8, 12, 16, 24, 48, 72 among those tried), so
    the tests use widths 20 and 32 for video files.
    """
    av = pytest.importorskip("av")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".avi":
        codec, pix, opts = "ffv1", "bgr0", {}
    elif lossless:
        codec, pix, opts = "libx264rgb", "rgb24", {"qp": "0"}
    else:
        codec, pix, opts = "mpeg4", "yuv420p", {}
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25, options=opts)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())
    return path


# -- reading -----------------------------------------------------------------------------------
def test_frame_folder_is_naturally_sorted_and_exact(tmp_path):
    folder = write_png_frames(tmp_path / "v", coded_frames(12))
    assert [p.name for p in list_frame_files(folder)][:3] == ["frame_0.png", "frame_1.png", "frame_2.png"]
    assert sorted(["f10", "f2", "f1"], key=natural_key) == ["f1", "f2", "f10"]
    frames = read_frames(folder, [2, 10, 11])
    assert frames.shape == (3, 16, 20, 3) and frames[:, 0, 0, 0].tolist() == [2, 10, 11]
    assert count_frames(folder) == 12


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_lossless_videos_decode_exactly(tmp_path, suffix):
    frames = coded_frames(20, video=3)
    path = write_video(tmp_path / f"v{suffix}", frames)
    assert count_frames(path) == 20
    assert np.array_equal(read_frames(path, [0, 7, 19]), frames[[0, 7, 19]])


def test_grayscale_and_rgba_become_rgb(tmp_path):
    from PIL import Image

    gray = tmp_path / "gray"
    gray.mkdir()
    Image.fromarray(np.full((8, 8), 77, np.uint8), mode="L").save(gray / "0.png")
    rgba = tmp_path / "rgba"
    rgba.mkdir()
    pixels = np.zeros((8, 8, 4), np.uint8)
    pixels[..., :3] = (10, 20, 30)
    pixels[..., 3] = 0  # fully transparent: the colour must survive (alpha dropped, not composited)
    Image.fromarray(pixels, mode="RGBA").save(rgba / "0.png")
    assert read_frames(gray, [0])[0, 3, 3].tolist() == [77, 77, 77]
    assert read_frames(rgba, [0])[0, 3, 3].tolist() == [10, 20, 30]


# -- protocol crop + resize ----------------------------------------------------------------------
def test_center_crop_is_exact_when_no_resize_is_needed():
    frames = coded_frames(2, h=16, w=20)
    out = center_crop_resize(frames, 16)
    assert out.dtype == torch.uint8 and tuple(out.shape) == (2, 3, 16, 16)
    assert out[0, 2, 0].tolist() == list(range(2, 18))  # columns 2..17 of 20: centred
    tall = np.transpose(coded_frames(1, h=20, w=16), (0, 2, 1, 3)).copy()  # 16 wide, 20 high
    assert tuple(center_crop_resize(tall, 16).shape) == (1, 3, 16, 16)


def test_resize_is_anti_aliased():
    checker = np.zeros((1, 32, 32, 3), np.uint8)
    checker[0, ::2, ::2] = 255
    checker[0, 1::2, 1::2] = 255
    small = center_crop_resize(checker, 8)  # plain bilinear sampling would alias to 0 or 255
    assert small.min() >= 120 and small.max() <= 135
    flat = np.full((1, 30, 40, 3), 200, np.uint8)
    assert torch.all(center_crop_resize(flat, 12) == 200)


def test_load_clip_combines_read_and_resize(tmp_path):
    folder = write_png_frames(tmp_path / "v", coded_frames(8))
    clip = load_clip(folder, [1, 3, 5], 16)
    assert tuple(clip.shape) == (3, 3, 16, 16) and clip[:, 0, 0, 0].tolist() == [1, 3, 5]


# -- errors ----------------------------------------------------------------------------------------
def test_missing_corrupt_truncated_and_short_sources(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        count_frames(tmp_path / "nope.mp4")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(DataError, match="garbage.mp4 cannot be opened"):
        count_frames(garbage)
    good = write_video(tmp_path / "good.mp4", coded_frames(10))
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataError, match="truncated.mp4"):
        read_frames(truncated, [0])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="zero"):
        count_frames(empty)
    with pytest.raises(DataError, match=r"good.mp4 has 10 frames but the clip needs 13"):
        read_frames(good, [0, 4, 8, 12])


# -- clip sampling --------------------------------------------------------------------------------
def test_clip_sampling_windows():
    first = ClipSampling(frames=4, stride=3, mode="first")
    assert first.span == 10 and first.indices(30, index=5) == [0, 3, 6, 9]
    assert ClipSampling(4, 3, "center").indices(30, 0) == [10, 13, 16, 19]
    rnd = ClipSampling(4, 3, "random", seed=1)
    starts = {rnd.start(30, i) for i in range(50)}
    assert starts <= set(range(21)) and len(starts) > 5
    assert rnd.indices(30, 7) == ClipSampling(4, 3, "random", seed=1).indices(30, 7)
    assert any(rnd.start(30, 7, epoch=e) != rnd.start(30, 7, epoch=0) for e in range(1, 6))
    assert rnd.indices(10, 3) == [0, 3, 6, 9]  # exactly one window fits
    assert rnd.describe() == {"frames": 4, "stride": 3, "mode": "random", "seed": 1}
    with pytest.raises(DataError, match="has 9 frames but a clip of 4 frames at stride 3 needs 10"):
        rnd.indices(9, 0)
    with pytest.raises(UsageError, match="mode"):
        ClipSampling(4, 1, "middle")
