"""A folder of generated clips as the evaluation reads it: ``.npy``/``.npz`` uint8 shards or video files.

The folder may come from anywhere (``vfbench evaluate --samples DIR`` scores any generator's clips),
so nothing in it is trusted. Shards are opened header first (``vfbench.arrays``): their dtype and
shape come from the .npy header (an .npz member's header is read from the first bytes of its stream,
so nothing is decompressed to learn a shape), and the declared sizes are checked before anything is
allocated: against what the file or zip entry really holds, and against a per-clip limit derived
from the metric's protocol (``clip_limit_bytes``: a clip may hold at most 256 times the pixels of the
protocol's clip, e.g. 16 frames at 2048 x 2048 for a 16 x 128 x 128 metric). Clips are then read in
batches: memory-mapped from a .npy, decompressed row block by row block from an .npz member (never
beyond the last clip the metric uses), decoded from a video. Clips are numbered in natural file
order, so slices are reproducible.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Iterator, List, NamedTuple, Optional, Tuple

import numpy as np

from vfbench.arrays import ZIP_ERRORS, ArrayFileError, Header, npy_header, npz_headers, npz_row_reader
from vfbench.errors import DataError, UsageError

SHARD_EXTS = (".npy", ".npz")
CLIP_SCALE = 256  # a stored clip may hold this many times the protocol clip's pixels (crop/resize/cut)
MAX_CLIPS_PER_FILE = 10**9  # as vfbench sample --num


def clip_limit_bytes(frames: int, size: int) -> int:
    """The most bytes one stored uint8 clip may declare for a metric of ``frames`` x ``size`` x ``size``."""
    return CLIP_SCALE * int(frames) * 3 * int(size) * int(size)


def natural_key(p: Path):
    return [(0, int(s), "") if s.isdigit() else (1, 0, s.lower()) for s in re.split(r"(\d+)", p.name) if s]


def long_video_length(samples_dir: Path) -> Optional[int]:
    """The ``length`` of a ``vfbench sample --length`` set (from its manifest), else None."""
    from vfbench.readback import json_object_or_none

    mpath = Path(samples_dir) / "manifest.json"
    info = json_object_or_none(mpath, "samples manifest", warn=False) if mpath.is_file() else None
    length = (info or {}).get("length")
    return length if isinstance(length, int) and not isinstance(length, bool) else None


def stored_clip_size(path) -> Optional[Tuple[int, int]]:
    """(H, W) of the first clip of a samples folder as stored (a shard's header, a video's first frame),
    without reading any clip; None when it cannot be told (the folder's own checks then name the problem)."""
    from vfbench.errors import VfbenchError

    path = Path(path)
    if not path.is_dir():
        return None
    files = sorted((p for p in path.iterdir() if not p.name.startswith(".")), key=natural_key)
    try:
        for p in files:
            if p.suffix == ".npy":
                head = npy_header(p)
            elif p.suffix == ".npz":
                heads = sorted(npz_headers(p))
                if not heads:
                    continue
                head = heads[0][1]
            else:
                continue
            shape = tuple(head.shape)
            if head.dtype != np.uint8 or len(shape) != 5 or shape[2] not in (1, 3):
                return None  # a malformed shard: SampleFolder's checks say what is wrong
            return int(shape[3]), int(shape[4])
        from vfbench.data.video_io import is_video_file, list_frame_files, read_frames

        for p in files:
            if is_video_file(p) or (p.is_dir() and list_frame_files(p)):
                frame = read_frames(p, [0])
                return int(frame.shape[1]), int(frame.shape[2])
    except (VfbenchError, ArrayFileError, ValueError, OSError) + ZIP_ERRORS:
        return None
    return None


class Entry(NamedTuple):
    path: Path
    kind: str  # "npy" | "npz" | "video"
    key: Optional[str]  # the .npz member
    count: int
    header: Optional[Header]


class SampleFolder:
    """A folder of generated clips: ``.npy``/``.npz`` uint8 shards ``[n, T, C, H, W]`` or video files."""

    def __init__(self, path, frames: int = 16, size: int = 128):
        self.path = Path(path)
        if not self.path.is_dir():
            raise DataError(f"samples folder {self.path} does not exist; run `vfbench sample RUN --num N` or"
                            " pass an existing folder of .npy shards or videos to --samples")
        self.frames, self.size = frames, size
        self.clip_limit = clip_limit_bytes(frames, size)
        length = long_video_length(self.path)
        if length is not None and length > frames:
            raise UsageError(f"{self.path} holds {length}-frame long videos (vfbench sample --length) but this metric"
                             f" scores {frames}-frame clips and would see only their first {frames}; evaluate a"
                             f" sample set drawn without --length (or with --length {frames}) instead")
        files = sorted((p for p in self.path.iterdir() if not p.name.startswith(".")), key=natural_key)
        self.entries: List[Entry] = []
        for p in files:
            if p.suffix == ".npy":
                h = self._checked(p, None, self._header(p, npy_header))
                self.entries.append(Entry(p, "npy", None, h.shape[0], h))
            elif p.suffix == ".npz":
                for key, h in sorted(self._header(p, npz_headers)):
                    self.entries.append(Entry(p, "npz", key, self._checked(p, key, h).shape[0], h))
        if not self.entries:
            from vfbench.data.video_io import is_video_file, list_frame_files

            for p in files:
                if is_video_file(p) or (p.is_dir() and list_frame_files(p)):
                    self.entries.append(Entry(p, "video", None, 1, None))
        if not self.entries:
            raise DataError(f"samples folder {self.path} holds no .npy/.npz shards or videos; run"
                            " `vfbench sample RUN --num N` or point --samples at a folder of generated clips")

    # -- headers ----------------------------------------------------------------------------
    @staticmethod
    def _header(p: Path, read):
        try:
            return read(p)
        except ArrayFileError as exc:
            raise DataError(f"sample file {p} cannot be read: {exc}; delete it or re-create the samples") from None
        except (ValueError,) + ZIP_ERRORS as exc:
            raise DataError(f"sample file {p} cannot be read ({exc}); it is truncated or not a .npy/.npz array:"
                            " delete it and re-create the samples") from None

    def _checked(self, p: Path, key: Optional[str], h: Header) -> Header:
        """The header of a shard (or .npz member), or a DataError naming the file and the fix."""
        where = f"{p}" + (f" (member {key})" if key else "")
        shape = tuple(h.shape)
        if h.dtype != np.uint8 or len(shape) != 5:
            raise DataError(f"sample shard {where} holds {h.dtype} of shape {shape}; shards must be uint8"
                            " [n, T, C, H, W] (convert floats in [-1, 1] with (x + 1) * 127.5 rounded)")
        if shape[2] not in (1, 3):
            hint = " (it looks channels-last: transpose to [n, T, C, H, W])" if shape[-1] in (1, 3) else ""
            raise DataError(f"sample shard {where} has shape {shape}: dimension 2 must be the 3 colour channels{hint}")
        clip = math.prod(shape[1:])
        if clip > self.clip_limit:
            raise DataError(f"sample shard {where} declares clips of {list(shape[1:])} ({clip:,} bytes each), more"
                            f" than the {self.clip_limit:,} bytes a {self.frames} x {self.size} x {self.size} metric"
                            " can use per clip; it is corrupt or not meant for this metric: re-create the samples")
        if shape[0] > MAX_CLIPS_PER_FILE:
            raise DataError(f"sample shard {where} declares {shape[0]:,} clips, more than the {MAX_CLIPS_PER_FILE:,}"
                            " vfbench can index; split it into several shards")
        if shape[1] < self.frames:
            raise DataError(f"sample shard {where} holds clips of {shape[1]} frames but the metric needs {self.frames};"
                            f" generate clips of at least {self.frames} frames (train the run with --frames"
                            f" {self.frames})")
        return h

    # -- the folder -------------------------------------------------------------------------
    def __len__(self) -> int:
        return sum(e.count for e in self.entries)

    def clip_shape(self) -> List[int]:
        """[T, C, H, W] of the first clip as stored (videos: after reading at the protocol size)."""
        first = self.entries[0]
        if first.header is not None:
            return [int(v) for v in first.header.shape[1:]]
        return [int(v) for v in self._read_video(first.path).shape[1:]]

    def describe(self):
        kinds = sorted({e.kind for e in self.entries})
        t, c, h, w = self.clip_shape()
        fit = []
        if t > self.frames:
            fit.append(f"first {self.frames} of {t} frames")
        if (h, w) != (self.size, self.size):
            fit.append(f"{h}x{w} -> centre square crop, antialiased bilinear resize to {self.size}x{self.size}")
        return {"path": str(self.path), "count": len(self), "files": len({e.path for e in self.entries}),
                "format": "+".join(kinds), "clip_shape": [t, c, h, w], "fit": "; ".join(fit) or "none"}

    # -- reading ----------------------------------------------------------------------------
    def _blocks(self, e: Entry, lo: int, hi: int, step: int) -> Iterator[np.ndarray]:
        """Clips ``lo..hi-1`` of one entry, in writable blocks of at most ``step`` clips."""
        if e.kind == "video":
            yield self._read_video(e.path)
            return
        try:
            if e.kind == "npy":
                arr = np.load(e.path, mmap_mode="r", allow_pickle=False)  # the header was checked: maps, no copy
                for i in range(lo, hi, step):
                    yield np.array(arr[i:min(i + step, hi)])  # a writable copy of one block
            else:
                yield from npz_row_reader(e.path, e.key, e.header)(lo, hi, step)
        except ArrayFileError as exc:
            raise DataError(f"sample file {e.path} cannot be read: {exc}; delete it or re-create the samples") from None
        except (ValueError,) + ZIP_ERRORS as exc:
            raise DataError(f"sample file {e.path} cannot be read ({exc}); delete it or re-create the samples") from None

    def _read_video(self, p: Path) -> np.ndarray:
        from vfbench.data.video_io import count_frames, load_clip

        n = count_frames(p)
        if n < self.frames:
            raise DataError(f"generated video {p} has {n} frames but the metric needs {self.frames};"
                            f" generate videos of at least {self.frames} frames")
        clip = load_clip(p, list(range(self.frames)), self.size)
        return clip.numpy()[None]

    def iter_clips(self, start: int, stop: int, batch_size: int) -> Iterator[np.ndarray]:
        """uint8 batches of clips ``start..stop-1`` (in file order)."""
        buf, have, pos = [], 0, 0
        for e in self.entries:
            lo, hi = max(start, pos), min(stop, pos + e.count)
            if lo < hi:
                for block in self._blocks(e, lo - pos, hi - pos, batch_size):
                    buf.append(block)
                    have += len(block)
                    while have >= batch_size:
                        cat = np.concatenate(buf) if len(buf) > 1 else buf[0]
                        yield cat[:batch_size]
                        rest = cat[batch_size:]
                        buf, have = ([rest] if len(rest) else []), len(rest)
            pos += e.count
            if pos >= stop:
                break
        if have:
            yield np.concatenate(buf) if len(buf) > 1 else buf[0]
