"""Files vfbench wrote and reads back later (records, manifests, configs, indexes, logs): checked on read.

Anything in a results or cache directory may have been hand-edited, cut short by a copy, or written
by another version. Every reader checks the shape it needs before using a file, so a bad file costs
one warning naming it (where the reader scans many files, e.g. the records of a store) or one error
naming it and the fix (where it is the file the user asked for), never a Python exception from deep
inside. Files that vfbench can rebuild are moved into an ``unreadable/`` folder beside them instead
of being deleted: a retry is not blocked, and nothing is destroyed that the user may want to inspect.
"""

from __future__ import annotations

import csv
import json
import os
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional

from vfbench.errors import VfbenchError

UNREADABLE_DIR = "unreadable"


def _kind(obj: Any) -> str:
    return {list: "a list", str: "a string", type(None): "null", bool: "a boolean"}.get(
        type(obj), "a number" if isinstance(obj, (int, float)) else type(obj).__name__)


def read_json_object(path, what: str = "file", fix: str = "restore it or delete it") -> Dict[str, Any]:
    """The JSON object in ``path``; VfbenchError (one sentence: file, problem, ``fix``) otherwise."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise VfbenchError(f"{what} {path} does not exist; {fix}") from None
    except UnicodeDecodeError:
        raise VfbenchError(f"{what} {path} is not UTF-8 text (a binary or damaged file); {fix}") from None
    except OSError as exc:
        raise VfbenchError(f"{what} {path} cannot be read ({exc.strerror or exc}); {fix}") from None
    try:
        obj = json.loads(text)
    except ValueError as exc:  # JSONDecodeError, and the RecursionError-free ValueErrors of json
        raise VfbenchError(f"{what} {path} is not valid JSON ({exc}); {fix}") from None
    except RecursionError:
        raise VfbenchError(f"{what} {path} nests too deeply to be a vfbench file; {fix}") from None
    if not isinstance(obj, dict):
        raise VfbenchError(f"{what} {path} holds {_kind(obj)}, not a JSON object; {fix}")
    return obj


def json_object_or_none(path, what: str = "file", fix: str = "restore it or delete it",
                        warn: bool = True) -> Optional[Dict[str, Any]]:
    """``read_json_object``, but a bad file is one warning naming it (unless ``warn=False``) and None."""
    try:
        return read_json_object(path, what, fix)
    except VfbenchError as exc:
        if warn:
            warnings.warn(f"skipping a bad {what}: {exc}", stacklevel=2)
        return None


def move_aside(path, why: str = "could not be read", warn: bool = True) -> Path:
    """Move ``path`` into ``unreadable/`` beside it (never over an earlier file there); returns the new path.

    The caller rebuilds the file (a checkpoint redone from an earlier one, an artefact from its
    checkpoints); the damaged one stays for the user to inspect or restore, with a warning saying so.
    """
    path = Path(path)
    dest_dir = path.parent / UNREADABLE_DIR
    dest_dir.mkdir(exist_ok=True)
    dest = dest_dir / path.name
    k = 1
    while dest.exists():
        dest = dest_dir / f"{path.name}.{k}"
        k += 1
    os.replace(path, dest)
    if warn:
        warnings.warn(f"{path} {why} and was moved to {dest}; vfbench rebuilds it. Delete the moved file once you"
                      " no longer need it", stacklevel=2)
    return dest


def read_csv_rows(path) -> Optional[List[List[str]]]:
    """All rows of a CSV file; None when it is missing or not UTF-8 CSV text (the caller says what it does)."""
    try:
        with open(Path(path), newline="", encoding="utf-8") as fh:
            return list(csv.reader(fh))
    except (FileNotFoundError, UnicodeDecodeError, csv.Error):
        return None
