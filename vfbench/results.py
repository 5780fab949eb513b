"""The results directory: runs (config, checkpoints, samples, logs) and result records.

Layout (default ``./vfbench-results``, else ``VFBENCH_HOME`` or ``--results``)::

    runs/<run>/config.json        resolved config of the run (generator, dataset, trainer)
    runs/<run>/checkpoints/       step-NNNNNNN.pt + latest.json (atomic)
    runs/<run>/samples/<tag>/     uint8 sample shards + manifest.json
    runs/<run>/log.csv            training losses
    records/<id>.json             one record per evaluation, with provenance
    reports/                      HTML reports

Every record is a flat-ish JSON object that ``load_records`` turns into one pandas table.
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

from vfbench.atomic import atomic_write_json
from vfbench.errors import UsageError, VfbenchError
from vfbench.provenance import provenance

DEFAULT_RESULTS = "vfbench-results"
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]{0,127}$")


def default_results_dir() -> Path:
    return Path(os.environ.get("VFBENCH_HOME") or DEFAULT_RESULTS)


def default_cache_dir() -> Path:
    """Weights and reference statistics (``VFBENCH_CACHE``, else the user cache dir)."""
    env = os.environ.get("VFBENCH_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vfbench"


def check_run_name(name: str) -> str:
    if not _RUN_NAME.match(name or ""):
        raise UsageError(f"run name {name!r} is not valid: use letters, digits and . _ = + - (at most 128),"
                         " starting with a letter or digit")
    return name


@dataclass
class ResultsStore:
    root: Path

    def __post_init__(self):
        self.root = Path(self.root)

    @classmethod
    def open(cls, root: Optional[os.PathLike | str] = None) -> "ResultsStore":
        return cls(Path(root) if root else default_results_dir())

    # -- runs ---------------------------------------------------------------------------
    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def records_dir(self) -> Path:
        return self.root / "records"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    def run_dir(self, name: str) -> Path:
        return self.runs_dir / check_run_name(name)

    def resolve_run(self, run: str) -> Path:
        """A run given by name (inside the store) or by path."""
        p = Path(run)
        if p.is_dir() and (p / "config.json").is_file():
            return p
        candidate = self.runs_dir / run
        if candidate.is_dir():
            return candidate
        names = self.run_names()
        from vfbench.errors import did_you_mean

        raise UsageError(did_you_mean("run", run, names) + f" (results directory: {self.root})")

    def run_names(self) -> List[str]:
        if not self.runs_dir.is_dir():
            return []
        return sorted(p.name for p in self.runs_dir.iterdir() if (p / "config.json").is_file())

    def iter_runs(self) -> Iterator[Path]:
        for name in self.run_names():
            yield self.runs_dir / name

    def save_run_config(self, name: str, config: Dict[str, Any]) -> Path:
        d = self.run_dir(name)
        atomic_write_json(d / "config.json", config)
        return d

    # -- records ------------------------------------------------------------------------
    def write_record(self, record: Dict[str, Any]) -> Path:
        """Write one evaluation record (provenance added) under a unique id; never overwrites."""
        rec = dict(record)
        rec.setdefault("provenance", provenance())
        # a record of ``evaluate --samples DIR`` has no run: its file is named after the folder (its tag)
        who = rec.get("run") or rec.get("tag") or "samples"
        rid = rec.get("id") or f"{who}-{rec.get('metric', 'metric')}-{uuid.uuid4().hex[:10]}"
        rid = re.sub(r"[^A-Za-z0-9._=+-]", "_", rid)
        rec["id"] = rid
        path = self.records_dir / f"{rid}.json"
        atomic_write_json(path, rec)
        return path

    def iter_records(self, warn: bool = True) -> Iterator[Dict[str, Any]]:
        """Every valid record (``vfbench.records`` schema); a bad file is skipped with one warning naming it
        (``warn=False`` for the re-reads of a command that already warned)."""
        from vfbench.records import read_record, record_files

        for p in record_files(self.records_dir):
            try:
                yield read_record(p)
            except VfbenchError as exc:  # a hand-edited or foreign file must not hide the others
                if warn:
                    import warnings

                    warnings.warn(f"skipping a bad record: {exc}", stacklevel=2)

    def load_records(self):
        """All records as one pandas DataFrame (nested dicts flattened with dots)."""
        import pandas as pd

        rows = list(self.iter_records())
        if not rows:
            return pd.DataFrame()
        return pd.json_normalize(rows)
