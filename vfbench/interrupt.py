"""Ctrl-C that lets the current unit of work finish: the trainer stops after the step in progress.

Why not stop at once: a KeyboardInterrupt between the optimiser step and the EMA update would leave
weights and EMA out of step, and the checkpoint written on the way out would hold that mix. The first
Ctrl-C only sets ``requested``; the loop checks it after each completed step. A second Ctrl-C
stops at once (the previous handler's behaviour), for a step that takes too long.
"""

from __future__ import annotations

import contextlib
import signal
import threading


class StopRequest:
    requested = False


@contextlib.contextmanager
def deferred_sigint():
    """Yields a ``StopRequest``; outside the main thread (no signals there) it is never set."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        if stop.requested:  # the second Ctrl-C: no more waiting
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt
        stop.requested = True

    signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)
