"""Crash-safe file writes and inter-process locks.

Every file vfbench writes goes through ``atomic_write``: the bytes land in a temporary file in the
same directory, are fsynced, and replace the target with ``os.replace``; a reader (or a resumed
run) therefore sees the old file or the new one, never a torn one. ``FileLock`` serialises
read-modify-write sections between processes (``fcntl.flock``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from vfbench.errors import VfbenchError


def _explain_oserror(path: Path, exc: OSError) -> VfbenchError:
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return VfbenchError(f"cannot write {path}: the directory is read-only or not writable;"
                            " choose another location with --results or VFBENCH_HOME")
    if exc.errno == errno.ENOSPC:
        return VfbenchError(f"cannot write {path}: the disk is full; free space and rerun"
                            " (files already saved are intact)")
    return VfbenchError(f"cannot write {path}: {exc.strerror or exc}")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: os.PathLike | str, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary sibling of ``path`` for writing; on success it atomically replaces ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _explain_oserror(path, exc) from exc
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise _explain_oserror(path, exc) from exc
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path, data: bytes) -> None:
    with atomic_write(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(o):
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def atomic_write_json(path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def atomic_torch_save(path, obj: Any) -> None:
    import torch

    with atomic_write(path, "wb") as fh:
        torch.save(obj, fh)


def read_json(path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise VfbenchError(f"{path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise VfbenchError(f"{path} is not valid JSON ({exc}); delete or restore it") from None


class FileLock:
    """An exclusive advisory lock on ``path`` (created if missing), held across processes."""

    def __init__(self, path: os.PathLike | str):
        self.path = Path(path)
        self._fd = None

    def __enter__(self) -> "FileLock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc) -> None:
        import fcntl

        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
