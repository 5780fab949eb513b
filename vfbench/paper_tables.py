"""The papers' published numbers (VideoFusion Tables 1-7, VIDM Tables 1-2), for side-by-side columns.

The CSVs ship inside the package (``vfbench.reports`` data: ``templates/paper_*.csv``) so a report
never needs network access. They are the papers' figures on the real datasets with the authors'
compute; tables that show them next to a run label them as published and say when the run's
dataset, resolution or extractor differ (then only directions are comparable).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Iterable, List, Optional, Sequence, Tuple

from vfbench.errors import VfbenchError

SOURCES = {"videofusion": "paper_videofusion.csv", "vidm": "paper_vidm.csv"}

# How a dataset key of the CSVs is written in a column header.
DATASET_LABELS = {"ucf101": "UCF-101", "sky": "Sky Time-lapse", "taichi": "TaiChi-HD",
                  "shapes": "shapes", "weizmann": "Weizmann"}


@dataclass(frozen=True)
class PaperRow:
    source: str        # "videofusion" or "vidm"
    table: int
    dataset: str
    setting: str
    method: str
    resolution: str    # "16x64x64" (frames x height x width); "" where not applicable
    metric: str        # "FVD", "KVD", "IS", "memory_GB", "latency_s"
    value: float

    @property
    def height(self) -> Optional[int]:
        parts = self.resolution.split("x")
        return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


@dataclass(frozen=True)
class PaperRef:
    """Which published rows a table row corresponds to (all fields must match; None = any)."""

    source: str = "videofusion"
    tables: Tuple[int, ...] = ()
    method: Optional[str] = None
    setting: Optional[str] = None
    dataset: Optional[str] = None


def dataset_label(name: str) -> str:
    return DATASET_LABELS.get(name, name)


@lru_cache(maxsize=None)
def load_paper_rows(source: str) -> Tuple[PaperRow, ...]:
    """All published rows of one paper (``videofusion`` or ``vidm``)."""
    if source not in SOURCES:
        from vfbench.errors import UnknownNameError

        raise UnknownNameError("paper", source, SOURCES)
    try:
        text = resources.files("vfbench.reports").joinpath("templates", SOURCES[source]).read_text("utf-8")
    except (FileNotFoundError, ModuleNotFoundError) as exc:  # a broken install, not a user error
        raise VfbenchError(f"the packaged table {SOURCES[source]} is missing ({exc}); reinstall vfbench") from None
    rows = []
    for rec in csv.DictReader(io.StringIO(text)):
        rows.append(PaperRow(source=source, table=int(rec["table"]), dataset=rec["dataset"],
                             setting=rec["setting"], method=rec["method"], resolution=rec["resolution"],
                             metric=rec["metric"], value=float(rec["value"])))
    return tuple(rows)


def find_rows(ref: PaperRef, metrics: Iterable[str]) -> List[PaperRow]:
    wanted = {m.upper() for m in metrics}
    out = []
    for row in load_paper_rows(ref.source):
        if ref.tables and row.table not in ref.tables:
            continue
        if ref.method is not None and row.method != ref.method:
            continue
        if ref.setting is not None and row.setting != ref.setting:
            continue
        if ref.dataset is not None and row.dataset != ref.dataset:
            continue
        if row.metric.upper() in wanted:
            out.append(row)
    return out


def pick_resolution(rows: Sequence[PaperRow], size: Optional[int]) -> List[PaperRow]:
    """Of rows published at several resolutions, keep the one closest to the run's frame size."""
    if not rows:
        return []
    heights = sorted({r.height for r in rows if r.height is not None})
    if not heights:
        return list(rows)
    target = size if size is not None else heights[0]
    best = min(heights, key=lambda h: (abs(h - target), h))
    return [r for r in rows if r.height == best]


def column_label(metric: str, dataset: str, resolution: str) -> str:
    """The header of a published-value column, e.g. ``paper FVD (UCF-101 16x64x64)``."""
    where = " ".join(x for x in (dataset_label(dataset), resolution) if x)
    return f"paper {metric} ({where})"
