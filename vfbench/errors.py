"""User-facing errors: one clear sentence that names the problem and the fix.

The CLI turns these into a message on stderr and an exit code, without a traceback unless
``--debug`` is given. Library code raises them; it never calls ``sys.exit``.
"""

from __future__ import annotations

import difflib
from typing import Iterable


class VfbenchError(Exception):
    """A failure the user can act on (missing file, corrupt data, bad weights). Exit code 1."""

    exit_code = 1


class UsageError(VfbenchError):
    """The user asked for something invalid (bad option value, unknown name). Exit code 2."""

    exit_code = 2


class DataError(VfbenchError):
    """A dataset folder, video file or sample shard is missing or malformed."""


class WeightsError(VfbenchError):
    """A weights file is missing, truncated, of the wrong architecture, or fails its checksum."""


class TrainingDiverged(VfbenchError):
    """The loss became NaN or inf; the last good checkpoint is kept."""


def did_you_mean(kind: str, name: str, available: Iterable[str]) -> str:
    """The standard unknown-name sentence: ``unknown generator 'vdn': did you mean 'vdm'? available: ...``."""
    available = sorted(available)
    close = difflib.get_close_matches(name, available, n=3, cutoff=0.5)
    hint = f" did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown {kind} {name!r}:{hint} available: {', '.join(available) or '(none)'}"


class UnknownNameError(UsageError, KeyError):
    def __init__(self, kind: str, name: str, available: Iterable[str]):
        self.kind, self.name = kind, name
        super().__init__(did_you_mean(kind, name, available))

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


def check_range(option: str, value, lo=None, hi=None, *, lo_open=False, hi_open=False):
    """Validate a numeric option; raise UsageError naming the option and the allowed range."""
    bad = False
    if lo is not None:
        bad |= value <= lo if lo_open else value < lo
    if hi is not None:
        bad |= value >= hi if hi_open else value > hi
    if value != value or value in (float("inf"), float("-inf")):  # NaN, and inf past an open end: not a setting
        bad = True
    if bad:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        rng = f"{left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"
        raise UsageError(f"{option} must be a finite number in {rng}, got {value!r}")
    return value


def check_positive(option: str, value):
    """Counts, steps and batch sizes must be > 0."""
    if not isinstance(value, (int, float)) or value != value or value <= 0:
        raise UsageError(f"{option} must be a positive number, got {value!r}")
    return value


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, raised after the interrupted work saved what it could; ``kept`` says what, in one clause.

    A ``KeyboardInterrupt`` so that everything which already treats Ctrl-C as "stop now" still does.
    """

    def __init__(self, kept: str):
        super().__init__(kept)
        self.kept = kept
