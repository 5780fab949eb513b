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
import re
import socket
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional

from vfbench.errors import VfbenchError


def _free_bytes(folder: Path) -> Optional[int]:
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize


def _oserror_in(exc: BaseException) -> Optional[OSError]:
    """The OSError behind ``exc``: itself, or one in its cause/context chain (``torch.save`` and
    ``np.save`` wrap the failing ``write`` of a full disk in a RuntimeError / errno-less OSError)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


_ELSEWHERE = ("choose a writable location (--results or VFBENCH_HOME for results, --out for data prepare,"
              " --cache or VFBENCH_CACHE for weights and statistics)")


def _explain_oserror(path: Path, exc: OSError, free: Optional[int] = None) -> VfbenchError:
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return VfbenchError(f"cannot write {path}: the directory is read-only or not writable;"
                            f" {_ELSEWHERE}")
    short_write = exc.errno is None and "requested and" in str(exc)  # numpy's tofile on a full disk
    if exc.errno in (errno.ENOSPC, errno.EDQUOT) or short_write or (free is not None and free < (1 << 20)):
        return VfbenchError(f"cannot write {path}: the disk is full (or over quota); free space and rerun"
                            " (files already saved are intact)")
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        return VfbenchError(f"cannot write {path}: a file is in the way of its folder {path.parent};"
                            f" move that file or {_ELSEWHERE}")
    return VfbenchError(f"cannot write {path}: {exc.strerror or exc}")


_UMASK: Optional[int] = None


def _umask() -> int:
    """The process umask, read without changing it where /proc allows (thread-safe)."""
    global _UMASK
    if _UMASK is None:
        try:
            with open("/proc/self/status", encoding="ascii") as fh:
                _UMASK = next(int(line.split()[1], 8) for line in fh if line.startswith("Umask:"))
        except (OSError, StopIteration, ValueError, IndexError):
            _UMASK = os.umask(0o022)
            os.umask(_UMASK)
    return _UMASK


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


_HOST = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname() or "host")[:64]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists
        return True
    return True


def _remove_stale_temps(path: Path) -> None:
    """Delete temp files of ``path`` left by a writer of this host that was killed mid-write.

    A SIGKILL during ``atomic_write`` leaves ``.NAME.HOST-PID-XXXX.tmp`` behind (as large as a
    checkpoint); a run killed and resumed many times would fill the disk with them. Rewriting
    ``NAME`` (a resume redraws exactly the torn checkpoint or shard) removes the ones whose writer
    process no longer exists; files of live writers and of other hosts are left alone.
    """
    prefix = f".{path.name}."
    try:
        entries = [e.name for e in os.scandir(path.parent) if e.name.startswith(prefix) and e.name.endswith(".tmp")]
    except OSError:
        return
    for name in entries:
        parts = name[len(prefix):-len(".tmp")].rsplit("-", 2)
        if len(parts) != 3 or parts[0] != _HOST or not parts[1].isdigit():
            continue
        pid = int(parts[1])
        if pid == os.getpid() or _pid_alive(pid):
            continue
        with contextlib.suppress(OSError):
            os.unlink(path.parent / name)


@contextlib.contextmanager
def atomic_write(path: os.PathLike | str, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary sibling of ``path`` for writing; on success it atomically replaces ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_HOST}-{os.getpid()}-", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _explain_oserror(path, exc) from exc
    try:
        # mkstemp creates 0600; give the file the permissions a plain open() would (shared results dirs)
        os.fchmod(fd, 0o666 & ~_umask())
    except OSError:
        pass
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except Exception as exc:
        os_exc = None if isinstance(exc, VfbenchError) else _oserror_in(exc)
        # explain before the temp file is removed (a full disk has room again afterwards)
        err = _explain_oserror(path, os_exc, _free_bytes(path.parent)) if os_exc is not None else None
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if err is not None:
            raise err from exc
        raise
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


class LockHeld(VfbenchError):
    """Another process holds a ``FileLock`` taken with ``blocking=False``."""


class FileLock:
    """An exclusive advisory lock on ``path`` (created if missing), held across processes.

    ``blocking=False`` raises ``LockHeld`` at once when another process holds it (``what``
    describes the locked thing in that message); the holder's pid is written into the lock file so
    the message can name it. The lock dies with its process (``flock``), so a SIGKILL never leaves
    a stale lock behind.
    """

    def __init__(self, path: os.PathLike | str, *, blocking: bool = True, what: Optional[str] = None):
        self.path = Path(path)
        self.blocking, self.what = blocking, what
        self._fd = None

    def __enter__(self) -> "FileLock":
        import fcntl

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise _explain_oserror(self.path, exc) from exc
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | (0 if self.blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            try:
                holder = os.pread(self._fd, 32, 0).decode("ascii", "replace").strip()
            except OSError:
                holder = ""
            os.close(self._fd)
            self._fd = None
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise LockHeld(f"{self.what or self.path} is in use by another process{who}; wait for it to finish"
                           f" or stop it (its lock file: {self.path})") from None
        if not self.blocking:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
                os.pwrite(self._fd, str(os.getpid()).encode(), 0)
        return self

    def __exit__(self, *exc) -> None:
        import fcntl

        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
