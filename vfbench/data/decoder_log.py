"""What the video decoder writes to the process's stderr, captured instead of printed.

decord (and the ffmpeg inside it) writes its complaints straight to file descriptor 2 from C++
(``moov atom not found``, ``video_reader.cc:83: ERROR opening ...``), past Python's ``sys.stderr``.
Printed, they interleave with the progress bar and say nothing about which file of thousands they
concern. Captured around each decoder call, they become part of that file's one skip reason.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from typing import Iterator, List


# What makes the lines unreadable without saying anything: a time stamp, the decoder's source file and
# line (``[15:53:21] /src/video/video_reader.cc:83:``), ffmpeg's demuxer and object address (``[mov,mp4 @ 0x55..]``).
_PREFIX = re.compile(r"^(\[\d\d:\d\d:\d\d\]\s*)?(\S+\.(cc|cpp|c|h):\d+:\s*)?(\[[^\]]* @ 0x[0-9a-f]+\]\s*)?")


@contextlib.contextmanager
def captured_stderr() -> Iterator[List[str]]:
    """Yields a list that holds, after the block, the distinct non-empty lines written to fd 2 inside it."""
    lines: List[str] = []
    try:
        fd = sys.__stderr__.fileno() if sys.__stderr__ is not None else 2
        saved = os.dup(fd)
    except (OSError, ValueError, AttributeError):  # no real stderr (embedded interpreter): nothing to capture
        yield lines
        return
    with tempfile.TemporaryFile(mode="w+b") as sink:
        try:
            sys.__stderr__.flush()
        except (OSError, ValueError, AttributeError):
            pass
        os.dup2(sink.fileno(), fd)
        try:
            yield lines
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            sink.seek(0)
            for raw in sink.read(1 << 16).decode("utf-8", "replace").splitlines():
                text = _PREFIX.sub("", raw.strip()).strip()
                if text and text not in lines:
                    lines.append(text)


def with_decoder_lines(message: str, lines: List[str]) -> str:
    """``message`` with the decoder's own words appended (they name the actual defect)."""
    return f"{message} [decoder: {'; '.join(lines)}]" if lines else message
