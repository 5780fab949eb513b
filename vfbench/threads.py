"""How many CPU threads vfbench computes with, chosen once per command.

Why not torch's default (one thread per core): on a machine another job keeps busy, OpenMP's
threads wait for each other at every operator, and a thread that lost its core stalls all of them.
Measured with ``benchmarks/threads.py`` on a 2-core machine with other jobs running: a tiny
VideoFusion training step took 0.22 s on one thread and 9.0 s on two (15.2 s vs 0.86 s with one
more busy neighbour). Too few threads costs at most the parallel speed-up; too many costs 40x.

So, in this order: ``--threads N``; else ``OMP_NUM_THREADS`` (the standard variable, respected
as given); else the cores the 1-minute load average leaves wholly free (at least 1), which is
every core on an idle machine and one on a busy 2-core one.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from typing import Optional

from vfbench.errors import UsageError

ENV = "OMP_NUM_THREADS"


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    source: str  # "--threads", "OMP_NUM_THREADS" or "load"
    cores: int
    load: Optional[float] = None

    def describe(self) -> str:
        if self.source == "load":
            why = f"of {self.cores} cores; load {self.load:.1f}"
        else:
            why = f"from {self.source}"
        return f"threads: {self.threads} ({why}; --threads N or {ENV} to change)"


def usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def _load() -> Optional[float]:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def choose_threads(requested: Optional[int] = None, env: Optional[dict] = None,
                   cores: Optional[int] = None, load: Optional[float] = None) -> ThreadChoice:
    """The thread count to use (see the module docstring); arguments other than ``requested`` are for tests."""
    env = os.environ if env is None else env
    cores = usable_cores() if cores is None else cores
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise UsageError(f"--threads must be a whole number >= 1, got {requested!r}")
        return ThreadChoice(requested, "--threads", cores)
    raw = env.get(ENV, "").strip()
    if raw:
        if not raw.isdigit() or int(raw) < 1:
            raise UsageError(f"{ENV}={raw!r} is not a whole number >= 1; set it to e.g. 1 or unset it")
        return ThreadChoice(int(raw), ENV, cores)
    load = _load() if load is None else load
    if load is None:  # no load average (not Linux/macOS): half the cores keeps a neighbour safe
        return ThreadChoice(max(1, cores // 2), "load", cores, 0.0)
    return ThreadChoice(max(1, min(cores, math.floor(cores - load))), "load", cores, load)


def apply_threads(choice: ThreadChoice) -> None:
    """Use ``choice.threads`` in this process and in the processes it starts (DataLoader workers).

    Before torch is imported the environment variable is enough (and sizes every library's pool);
    after, torch is told directly too (in-process callers, tests)."""
    os.environ[ENV] = str(choice.threads)
    os.environ.setdefault("MKL_NUM_THREADS", str(choice.threads))
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != choice.threads:
        torch.set_num_threads(choice.threads)
