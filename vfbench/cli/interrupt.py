"""The one line printed on Ctrl-C: what was kept, and the command that picks up from there."""

from __future__ import annotations

import shlex
from typing import List

# What a command keeps when it is interrupted outside a unit that reports for itself (the trainer and
# the sampler raise ``Interrupted`` with their own clause: a checkpoint step, a shard count).
_KEPT = {
    "evaluate": "the result records and cached real-data statistics written so far",
    "demo": "the finished runs, sample sets and records",
    "ablate": "the finished runs, sample sets and records",
    "compare": "the finished runs, sample sets and records",
    "report": "nothing new (the report is written only when complete)",
}
_RESUMES_WITH_FLAG = {"train", "pretrain"}  # these need --resume to continue instead of refusing


def _command(args: List[str]) -> str:
    return next((a for a in args if not a.startswith("-")), "")


def resume_command(args: List[str]) -> List[str]:
    """``args`` as the command that continues the interrupted work."""
    out = list(args)
    if _command(out) in _RESUMES_WITH_FLAG:
        out = [a for a in out if a != "--force"]
        if "--resume" not in out:
            out.append("--resume")
    return out


def interrupted_line(exc: BaseException, args: List[str]) -> str:
    cmd = _command(args)
    kept = getattr(exc, "kept", None)
    if kept is None:
        kept = _KEPT.get(cmd, "everything already written (every write is atomic)")
    elif cmd in ("demo", "ablate", "compare"):
        kept = f"{_KEPT[cmd]}, and the {kept}"
    return f"interrupted: kept {kept}; resume with: vfbench {shlex.join(resume_command(args))}"
