"""``vfbench data prepare``: a frame-count index and an optional pre-decoded uint8 frame cache.

Both live in ``<dataset root>/vfbench-prepared/`` (or ``--out DIR``, then pass ``prepared=DIR`` to
the dataset) and the folder datasets use them automatically when present:

* ``<name>-<split>.index.json``: every discovered source (path relative to the root, frame count
  or the reason it cannot be read, its size and mtime), the class names, and the files a clip of
  the given frames/stride would skip, with reasons. A dataset reuses an entry only while the
  file's size and mtime are unchanged, so an edited folder is never served stale counts.
* ``<name>-<split>-<size>px.frames.u8`` + ``<name>-<split>-<size>px.complete.json``: every frame
  of every readable source at the protocol size (center crop + anti-aliased resize, exactly as
  ``video_io.load_clip`` computes it), as one raw uint8 array ``[total_frames, 3, size, size]``
  read with ``numpy.memmap``; the JSON holds the shape, byte count and per-source offsets. The
  JSON is the completion marker: it is deleted before a rebuild starts and written (atomically)
  only after the frame file is complete, so an interrupted prepare is never mistaken for a
  finished one. Reading a clip from the cache is a memory-mapped slice instead of a decode.

Source: the interface follows DESIGN.md "Datasets" and issue 2, item 6.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from vfbench.atomic import atomic_write, atomic_write_json
from vfbench.data.video_io import DataWarning, user_stacklevel
from vfbench.errors import DataError, UsageError
from vfbench.readback import json_object_or_none

PREPARED_DIR = "vfbench-prepared"
INDEX_VERSION = 1
CACHE_VERSION = 1
_DECODE_CHUNK = 64  # frames decoded at a time while caching: bounds memory for long videos


def file_signature(path: Path) -> Tuple[int, int]:
    """(size, mtime_ns) of a file or frame folder: what makes an index or cache entry stale."""
    st = path.stat()
    return (int(st.st_size) if path.is_file() else -1, int(st.st_mtime_ns))


def index_path(prepared_dir: Path, name: str, split: str) -> Path:
    return Path(prepared_dir) / f"{name}-{split}.index.json"


def cache_paths(prepared_dir: Path, name: str, split: str, size: int) -> Tuple[Path, Path]:
    stem = f"{name}-{split}-{size}px"
    return Path(prepared_dir) / f"{stem}.frames.u8", Path(prepared_dir) / f"{stem}.complete.json"


# -- reading (used by the datasets) ------------------------------------------------------------
def load_index_counts(prepared_dir: Path, name: str, splits: List[str]) -> Dict[str, dict]:
    """rel path -> index entry ({"frames", "error", "size", "mtime_ns"}) from the first index found."""
    for split in splits:
        path = index_path(prepared_dir, name, split)
        if path.is_file():
            fix = f"rerun `vfbench data prepare {name}` to rebuild it"
            data = json_object_or_none(path, "dataset index", fix)
            if data is None or data.get("version") != INDEX_VERSION or data.get("dataset") != name:
                return {}
            entries = data.get("entries")
            good = isinstance(entries, list) and all(
                isinstance(e, dict) and isinstance(e.get("path"), str)
                and (isinstance(e.get("frames"), int) or isinstance(e.get("error"), str)) for e in entries)
            if not good:  # counts from a damaged index would be trusted over the files themselves
                warnings.warn(f"skipping dataset index {path}: its entries are not [{{path, frames | error}}]; {fix}",
                              DataWarning, stacklevel=user_stacklevel())
                return {}
            return {e["path"]: e for e in entries}
    return {}


@dataclass
class FrameCache:
    """A complete pre-decoded cache: ``offsets[rel] = (start, count, size, mtime_ns)``."""

    frames_file: Path
    shape: Tuple[int, int, int, int]
    offsets: Dict[str, Tuple[int, int, int, int]]
    _array: Optional[np.memmap] = None

    @property
    def array(self) -> np.memmap:
        if self._array is None:  # opened lazily: each DataLoader worker maps the file itself
            self._array = np.memmap(self.frames_file, dtype=np.uint8, mode="r", shape=self.shape)
        return self._array

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_array"] = None  # never pickle the mapped bytes into a worker
        return state

    def lookup(self, rel: str, signature: Tuple[int, int]) -> Optional[Tuple[int, int]]:
        """(start, count) of an unchanged source, else None."""
        hit = self.offsets.get(rel)
        if hit is None or (hit[2], hit[3]) != tuple(signature):
            return None
        return hit[0], hit[1]

    def read(self, start: int, indices) -> np.ndarray:
        """uint8 [n, 3, size, size] frames ``indices`` of the source cached at ``start``."""
        return np.array(self.array[[start + int(i) for i in indices]])


def open_cache(prepared_dir: Path, name: str, splits: List[str], size: int) -> Optional[FrameCache]:
    """The first complete cache of ``splits`` at ``size`` (a missing or torn one is ignored)."""
    for split in splits:
        frames_file, marker = cache_paths(prepared_dir, name, split, size)
        if not marker.is_file():
            continue
        meta = json_object_or_none(marker, "frame cache marker", f"rerun `vfbench data prepare {name} --cache`")
        if meta is None:
            continue
        raw = meta.get("shape")
        shape = tuple(raw) if isinstance(raw, list) and all(type(v) is int and v >= 0 for v in raw) else ()
        expected = math.prod(shape) if len(shape) == 4 else -1  # Python ints: a crafted shape cannot overflow
        offsets_ok = isinstance(meta.get("offsets"), dict) and all(
            isinstance(v, list) and len(v) == 4 and all(type(x) is int for x in v) and 0 <= v[0]
            and 0 < v[1] and len(shape) == 4 and v[0] + v[1] <= shape[0] for v in meta["offsets"].values())
        ok = (meta.get("version") == CACHE_VERSION and len(shape) == 4 and shape[1:] == (3, size, size)
              and offsets_ok and frames_file.is_file() and frames_file.stat().st_size == expected == meta.get("bytes"))
        if not ok:
            warnings.warn(f"frame cache {marker} does not match {frames_file}; ignoring it"
                          f" (rerun `vfbench data prepare {name} --cache` to rebuild it)", DataWarning,
                          stacklevel=user_stacklevel())
            continue
        offsets = {rel: tuple(int(v) for v in off) for rel, off in meta["offsets"].items()}
        return FrameCache(frames_file, shape, offsets)
    return None


# -- building (the `vfbench data prepare` command) ----------------------------------------------
def prepare(name: str, source, split: str = "all", frames: int = 16, stride: Optional[int] = None,
            cache: bool = False, size: int = 64, out=None,
            progress: Optional[Callable[[str], None]] = None) -> dict:
    """Index (and with ``cache=True`` pre-decode) dataset ``name`` under ``source``; returns a summary."""
    from vfbench.data.clip_sampling import ClipSampling
    from vfbench.data.folders import VideoFolderDataset
    from vfbench.data.video_io import count_frames, read_frames, center_crop_resize
    from vfbench.registry import DATASETS

    cls = DATASETS.get(name)
    if not (isinstance(cls, type) and issubclass(cls, VideoFolderDataset)):
        raise UsageError(f"dataset {name!r} is not read from a folder, so there is nothing to prepare;"
                         " use it directly")
    say = progress or (lambda msg: None)
    root = cls.resolve_root(source)
    if split not in cls.splits:
        raise UsageError(f"{name} has splits {', '.join(cls.splits)}; got --split {split!r}")
    sampling = ClipSampling(int(frames), int(stride or cls.default_stride), "first", 0)
    items, classes = cls.discover(root, split)
    out_dir = Path(out) if out is not None else root / PREPARED_DIR

    entries, skipped = [], []
    t0 = time.monotonic()
    for k, item in enumerate(items):
        path = root / item.path
        entry = {"path": item.path, "label": item.label, "content": item.content, "motion": item.motion,
                 "frames": None, "error": None}
        try:
            entry["size"], entry["mtime_ns"] = file_signature(path)
            entry["frames"] = count_frames(path)
        except (DataError, OSError) as exc:
            entry["error"] = str(exc)
            skipped.append({"path": item.path, "reason": f"unreadable: {exc}"})
        else:
            if not sampling.fits(entry["frames"]):
                skipped.append({"path": item.path, "reason": f"too short: {entry['frames']} frames, a clip of"
                                f" {sampling.frames} at stride {sampling.stride} needs {sampling.span}"})
        entries.append(entry)
        if (k + 1) % 100 == 0:
            say(f"indexed {k + 1}/{len(items)} sources")
    index = {"version": INDEX_VERSION, "dataset": name, "split": split, "root": str(root),
             "classes": classes, "clip": sampling.describe(), "entries": entries, "skipped": skipped,
             "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    idx_file = index_path(out_dir, name, split)
    atomic_write_json(idx_file, index)
    readable = [e for e in entries if e["frames"] is not None]
    summary = {"dataset": name, "split": split, "root": str(root), "index": str(idx_file),
               "sources": len(entries), "readable": len(readable), "skipped": len(skipped),
               "total_frames": int(sum(e["frames"] for e in readable)), "index_seconds": time.monotonic() - t0}
    say(f"indexed {len(entries)} sources ({len(readable)} readable, {len(skipped)} skipped) -> {idx_file}")
    if not cache:
        return summary

    frames_file, marker = cache_paths(out_dir, name, split, int(size))
    if marker.exists():
        marker.unlink()  # from here until the new marker exists, the old cache is invalid
    offsets: Dict[str, list] = {}
    cursor = 0
    t1 = time.monotonic()
    frame_bytes = 3 * int(size) * int(size)
    with atomic_write(frames_file, "wb") as fh:
        for k, entry in enumerate(readable):
            path = root / entry["path"]
            try:
                for first in range(0, entry["frames"], _DECODE_CHUNK):
                    ids = range(first, min(first + _DECODE_CHUNK, entry["frames"]))
                    fh.write(center_crop_resize(read_frames(path, ids), int(size)).numpy().tobytes())
            except DataError as exc:
                fh.seek(cursor * frame_bytes)  # drop this source's partial frames
                fh.truncate()
                skipped.append({"path": entry["path"], "reason": f"not cached: {exc}"})
                continue
            offsets[entry["path"]] = [cursor, entry["frames"], entry["size"], entry["mtime_ns"]]
            cursor += entry["frames"]
            if (k + 1) % 20 == 0:
                say(f"cached {k + 1}/{len(readable)} sources ({cursor} frames)")
    shape = [cursor, 3, int(size), int(size)]
    atomic_write_json(marker, {"version": CACHE_VERSION, "dataset": name, "split": split, "size": int(size),
                               "shape": shape, "bytes": int(np.prod(shape)), "frames_file": frames_file.name,
                               "offsets": offsets, "protocol_resize": "center square crop + bilinear antialias"})
    if len(offsets) != len(readable):  # record decode failures found while caching
        index["skipped"] = skipped
        atomic_write_json(idx_file, index)
    summary.update(cache=str(frames_file), cached_sources=len(offsets), cached_frames=cursor,
                   cache_bytes=int(np.prod(shape)), cache_seconds=time.monotonic() - t1, skipped=len(skipped))
    say(f"cached {len(offsets)} sources, {cursor} frames at {size}x{size} -> {frames_file}")
    return summary

