"""Real video datasets read from local folders, in the field's layouts (DESIGN.md "Datasets").

================  ==============================================================================
``taichi``        ``<root>/train/`` and ``<root>/test/``: ``.mp4`` videos or one folder of frames
                  per video; clips of 16 frames at stride 4 (the TaiChi-HD protocol).
``ucf101``        ``<root>/UCF-101/<Class>/v_<Class>_gXX_cYY.avi`` and
                  ``<root>/ucfTrainTestlist/{classInd,trainlist0F,testlist0F}.txt``; 101 class
                  labels (classInd is 1-based, labels are 0-based); ``split="all"`` = train + test
                  (customary for generation); ``fold=1..3``.
``sky``           ``<root>/sky_train/<video>/<clip>/*.jpg`` and ``sky_test/`` (also accepted under
                  ``<root>/sky_timelapse/``); every clip folder is one source.
``weizmann``      ``<person>_<action>.avi`` anywhere under ``<root>``: content = person, motion =
                  action, label = action. ``run1``/``run2`` style repeats map to one action, while
                  ``wave1``/``wave2`` stay distinct actions. No official split: ``all`` (= ``train``).
``folder``        any folder, recursively: every video file and every folder holding frames is a
                  source, unlabelled; ``split`` selects ``<root>/<split>/`` when it exists.
================  ==============================================================================

The root is ``data_root`` (``--data-root``), else ``$VFBENCH_DATA/<name>``. At construction the
dataset lists its sources (cheap), takes frame counts from a ``vfbench data prepare`` index when
one is present and still valid (else from decord's index, without decoding, and for frame folders
from every frame's image header: a file that is no image or a frame of another size makes the
folder unreadable, as training's decode would), and skips sources
that are unreadable or shorter than the clip with ONE counted warning. Clips come from the
pre-decoded frame cache when one is complete, else from decoding; a source that still fails to
decode inside ``__getitem__`` is replaced by the next readable item (deterministic) and counted
in ``decode_failures``.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Dict, List, Optional, Tuple

import torch

from vfbench.data.clip_sampling import ClipSampling
from vfbench.data.prepare import (PREPARED_DIR, file_signature, find_prepared_dir, load_index_counts,
                                  open_cache)
from vfbench.data.video_io import (IMAGE_EXTS, DataWarning, center_crop_resize, count_frames, is_video_file,
                                   natural_key, read_frames, user_stacklevel)
from vfbench.errors import DataError, UsageError, check_positive
from vfbench.registry import DATASETS

DATA_ENV = "VFBENCH_DATA"
_MAX_FALLBACKS = 16  # consecutive undecodable items before __getitem__ gives up


SKIPPED_SHOWN = 10  # skipped sources listed in the scan's warning; `vfbench data info` lists all


@dataclass(frozen=True)
class VideoItem:
    """One source (video file or frame folder), its path relative to the dataset root, its labels."""

    path: str
    label: int = -1
    content: int = -1
    motion: int = -1


def _has_frames(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_EXTS and p.is_file() for p in folder.iterdir())


def _sources_in(folder: Path, root: Path) -> List[VideoItem]:
    """Video files and frame folders directly inside ``folder`` (one level), naturally sorted."""
    found = []
    for child in sorted(folder.iterdir(), key=lambda p: natural_key(p.name)):
        if child.name.startswith(".") or child.name == PREPARED_DIR:
            continue
        if is_video_file(child) or (child.is_dir() and _has_frames(child)):
            found.append(VideoItem(child.relative_to(root).as_posix()))
    return found


class VideoFolderDataset(torch.utils.data.Dataset):
    """Shared machinery: root resolution, indexing, skipping, clip loading, the frame cache."""

    name: ClassVar[str] = "folder"
    splits: ClassVar[Tuple[str, ...]] = ("all", "train", "test")
    default_stride: ClassVar[int] = 1
    layout: ClassVar[str] = "a folder of videos (.mp4/.avi/...) or folders of frames (.png/.jpg), at any depth"
    official_source: ClassVar[str] = "your own videos"

    def __init__(self, split: str = "train", frames: int = 16, size: int = 64, data_root=None,
                 stride: Optional[int] = None, seed: int = 0, sampling: str = "random",
                 prepared: Optional[str] = None, use_cache: bool = True):
        if split not in self.splits:
            raise UsageError(f"{self.name} has splits {', '.join(self.splits)}; got split={split!r}")
        check_positive("--size", size)
        self.split, self.size, self.seed = split, int(size), int(seed)
        self.sampling = ClipSampling(int(frames), int(stride or self.default_stride), sampling, int(seed))
        self.root = self.resolve_root(data_root)
        self.prepared_dir = Path(prepared) if prepared is not None else find_prepared_dir(self.name, self.root)
        found, self.classes = self._discover()
        self.num_classes = len(self.classes)
        self.items, self.frame_counts, self.skipped = self._index(found)
        self.cache = open_cache(self.prepared_dir, self.name, [split, "all"], self.size) if use_cache else None
        self.epoch = 0
        self.decode_failures = 0
        self._bad: Dict[int, str] = {}

    # -- layout ----------------------------------------------------------------------------
    @classmethod
    def _missing(cls, where: Path, what: str) -> DataError:
        return DataError(f"{cls.name}: {what} {where}; expected layout: {cls.layout}. The data is not bundled:"
                         f" download it yourself ({cls.official_source}) and pass its folder with --data-root"
                         f" or set {DATA_ENV} so that ${DATA_ENV}/{cls.name} is that folder")

    @classmethod
    def resolve_root(cls, data_root=None) -> Path:
        """``data_root``, else ``$VFBENCH_DATA/<name>``; it must be an existing folder."""
        if data_root is None:
            env = os.environ.get(DATA_ENV)
            if not env:
                raise DataError(f"{cls.name}: no data folder given; pass --data-root DIR (or data_root=) or set"
                                f" {DATA_ENV} so that ${DATA_ENV}/{cls.name} holds {cls.layout}."
                                f" The data is not bundled: download it yourself ({cls.official_source})")
            data_root = Path(env) / cls.name
        root = Path(data_root).expanduser()
        if not root.is_dir():
            raise cls._missing(root, "no such folder")
        return root

    @classmethod
    def discover(cls, root: Path, split: str) -> Tuple[List[VideoItem], List[str]]:
        """(sources of ``split``, class names) from the folder layout only: nothing is decoded."""
        base = root / split if (root / split).is_dir() else root
        if base is root and split not in ("all", "train"):
            raise cls._missing(root / split, "no split folder")
        items = []
        for dirpath, dirnames, filenames in os.walk(base):
            here = Path(dirpath)
            dirnames[:] = sorted((d for d in dirnames if not d.startswith(".") and d != PREPARED_DIR),
                                 key=natural_key)
            if any(Path(f).suffix.lower() in IMAGE_EXTS for f in filenames):
                items.append(VideoItem(here.relative_to(root).as_posix()))
                dirnames[:] = []  # a frame folder is one source; do not descend into it
                continue
            for f in sorted(filenames, key=natural_key):
                if is_video_file(here / f):
                    items.append(VideoItem((here / f).relative_to(root).as_posix()))
        if not items:
            raise cls._missing(base, "found no videos or frame folders in")
        return items, []

    def _discover(self) -> Tuple[List[VideoItem], List[str]]:
        return self.discover(self.root, self.split)

    # -- index -----------------------------------------------------------------------------
    def _index(self, found: List[VideoItem]):
        known = load_index_counts(self.prepared_dir, self.name, [self.split, "all"])
        items, counts, skipped = [], [], []
        for item in found:
            path = self.root / item.path
            try:
                sig = file_signature(path)
                entry = known.get(item.path)
                if entry is not None and (entry.get("size"), entry.get("mtime_ns")) == sig:
                    if entry.get("error"):
                        raise DataError(entry["error"])
                    n = int(entry["frames"])
                else:
                    n = count_frames(path)
            except (DataError, OSError) as exc:
                skipped.append((item.path, "unreadable", str(exc)))
                continue
            if not self.sampling.fits(n):
                skipped.append((item.path, "too short", f"{n} frames, the clip needs {self.sampling.span}"))
                continue
            items.append(item)
            counts.append(n)
        if not items:
            first = skipped[0] if skipped else ("?", "", "")
            raise DataError(f"{self.name} {self.split}: none of the {len(found)} sources in {self.root} is usable"
                            f" (e.g. {first[0]}: {first[1]}, {first[2]}); a clip of {self.sampling.frames} frames at"
                            f" stride {self.sampling.stride} needs {self.sampling.span} readable frames per source")
        if skipped:
            kinds = {}
            for _, kind, _ in skipped:
                kinds[kind] = kinds.get(kind, 0) + 1
            what = ", ".join(f"{v} {k}" for k, v in sorted(kinds.items()))
            shown = SKIPPED_SHOWN if len(skipped) > SKIPPED_SHOWN + 1 else len(skipped)
            lines = [f"  {p}: {k}: {why}" for p, k, why in skipped[:shown]]  # full reasons, one line each
            if len(skipped) > shown:
                lines.append(f"  ... and {len(skipped) - shown} more: `vfbench data info {self.name}"
                             f" --data-root {self.root} --split {self.split}` lists them all")
            warnings.warn("\n".join([f"{self.name} {self.split}: skipped {len(skipped)} of {len(found)} sources"
                                     f" ({what}):"] + lines), DataWarning, stacklevel=user_stacklevel())
        return items, counts, skipped

    # -- torch Dataset ---------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """New random windows each epoch (``sampling.mode == "random"``), still deterministic."""
        self.epoch = int(epoch)

    def load(self, index: int) -> torch.Tensor:
        """uint8 [T, 3, size, size] clip of item ``index`` (cache first, else decode)."""
        item = self.items[index]
        path = self.root / item.path
        ids = self.sampling.indices(self.frame_counts[index], index, self.epoch, source=str(path))
        if self.cache is not None:
            try:
                hit = self.cache.lookup(item.path, file_signature(path))
            except OSError:
                hit = None
            if hit is not None and hit[1] == self.frame_counts[index]:
                return torch.from_numpy(self.cache.read(hit[0], ids))
        return center_crop_resize(read_frames(path, ids), self.size)

    def __getitem__(self, index: int) -> dict:
        n = len(self.items)
        if not -n <= index < n:
            raise IndexError(f"{self.name} {self.split} has {n} clips, index {index} is out of range")
        index = int(index) % n
        first_error = None
        for step in range(min(n, _MAX_FALLBACKS)):
            j = (index + step) % n  # deterministic fallback: the next item
            if j in self._bad:
                continue
            try:
                video = self.load(j)
            except (DataError, OSError, RuntimeError) as exc:
                self._bad[j] = str(exc)
                self.decode_failures += 1
                first_error = first_error or str(exc)
                warnings.warn(f"{self.name}: {self.items[j].path} failed to decode ({str(exc)[:160]}); using the"
                              f" next item instead ({self.decode_failures} failure(s) so far)", DataWarning,
                              stacklevel=user_stacklevel())
                continue
            item = self.items[j]
            return {"video": video, "label": item.label, "content": item.content, "motion": item.motion,
                    "index": j}
        raise DataError(f"{self.name}: {_MAX_FALLBACKS} consecutive sources from item {index} failed to decode"
                        f" ({first_error}); run `vfbench data prepare {self.name} --source {self.root}` to find them")

    def describe(self) -> dict:
        return {"name": self.name, "split": self.split, "root": str(self.root), "frames": self.sampling.frames,
                "size": self.size, "clip_sampling": self.sampling.describe(), "count": len(self.items),
                "skipped": len(self.skipped), "num_classes": self.num_classes,
                "frame_cache": str(self.cache.frames_file) if self.cache is not None else None,
                "protocol_resize": "center square crop + bilinear antialias"}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, n={len(self.items)})"


@DATASETS.register("folder", description="any folder of videos (mp4/avi) or frame folders (png/jpg)")
class FolderDataset(VideoFolderDataset):
    """Any folder of videos or frame folders, recursively; unlabelled."""


@DATASETS.register("taichi", description="TaiChi-HD from a local folder (train/ test/), 16 frames at stride 4")
class TaiChiDataset(VideoFolderDataset):
    name = "taichi"
    default_stride = 4
    layout = "<root>/train/ and <root>/test/ holding .mp4 videos or one folder of .png frames per video"
    official_source = "TaiChi-HD, prepared with the scripts of the First Order Motion Model authors"

    @classmethod
    def discover(cls, root: Path, split: str):
        items = []
        for part in (("train", "test") if split == "all" else (split,)):
            folder = root / part
            if not folder.is_dir():
                raise cls._missing(folder, "no split folder")
            found = _sources_in(folder, root)
            if not found:
                raise cls._missing(folder, "found no .mp4 videos or frame folders in")
            items += found
        return items, []


@DATASETS.register("sky", description="Sky Time-lapse sky_train/ sky_test/ frame folders")
class SkyDataset(VideoFolderDataset):
    name = "sky"
    layout = "<root>/sky_train/<video>/<clip>/*.jpg and <root>/sky_test/<video>/<clip>/*.jpg"
    official_source = "Sky Time-lapse, from the authors of 'Learning to Generate Time-Lapse Videos' (Xiong et al.)"

    @classmethod
    def discover(cls, root: Path, split: str):
        if not (root / "sky_train").is_dir() and (root / "sky_timelapse" / "sky_train").is_dir():
            root_in = root / "sky_timelapse"
        else:
            root_in = root
        items = []
        for part in (("train", "test") if split == "all" else (split,)):
            folder = root_in / f"sky_{part}"
            if not folder.is_dir():
                raise cls._missing(folder, "no split folder")
            found = []
            for video in sorted((d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")),
                                key=lambda p: natural_key(p.name)):
                if _has_frames(video):  # tolerate a one-level copy: <video>/*.jpg
                    found.append(VideoItem(video.relative_to(root).as_posix()))
                    continue
                found += [VideoItem(c.path) for c in _sources_in(video, root) if (root / c.path).is_dir()]
            if not found:
                raise cls._missing(folder, "found no <video>/<clip>/ frame folders in")
            items += found
        return items, []


_UCF_NAME = re.compile(r"^v_(?P<cls>[A-Za-z]+)_g(?P<g>\d+)_c(?P<c>\d+)\.avi$")


@DATASETS.register("ucf101", description="UCF-101 class folders + ucfTrainTestlist, 101 class labels")
class UCF101Dataset(VideoFolderDataset):
    name = "ucf101"
    layout = ("<root>/UCF-101/<ClassName>/v_<ClassName>_gXX_cYY.avi and"
              " <root>/ucfTrainTestlist/{classInd.txt,trainlist01.txt,testlist01.txt}")
    official_source = "UCF101 and its 'Train/Test Splits for Action Recognition' from the UCF CRCV website"

    def __init__(self, split: str = "train", frames: int = 16, size: int = 64, data_root=None,
                 stride: Optional[int] = None, seed: int = 0, sampling: str = "random",
                 prepared: Optional[str] = None, use_cache: bool = True, fold: int = 1):
        if fold not in (1, 2, 3):
            raise UsageError(f"ucf101 fold must be 1, 2 or 3 (trainlist0F.txt / testlist0F.txt), got {fold!r}")
        self.fold = int(fold)
        super().__init__(split, frames, size, data_root, stride, seed, sampling, prepared, use_cache)

    @classmethod
    def read_class_index(cls, lists: Path) -> List[str]:
        path = lists / "classInd.txt"
        if not path.is_file():
            raise cls._missing(path, "no class index file")
        names: Dict[int, str] = {}
        for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2 or not parts[0].isdigit():
                raise DataError(f"{path} line {lineno} is {line!r}; expected '<1-based id> <ClassName>'")
            names[int(parts[0])] = parts[1]
        if sorted(names) != list(range(1, len(names) + 1)):
            raise DataError(f"{path} must number its classes 1..N without gaps; restore the official file")
        return [names[i] for i in range(1, len(names) + 1)]

    @classmethod
    def discover(cls, root: Path, split: str, fold: int = 1):
        videos, lists = root / "UCF-101", root / "ucfTrainTestlist"
        for folder in (videos, lists):
            if not folder.is_dir():
                raise cls._missing(folder, "no folder")
        classes = cls.read_class_index(lists)
        label_of = {c.lower(): i for i, c in enumerate(classes)}
        # the official lists and files disagree on case (HandStandPushups vs HandstandPushups)
        on_disk = {p.relative_to(videos).as_posix().lower(): p for p in videos.glob("*/*") if p.is_file()}
        items, missing = [], []
        for part in (("train", "test") if split == "all" else (split,)):
            list_file = lists / f"{part}list0{fold}.txt"
            if not list_file.is_file():
                raise cls._missing(list_file, "no split list")
            for line in list_file.read_text(encoding="utf-8", errors="replace").splitlines():
                if not line.strip():
                    continue
                rel = line.split()[0].replace("\\", "/")
                class_name = rel.split("/")[0]
                label = label_of.get(class_name.lower())
                if label is None:
                    raise DataError(f"{list_file} lists {rel} whose class {class_name!r} is not in classInd.txt;"
                                    " restore the official ucfTrainTestlist files")
                path = on_disk.get(rel.lower())
                if path is None:
                    missing.append(rel)
                    continue
                items.append(VideoItem(path.relative_to(root).as_posix(), label=label))
        if missing:
            warnings.warn(f"ucf101 {split}: {len(missing)} videos listed in ucfTrainTestlist are missing under"
                          f" {videos} (e.g. {', '.join(missing[:3])}); they are skipped", DataWarning,
                          stacklevel=user_stacklevel())
        if not items:
            raise cls._missing(videos, "none of the listed videos was found in")
        return items, classes

    def _discover(self):
        return self.discover(self.root, self.split, self.fold)

    def describe(self) -> dict:
        return {**super().describe(), "fold": self.fold}


_TRAILING_DIGITS = re.compile(r"^(?P<base>[a-z]+?)(?P<num>\d+)$")


@DATASETS.register("weizmann", description="Weizmann actions (person x action labels) from a local folder")
class WeizmannDataset(VideoFolderDataset):
    name = "weizmann"
    splits = ("all", "train")
    layout = "<person>_<action>.avi files (e.g. daria_bend.avi) anywhere under <root>"
    official_source = "the Weizmann 'Actions as Space-Time Shapes' dataset from the Weizmann Institute"

    @classmethod
    def discover(cls, root: Path, split: str):
        files = sorted((p for p in root.rglob("*_*")
                        if is_video_file(p) and PREPARED_DIR not in p.relative_to(root).parts),
                       key=lambda p: natural_key(p.relative_to(root).as_posix()))
        if not files:
            raise cls._missing(root, "found no <person>_<action> videos in")
        parsed = [(p, *p.stem.lower().split("_", 1)) for p in files]
        plain = {action for _, _, action in parsed}

        def action_of(raw: str) -> str:
            # lena_run1 / lena_run2 repeat 'run'; wave1 / wave2 are two different actions
            m = _TRAILING_DIGITS.match(raw)
            return m.group("base") if m and m.group("base") in plain else raw

        persons = sorted({person for _, person, _ in parsed})
        actions = sorted({action_of(a) for _, _, a in parsed})
        items = [VideoItem(p.relative_to(root).as_posix(), label=actions.index(action_of(a)),
                           content=persons.index(person), motion=actions.index(action_of(a)))
                 for p, person, a in parsed]
        return items, actions

    def _discover(self):
        items, actions = super()._discover()
        # content ids index the sorted person names of every discovered file (as in discover)
        self.persons = sorted({Path(it.path).stem.lower().split("_", 1)[0] for it in items})
        self.num_content, self.num_motion = len(self.persons), len(actions)
        return items, actions

    def describe(self) -> dict:
        return {**super().describe(), "persons": self.persons, "actions": self.classes}
