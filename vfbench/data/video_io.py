"""Reading frames from video files (decord) and frame folders (Pillow), and the protocol resize.

A *source* is either a video file (``VIDEO_EXTS``, decoded with ``decord.VideoReader``; only the
requested frames are decoded with ``get_batch``) or a folder of still images (``IMAGE_EXTS``,
ordered by natural sort so ``frame_2.png`` comes before ``frame_10.png``). Every frame becomes RGB:
grayscale is repeated to 3 channels and an alpha channel is dropped (not composited).

Protocol resize (DESIGN.md "Datasets"): center square crop of side ``min(H, W)``, then an
anti-aliased bilinear resize to ``size x size`` (``torch.nn.functional.interpolate(...,
mode="bilinear", antialias=True, align_corners=False)``), rounded to uint8. A crop that already
has the protocol size is copied unchanged, so lossless inputs at the protocol size are exact.

Every failure is a ``DataError`` naming the file: missing, unreadable/corrupt, zero frames, or
fewer frames than the clip needs.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import List, Sequence

import numpy as np

from vfbench.errors import DataError

VIDEO_EXTS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"})
IMAGE_EXTS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp"})
_DIGITS = re.compile(r"(\d+)")


class DataWarning(UserWarning):
    """Sources skipped or replaced while loading a dataset (counted, never fatal)."""


def user_stacklevel() -> int:
    """``stacklevel`` that attributes a warning to the first caller outside ``vfbench.data``."""
    level, frame = 1, sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__", "").startswith("vfbench.data"):
        frame, level = frame.f_back, level + 1
    return level


def natural_key(name: str):
    """Sort key that orders embedded numbers numerically: ``f2`` < ``f10``."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part.lower()) for part in _DIGITS.split(name) if part]


def is_video_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_EXTS and not path.name.startswith(".")


def list_frame_files(folder: Path) -> List[Path]:
    """Image files directly inside ``folder``, naturally sorted (hidden files ignored)."""
    return sorted((p for p in folder.iterdir()
                   if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".") and p.is_file()),
                  key=lambda p: natural_key(p.name))


def _open_video(path: Path):
    import decord

    from vfbench.data.decoder_log import captured_stderr, with_decoder_lines

    failure = None
    with captured_stderr() as said:  # the decoder's own stderr lines become part of the reason
        try:
            # one thread: DataLoader workers already parallelise across clips
            return decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
        except Exception as exc:  # decord raises RuntimeError / DECORDError with ffmpeg's message
            failure = exc
    raise DataError(with_decoder_lines(
        f"video {path} cannot be opened ({_short(failure)}); the file is corrupt, truncated or"
        " in an unsupported format: re-download or re-encode it, or delete it", said)) from None


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path} does not exist; check the path (or --data-root / VFBENCH_DATA)")


def _frame_folder_count(path: Path) -> int:
    """Frames of a frame folder, each image's header read (no pixels decoded): a file that is no image
    (a text file named .png) or a frame of another size fails here, as training's decode would."""
    from PIL import Image, UnidentifiedImageError

    sizes = {}
    files = list_frame_files(path)
    for f in files:
        try:
            with Image.open(f) as img:
                w, h = img.size
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
            raise DataError(f"image {f} cannot be read ({_short(exc)}); replace or delete the corrupt frame") from None
        sizes.setdefault((h, w), f.name)
    if len(sizes) > 1:
        shown = ", ".join(f"{h}x{w} ({name})" for (h, w), name in sorted(sizes.items())[:3])
        raise DataError(f"frame folder {path} mixes frame sizes {shown}; all frames of a video must have the"
                        " same size: resize or remove the odd frames")
    return len(files)


def count_frames(path: Path) -> int:
    """Number of frames of a video (from its index, without decoding) or of a frame folder (every frame's
    header checked: an image, all of one size)."""
    path = Path(path)
    _check_exists(path)
    if path.is_dir():
        n = _frame_folder_count(path)
    else:
        n = len(_open_video(path))
    if n == 0:
        raise DataError(f"{path} has zero frames; remove it or replace it with a valid video / frame folder")
    return n


