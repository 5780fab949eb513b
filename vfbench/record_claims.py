"""Claims on result records, so that concurrent ``vfbench evaluate --all`` compute and write each record once.

``evaluate --all`` skips a (run, metric, protocol, sample set) that already has a record. Checking the
store and writing the record are far apart (the metric is computed in between), so two processes
started together would both find the record missing and both write it. Each such key therefore has
a lock file under ``<results>/.claims/`` (``records/`` holds records only): a process computes a
record only while it holds the key's lock, and only after reading the store again under the lock
(a process that held it before may have written the record meanwhile). Keys another process holds
are skipped for now and waited for at the end, so several processes share the work instead of
queueing behind one another. The locks are ``flock`` locks: they die with their process, so a
killed evaluation never leaves a stale claim.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Dict, Hashable, List, Sequence, Tuple

from vfbench.atomic import FileLock, LockHeld

CLAIMS_DIR = ".claims"


def claim_path(results_dir: Path, key: Tuple) -> Path:
    digest = hashlib.sha256(json.dumps(list(key), sort_keys=True, default=str).encode("utf-8")).hexdigest()
    return Path(results_dir) / CLAIMS_DIR / f"{digest[:32]}.lock"


class Claims:
    """The locks of the keys this process may compute now (``taken``); release them with ``release()``."""

    def __init__(self, results_dir: Path):
        self.results_dir = Path(results_dir)
        self._locks: List[FileLock] = []

    def take(self, items: Sequence[Tuple[Hashable, Tuple]]) -> List[Hashable]:
        """Claim every ``(name, key)`` that no other process holds; if every one is held, wait for the first.

        Returns the names claimed (never empty when ``items`` is not)."""
        taken = []
        for name, key in items:
            lock = FileLock(claim_path(self.results_dir, key), blocking=False, what="record claim")
            try:
                lock.__enter__()
            except LockHeld:
                continue
            self._locks.append(lock)
            taken.append(name)
        if not taken and items:
            name, key = items[0]
            lock = FileLock(claim_path(self.results_dir, key))  # blocking: its holder is computing it
            lock.__enter__()
            self._locks.append(lock)
            taken.append(name)
        return taken

    def release(self) -> None:
        while self._locks:
            self._locks.pop().__exit__(None, None, None)


def done_keys(records) -> Dict[Tuple, int]:
    """``(run, metric, protocol, sample set name) -> count`` of the records of a store."""
    done: Dict[Tuple, int] = {}
    for rec in records:
        key = (rec.get("run"), rec.get("metric"), rec.get("protocol"), Path(str(rec.get("samples_dir") or "")).name)
        done[key] = done.get(key, 0) + 1
    return done
