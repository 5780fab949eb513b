"""Reading .npy / .npz files without trusting them: the header first, its sizes checked, then the data.

A .npy header declares a dtype and a shape, and ``np.load`` allocates shape x itemsize bytes before
it reads any data; an .npz member is a (possibly deflated) .npy whose header can claim anything, and
``np.load(...)[key]`` decompresses the whole member just to learn its shape. Here a header is parsed
from its own few hundred bytes (for an .npz member: the first bytes of its stream; nothing else is
decompressed), the declared size is checked against what the file or zip entry really holds and
against the caller's limit (derived from what the protocol can use), and only then is memory
allocated: exactly the declared bytes, or only the rows the caller asked for.

Failures raise ``ArrayFileError`` (a ValueError) with a phrase for the caller's one-sentence error,
which names the file and the fix.
"""

from __future__ import annotations

import ast
import math
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Dict, List, Tuple

import numpy as np

MAX_HEADER_BYTES = 65536  # numpy's own default limit is 10000; a real header is ~128 bytes
_CHUNK = 1 << 22


class ArrayFileError(ValueError):
    """An .npy/.npz file (or member) that is malformed, lies about its size, or exceeds a limit."""


# what reading a damaged zip member may raise besides ArrayFileError
ZIP_ERRORS = (OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError)


@dataclass(frozen=True)
class Header:
    dtype: np.dtype
    shape: Tuple[int, ...]
    fortran: bool
    offset: int  #: bytes before the data (magic, lengths, header text)

    @property
    def nbytes(self) -> int:  # Python ints: a crafted shape cannot overflow
        return math.prod(self.shape) * self.dtype.itemsize

    def describe(self) -> str:
        return f"{self.dtype} {list(self.shape)} ({self.nbytes:,} bytes)"


def parse_header(fh: BinaryIO) -> Header:
    """The header at the start of ``fh`` (a .npy file or an .npz member's stream); reads only the header."""
    magic = fh.read(8)
    if len(magic) < 8 or magic[:6] != b"\x93NUMPY":
        raise ArrayFileError("it is not a .npy array (no NUMPY magic)")
    major = magic[6]
    if major not in (1, 2, 3):
        raise ArrayFileError(f"it has an unknown .npy format version {major}")
    width = 2 if major == 1 else 4
    raw_len = fh.read(width)
    if len(raw_len) != width:
        raise ArrayFileError("it is truncated inside its header")
    hlen = int.from_bytes(raw_len, "little")
    if hlen > MAX_HEADER_BYTES:
        raise ArrayFileError(f"its header claims {hlen:,} bytes (a real one has a few hundred)")
    raw = fh.read(hlen)
    if len(raw) != hlen:
        raise ArrayFileError("it is truncated inside its header")
    try:
        meta = ast.literal_eval(raw.decode("utf-8" if major == 3 else "latin1"))  # literals only: never code
    except (ValueError, SyntaxError, UnicodeDecodeError, MemoryError, RecursionError):
        raise ArrayFileError("its header is not a Python literal") from None
    if not isinstance(meta, dict) or set(meta) != {"descr", "fortran_order", "shape"}:
        raise ArrayFileError("its header lacks descr, fortran_order or shape")
    shape = meta["shape"]
    if not isinstance(shape, tuple) or not all(type(d) is int and d >= 0 for d in shape):
        raise ArrayFileError(f"its header declares the shape {str(shape)[:60]}, not a tuple of sizes")
    if not isinstance(meta["fortran_order"], bool):
        raise ArrayFileError("its header's fortran_order is not true or false")
    try:
        dtype = np.lib.format.descr_to_dtype(meta["descr"])
    except (TypeError, ValueError, KeyError):
        raise ArrayFileError(f"its header declares an unknown dtype {str(meta['descr'])[:60]}") from None
    if dtype.hasobject:
        raise ArrayFileError("it holds Python objects (a pickle), which vfbench never loads")
    return Header(dtype, shape, meta["fortran_order"], 6 + 2 + width + hlen)


def check_limit(header: Header, limit_bytes: int, what: str) -> None:
    if header.nbytes > limit_bytes:
        raise ArrayFileError(f"it declares {header.describe()}, more than the {limit_bytes:,} bytes {what}")


def npy_header(path) -> Header:
    """The header of a .npy file, checked against the file's real size (a torn file is caught here)."""
    path = Path(path)
    with open(path, "rb") as fh:
        header = parse_header(fh)
    have = path.stat().st_size - header.offset
    if have < header.nbytes:
        raise ArrayFileError(f"it declares {header.describe()} but holds {max(have, 0):,} bytes of data"
                             " (it is truncated)")
    return header


def npz_headers(path) -> List[Tuple[str, Header]]:
    """``(key, header)`` of every member of an .npz, each checked against its zip entry's declared size."""
    out = []
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with zf.open(info) as fh:
                header = parse_header(fh)
            if info.file_size != header.offset + header.nbytes:
                raise ArrayFileError(f"its member {info.filename} declares {header.describe()} but its zip entry"
                                     f" holds {info.file_size - header.offset:,} bytes of data")
            out.append((info.filename[:-4], header))
    return out


def _read_exact(fh: BinaryIO, buf: memoryview) -> None:
    got = 0
    while got < len(buf):
        chunk = fh.read(min(_CHUNK, len(buf) - got))
        if not chunk:
            raise ArrayFileError("its data ends before the size its header declares (it is truncated)")
        buf[got:got + len(chunk)] = chunk
        got += len(chunk)


def load_npz(path, limit_bytes: int, what: str) -> Dict[str, np.ndarray]:
    """Every member of an .npz after its header and size checks: in all at most ``limit_bytes``
    (``what`` says where the limit comes from, for the message)."""
    headers = npz_headers(path)
    total = sum(h.nbytes for _, h in headers)
    if total > limit_bytes:
        raise ArrayFileError(f"its arrays declare {total:,} bytes in all, more than the {limit_bytes:,} bytes {what}")
    out = {}
    with zipfile.ZipFile(path) as zf:
        for key, h in headers:
            buf = bytearray(h.nbytes)
            with zf.open(key + ".npy") as fh:
                fh.read(h.offset)
                _read_exact(fh, memoryview(buf))
            out[key] = np.frombuffer(buf, h.dtype).reshape(h.shape, order="F" if h.fortran else "C")
    return out


def npz_row_reader(path, key: str, header: Header):
    """An iterator factory over consecutive row blocks of one C-order member: ``rows(lo, hi, step)``
    yields arrays of at most ``step`` rows, decompressing the member only up to row ``hi``."""
    if header.fortran and len(header.shape) > 1:
        raise ArrayFileError(f"its member {key} is stored in Fortran order, which cannot be read row by row")
    row = math.prod(header.shape[1:]) * header.dtype.itemsize

    def rows(lo: int, hi: int, step: int):
        with zipfile.ZipFile(path) as zf, zf.open(key + ".npy") as fh:
            skip = header.offset + lo * row
            while skip > 0:  # decompress and drop the rows before lo, a chunk at a time
                chunk = fh.read(min(_CHUNK, skip))
                if not chunk:
                    raise ArrayFileError("its data ends before the size its header declares (it is truncated)")
                skip -= len(chunk)
            for i in range(lo, hi, step):
                n = min(step, hi - i)
                buf = bytearray(n * row)
                _read_exact(fh, memoryview(buf))
                yield np.frombuffer(buf, header.dtype).reshape((n,) + header.shape[1:])

    return rows
