"""Training checkpoints: atomic save, torn-file-safe discovery, retention, RNG state.

A checkpoint is ``checkpoints/step-NNNNNNN.pt`` holding only tensors and plain data (so it loads
with ``torch.load(weights_only=True)``): model and EMA state dicts, optimizer (and GradScaler)
state, the step, RNG states and the generator's name/config. ``latest.json`` is written *after*
the checkpoint file, so it never points at a file that is not complete. Discovery does not trust
``latest.json`` alone: it scans ``step-*.pt`` from the newest down, skips temp files (``.*.tmp``
left by a kill during ``atomic_write``) and any file that fails to load, and returns the newest
complete one.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

import torch

from vfbench.atomic import atomic_torch_save, atomic_write_json, read_json
from vfbench.errors import VfbenchError, WeightsError
from vfbench.torch_files import load_torch_file

FORMAT = "vfbench-checkpoint-v1"
_STEP_FILE = re.compile(r"^step-(\d{7,})\.pt$")
REQUIRED_KEYS = ("format", "step", "model", "ema", "optimizer", "generator")


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from any tuple of plain values, e.g. ``(seed, "noise", step, rank)``.

    Every random stream of a run derives from (seed, purpose, position) this way, so resuming at
    step N, or redrawing shard i, reproduces exactly what an uninterrupted run would have drawn.
    """
    blob = "\x1f".join(repr(p) for p in parts).encode("utf-8")
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "little") & ((1 << 63) - 1)


def checkpoint_name(step: int) -> str:
    return f"step-{int(step):07d}.pt"