def check_frame_indices(path: Path, num_frames: int, indices: Sequence[int]) -> None:
    """A clear error when a clip asks for frames the source does not have."""
    if len(indices) == 0:
        raise DataError(f"no frames requested from {path}; ask for at least one frame")
    need = max(indices) + 1
    if min(indices) < 0 or need > num_frames:
        raise DataError(f"{path} has {num_frames} frames but the clip needs {need} (frames {min(indices)}.."
                        f"{max(indices)}); use fewer frames or a smaller stride, or remove this file")


def _image_to_rgb(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                # 16/32-bit grayscale: scale to 8 bits instead of Pillow's clipping convert
                arr = np.asarray(img, dtype=np.float64)
                peak = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
                gray = np.rint(np.clip(arr / peak, 0, 1) * 255).astype(np.uint8)
                return np.repeat(gray[:, :, None], 3, axis=2)
            if img.mode != "RGB":
                img = img.convert("RGB")  # L/LA/P/RGBA/CMYK -> RGB; alpha is dropped, not composited
            return np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"image {path} cannot be read ({_short(exc)}); replace or delete the corrupt frame") from None


def read_frames(path: Path, indices: Sequence[int]) -> np.ndarray:
    """uint8 [n, H, W, 3] frames ``indices`` of a video file or frame folder (decoding only those)."""
    path = Path(path)
    _check_exists(path)
    indices = [int(i) for i in indices]
    if path.is_dir():
        files = list_frame_files(path)
        if not files:
            raise DataError(f"frame folder {path} has zero image frames ({', '.join(sorted(IMAGE_EXTS))});"
                            " remove it or add its frames")
        check_frame_indices(path, len(files), indices)
        frames = [_image_to_rgb(files[i]) for i in indices]
        shapes = {f.shape for f in frames}
        if len(shapes) != 1:
            raise DataError(f"frame folder {path} mixes frame sizes {sorted(shapes)}; all frames of a video"
                            " must have the same size")
        return np.stack(frames)
    reader = _open_video(path)
    n = len(reader)
    if n == 0:
        raise DataError(f"video {path} has zero frames; remove it or replace it with a valid video")
    check_frame_indices(path, n, indices)
    from vfbench.data.decoder_log import captured_stderr, with_decoder_lines

    failure = None
    with captured_stderr() as said:
        try:
            batch = reader.get_batch(indices).asnumpy()
        except Exception as exc:
            failure = exc
    if failure is not None:
        if "DECORDArrayCopyFromTo" in str(failure):  # decord's row-padding bug for some frame widths
            raise DataError(f"video {path} hits a decord bug for some frame widths"
                            " (e.g. 48, 72); re-encode it to another width or extract its frames into a"
                            " folder of PNGs") from None
        raise DataError(with_decoder_lines(
            f"video {path} could not be decoded at frames {indices[0]}..{indices[-1]}"
            f" ({_short(failure)}); the file is corrupt or truncated: re-download or delete it", said)) from None
    if batch.ndim != 4 or batch.shape[0] != len(indices):
        raise DataError(f"video {path} returned {batch.shape[0] if batch.ndim else 0} of {len(indices)} frames;"
                        " the file is corrupt or truncated: re-download or delete it")
    if batch.shape[-1] == 1:
        batch = np.repeat(batch, 3, axis=-1)
    return np.ascontiguousarray(batch[..., :3], dtype=np.uint8)


def center_crop_resize(frames: np.ndarray, size: int):
    """uint8 [n, H, W, 3] -> uint8 torch tensor [n, 3, size, size]: center square crop, anti-aliased resize."""
    import torch
    import torch.nn.functional as F

    n, h, w = frames.shape[:3]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = torch.from_numpy(np.ascontiguousarray(frames[:, top:top + side, left:left + side])).permute(0, 3, 1, 2)
    if side == size:
        return crop.contiguous()
    # per-image results are independent of n, so the cache (batched) and a clip (16 frames) agree
    resized = F.interpolate(crop.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return resized.round_().clamp_(0, 255).to(torch.uint8)


def load_clip(path: Path, indices: Sequence[int], size: int):
    """uint8 [T, 3, size, size] clip of frames ``indices`` of ``path`` at the protocol size."""
    return center_crop_resize(read_frames(path, indices), size)
