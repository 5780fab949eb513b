"""``vfbench data prepare``: check every source as training decodes it, index it, optionally cache its frames.

Both files live in the cache directory, ``<cache>/prepared/<name>-<hash of the dataset root>/``
(``VFBENCH_CACHE``, else the user cache dir; never inside the user's data folder), or in ``--out DIR``
(then pass ``prepared=DIR`` to the dataset). The folder datasets find the default location by
themselves (and still read an older ``<root>/vfbench-prepared/`` when there is one):

* ``<name>-<split>.index.json``: every discovered source (path relative to the root, frame count
  or the reason it cannot be used, its size and mtime), the class names, and the sources a clip of
  the given frames/stride skips, with reasons. Each source is counted once: usable, too short or
  unreadable. ``prepare`` decodes every frame of every source, exactly as training reads it (frame
  folders: each image decoded, all of one size; videos: every frame), so a source that training
  would fail on is marked unreadable here, not found mid-training. A dataset reuses an entry only
  while the file's size and mtime are unchanged, so an edited folder is never served stale counts.
* ``<name>-<split>-<size>px.frames.u8`` + ``<name>-<split>-<size>px.complete.json``: every frame
  of every readable source at the protocol size (center crop + anti-aliased resize, exactly as
  ``video_io.load_clip`` computes it), as one raw uint8 array ``[total_frames, 3, size, size]``
  read with ``numpy.memmap``; the JSON holds the shape, byte count and per-source offsets. The
  JSON is the completion marker: it is deleted before a rebuild starts and written (atomically)
  only after the frame file is complete, so an interrupted prepare is never mistaken for a
  finished one. Reading a clip from the cache is a memory-mapped slice instead of a decode.

Source: the interface follows DESIGN.md "Datasets" and issue 2, item 6; the location and the full
decode follow issue 16.
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


def default_prepared_dir(name: str, root: Path) -> Path:
    """Where ``vfbench data prepare NAME --source ROOT`` writes by default: under the cache directory, in a
    folder keyed by the dataset root's absolute path (two copies of a dataset never share an index)."""
    import hashlib

    from vfbench.results import default_cache_dir

    key = hashlib.sha256(str(Path(root).expanduser().resolve()).encode("utf-8")).hexdigest()[:16]
    return default_cache_dir() / "prepared" / f"{name}-{key}"


def find_prepared_dir(name: str, root: Path) -> Path:
    """The prepared folder a dataset reads: the default one, else an older ``<root>/vfbench-prepared``."""
    default = default_prepared_dir(name, root)
    legacy = Path(root) / PREPARED_DIR
    return legacy if not default.is_dir() and legacy.is_dir() else default


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
def _decode_all(path: Path, n: int, read_frames, each_chunk) -> None:
    """Decode every frame of a source in chunks, as training decodes it; ``each_chunk(frames)`` sees them."""
    for first in range(0, n, _DECODE_CHUNK):
        each_chunk(read_frames(path, range(first, min(first + _DECODE_CHUNK, n))))


def prepare(name: str, source, split: str = "all", frames: int = 16, stride: Optional[int] = None,
            cache: bool = False, size: int = 64, out=None,
            progress: Optional[Callable[[str], None]] = None) -> dict:
    """Check (decode), index and with ``cache=True`` pre-decode dataset ``name`` under ``source``; returns
    a summary in which every source is counted once: ``usable + too_short + unreadable == sources``."""
    import contextlib

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
    out_dir = Path(out) if out is not None else default_prepared_dir(name, root)
    frames_file, marker = cache_paths(out_dir, name, split, int(size))
    if cache and marker.exists():
        marker.unlink()  # from here until the new marker exists, the old cache is invalid

    entries, skipped, offsets = [], [], {}
    cursor, frame_bytes = 0, 3 * int(size) * int(size)
    t0 = time.monotonic()
    with (atomic_write(frames_file, "wb") if cache else contextlib.nullcontext()) as fh:
        for k, item in enumerate(items):
            path = root / item.path
            entry = {"path": item.path, "label": item.label, "content": item.content, "motion": item.motion,
                     "frames": None, "error": None}
            try:
                entry["size"], entry["mtime_ns"] = file_signature(path)
                n = count_frames(path)
                write = (lambda x: fh.write(center_crop_resize(x, int(size)).numpy().tobytes())) if cache else \
                    (lambda x: None)
                _decode_all(path, n, read_frames, write)
            except (DataError, OSError) as exc:
                if cache:
                    fh.seek(cursor * frame_bytes)  # drop this source's partial frames
                    fh.truncate()
                entry["error"] = str(exc)
                skipped.append({"path": item.path, "reason": f"unreadable: {exc}"})
            else:
                entry["frames"] = n
                if cache:
                    offsets[item.path] = [cursor, n, entry["size"], entry["mtime_ns"]]
                    cursor += n
                if not sampling.fits(n):
                    skipped.append({"path": item.path, "reason": f"too short: {n} frames, a clip of"
                                    f" {sampling.frames} at stride {sampling.stride} needs {sampling.span}"})
            entries.append(entry)
            if (k + 1) % 20 == 0:
                say(f"checked {k + 1}/{len(items)} sources")
    index = {"version": INDEX_VERSION, "dataset": name, "split": split, "root": str(root),
             "classes": classes, "clip": sampling.describe(), "entries": entries, "skipped": skipped,
             "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    idx_file = index_path(out_dir, name, split)
    atomic_write_json(idx_file, index)
    readable = [e for e in entries if e["frames"] is not None]
    unreadable = len(entries) - len(readable)
    too_short = len(skipped) - unreadable
    summary = {"dataset": name, "split": split, "root": str(root), "index": str(idx_file), "out": str(out_dir),
               "sources": len(entries), "usable": len(readable) - too_short, "too_short": too_short,
               "unreadable": unreadable, "skipped": len(skipped),
               "total_frames": int(sum(e["frames"] for e in readable)), "index_seconds": time.monotonic() - t0}
    say(f"checked {len(entries)} sources ({summary['usable']} usable, {too_short} too short, {unreadable}"
        f" unreadable) -> {idx_file}")
    if not cache:
        return summary
    shape = [cursor, 3, int(size), int(size)]
    atomic_write_json(marker, {"version": CACHE_VERSION, "dataset": name, "split": split, "size": int(size),
                               "shape": shape, "bytes": int(np.prod(shape)), "frames_file": frames_file.name,
                               "offsets": offsets, "protocol_resize": "center square crop + bilinear antialias"})
    summary.update(cache=str(frames_file), cached_sources=len(offsets), cached_frames=cursor,
                   cache_bytes=int(np.prod(shape)))
    say(f"cached {len(offsets)} sources, {cursor} frames at {size}x{size} -> {frames_file}")
    return summary