def list_checkpoints(ckpt_dir: Path) -> List[Tuple[int, Path]]:
    """``(step, path)`` of every finished-looking checkpoint file, newest first (temp files skipped)."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    out = []
    for p in ckpt_dir.iterdir():
        m = _STEP_FILE.match(p.name)
        if m and p.is_file():
            out.append((int(m.group(1)), p))
    return sorted(out, key=lambda sp: sp[0], reverse=True)


def load_checkpoint(path: Path, map_location: Any = "cpu", max_bytes: Optional[int] = None) -> Dict[str, Any]:
    """Load and validate one checkpoint file; a torn, foreign or malformed file raises WeightsError.

    ``max_bytes`` (``vfbench.torch_files.checkpoint_limit`` of the model it is for) bounds the tensor
    bytes the file may declare, checked before anything is allocated."""
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"checkpoint {path} does not exist; list the run's checkpoints/ folder"
                           " or omit --checkpoint to use the latest")
    obj = load_torch_file(path, what="checkpoint", map_location=map_location, max_bytes=max_bytes,
                          limit_what="a training checkpoint of this model can hold",
                          fix="use a checkpoint written by vfbench (a run's checkpoints/ folder)")
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise WeightsError(f"checkpoint {path} is not a vfbench training checkpoint (format {FORMAT});"
                           " pass a file from a run's checkpoints/ folder")
    missing = [k for k in REQUIRED_KEYS if k not in obj]
    if missing:
        raise WeightsError(f"checkpoint {path} lacks {', '.join(missing)}; it is incomplete: delete it")
    if isinstance(obj["step"], bool) or not isinstance(obj["step"], int) or obj["step"] < 0:
        raise WeightsError(f"checkpoint {path} has the step {str(obj['step'])[:40]!r}, not a step number; it is"
                           " damaged: delete it")
    m = _STEP_FILE.match(path.name)
    if m and int(m.group(1)) != int(obj["step"]):
        raise WeightsError(f"checkpoint {path} says step {obj['step']} but its name says {int(m.group(1))};"
                           " it was renamed or corrupted: delete it")
    return obj


def find_latest(ckpt_dir: Path, map_location: Any = "cpu",
                max_bytes: Optional[int] = None) -> Optional[Tuple[Path, Dict[str, Any]]]:
    """The newest checkpoint that loads completely, with its contents, or None if there is none.

    Files that fail to load are reported with a warning and skipped, so a kill while writing (or
    a disk that filled up) costs at most the steps since the previous checkpoint.
    """
    for _step, path in list_checkpoints(ckpt_dir):
        try:
            return path, load_checkpoint(path, map_location, max_bytes)
        except WeightsError as exc:
            warnings.warn(f"skipping unusable checkpoint: {exc}")
    return None


def save_checkpoint(ckpt_dir: Path, state: Dict[str, Any], *, keep: int = 2, final: bool = False) -> Path:
    """Write ``state`` atomically as ``step-N.pt``, then ``latest.json``, then prune old files.

    Retention keeps the ``keep`` newest checkpoints plus every checkpoint written at the end of a
    training call (``final=True``), which stay as milestones when a run is later extended.
    """
    ckpt_dir = Path(ckpt_dir)
    step = int(state["step"])
    state = {"format": FORMAT, **state}
    path = ckpt_dir / checkpoint_name(step)
    atomic_torch_save(path, state)
    pointer = ckpt_dir / "latest.json"
    finals = set()
    if pointer.is_file():
        try:
            finals = {int(s) for s in read_json(pointer).get("finals", [])}
        except (VfbenchError, TypeError, ValueError, AttributeError):
            finals = set()
    if final:
        finals.add(step)
    finals = {s for s in finals if s <= step}  # a rewind (``--force``) forgets later milestones
    atomic_write_json(pointer, {"step": step, "file": path.name, "finals": sorted(finals)})
    prune(ckpt_dir, keep=keep, protect=finals | {step})
    return path


def prune(ckpt_dir: Path, *, keep: int, protect: Iterable[int] = ()) -> List[Path]:
    """Delete all but the ``keep`` newest checkpoints (never one whose step is in ``protect``)."""
    protect = set(protect)
    removed = []
    for i, (step, path) in enumerate(list_checkpoints(ckpt_dir)):
        if i < max(1, keep) or step in protect:
            continue
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def drop_after(ckpt_dir: Path, step: int) -> List[Path]:
    """Move checkpoints newer than ``step`` aside into ``checkpoints/unreadable/`` (a resume from an
    older file must not leave them in the way, and must not destroy them either).

    On a resume the only newer files are those ``find_latest`` could not load; the failure may be
    transient (an NFS error, a GPU out of memory under ``map_location``, a newer torch), so the file
    is kept for the user to inspect or restore, never deleted. Returns the new paths.
    """
    from vfbench.readback import move_aside

    moved = []
    for s, path in list_checkpoints(ckpt_dir):
        if s > step:
            dest = move_aside(path, warn=False)
            moved.append(dest)
            warnings.warn(f"checkpoint {path} could not be loaded and was moved to {dest}; the run resumes from"
                          f" step {step}. Delete it once you no longer need it")
    return moved


# -- RNG state -----------------------------------------------------------------------------------
def capture_rng_state() -> Dict[str, Any]:
    """Global torch RNG states as tensors (CPU, and every CUDA device when present)."""
    state: Dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng_state(state: Dict[str, Any]) -> None:
    if not state:
        return
    if "cpu" in state:
        torch.set_rng_state(state["cpu"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


def submodule_state(state_dict: Dict[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    """A submodule's own state dict: ``state_dict`` itself, or its ``prefix`` entries with the prefix removed
    when it holds any (a whole generator's state dict)."""
    state = dict(state_dict)
    if any(k.startswith(prefix) for k in state):
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def check_state_fits(own: Dict[str, torch.Tensor], state: Dict[str, torch.Tensor], what: str,
                     optional: Iterable[str] = ()) -> None:
    """Raise one WeightsError, "``what`` (first missing, unexpected and shape-mismatched keys); pretrain it
    with ...", unless ``state`` fits a module whose state dict is ``own``. Keys in ``optional`` may be absent
    (a video U-Net's temporal blocks when a 2D image DPM is loaded into it)."""
    optional = set(optional)
    missing = sorted(set(own) - set(state) - optional)
    unexpected = sorted(set(state) - set(own))
    mismatched = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    detail = "; ".join(part for part in (
        f"missing {missing[:3]}" if missing else "",
        f"unexpected {unexpected[:3]}" if unexpected else "",
        f"shape mismatch at {mismatched[:3]}" if mismatched else "") if part)
    if detail:
        raise WeightsError(f"{what} ({detail}); pretrain it with the same preset, size, channels and num_classes")
