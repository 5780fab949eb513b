"""Sampling runner: a run's samples as resumable uint8 shards, a manifest, and a preview GIF.

``runs/<run>/samples/<tag>/shard-NNNNN.npy`` holds clips ``[n, T, C, H, W]`` (plain npy, uint8).
Shard ``i`` is drawn with a ``torch.Generator`` seeded from ``(seed, i)``: its bytes do not depend
on which shards were drawn before, so an interrupted run resumes by drawing only the missing
shards, and several processes (``torchrun``) can split the shards between them.
``manifest.json`` is written first with ``"complete": false`` (so a resume can check it is
continuing the same request) and rewritten with ``"complete": true`` after the last shard.
With ``length`` the clips are drawn by ``generator.sample_long`` (videos longer than the training
length); the length is then part of the request (``"length"`` in the manifest, ``-len<L>`` in the
default tag). Without it the manifest and tag are exactly those of a plain request.
"""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import numpy as np
import torch

from vfbench.arrays import npy_header
from vfbench.atomic import atomic_write, atomic_write_json
from vfbench.checkpoint import derive_seed
from vfbench.clips import check_clips
from vfbench.errors import DataError, UsageError, VfbenchError, check_positive
from vfbench.readback import read_json_object

MAX_NUM = 10**9  # clips per sample set (16 x 128 x 128 x 3 bytes each: far beyond any disk)
SHARD_RE = re.compile(r"^shard-(\d{5,})\.npy$")
_TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]{0,127}$")
# What must match for a resumed sampling call to reuse existing shards.
_IDENTITY_KEYS = ("generator", "run", "num", "seed", "shard_size", "shards", "checkpoint_step", "weights", "controls",
                  "length", "precision")
SAMPLE_PRECISIONS = ("fp32", "bf16", "fp16", "auto")


def shard_name(i: int) -> str:
    return f"shard-{i:05d}.npy"


def shard_counts(num: int, shard_size: int) -> List[int]:
    full, rest = divmod(num, shard_size)
    return [shard_size] * full + ([rest] if rest else [])


# -- GIF preview -----------------------------------------------------------------------------------
def write_gif_grid(clips_uint8, path, fps: int = 8, cols: Optional[int] = None, pad: int = 2,
                   min_tile: int = 64) -> Path:
    """Write clips ``[N, T, C, H, W]`` (uint8, C = 1 or 3) as one animated GIF grid, atomically.

    Tiles smaller than ``min_tile`` pixels are enlarged by an integer factor (nearest neighbour) so
    that tiny test-size clips stay visible.
    """
    from PIL import Image

    x = clips_uint8.detach().cpu().numpy() if isinstance(clips_uint8, torch.Tensor) else np.asarray(clips_uint8)
    check_clips(x, "preview clips", channels=None)
    n, t, c, h, w = x.shape
    if c == 1:
        x = np.repeat(x, 3, axis=2)
    elif c != 3:
        raise UsageError(f"preview clips need 1 or 3 channels, got {c}")
    scale = max(1, math.ceil(min_tile / max(1, min(h, w))))
    if scale > 1:
        x = x.repeat(scale, axis=3).repeat(scale, axis=4)
        h, w = h * scale, w * scale
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    canvas = np.full((t, rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for k in range(n):
        r, q = divmod(k, cols)
        y0, x0 = pad + r * (h + pad), pad + q * (w + pad)
        canvas[:, y0:y0 + h, x0:x0 + w] = x[k].transpose(0, 2, 3, 1)
    frames = [Image.fromarray(f) for f in canvas]
    path = Path(path)
    with atomic_write(path, "wb") as fh:
        frames[0].save(fh, format="GIF", save_all=True, append_images=frames[1:],
                       duration=max(1, round(1000 / fps)), loop=0)
    return path


# -- writing ---------------------------------------------------------------------------------------
def _save_npy(path: Path, arr: np.ndarray) -> None:
    with atomic_write(path, "wb") as fh:
        np.save(fh, arr, allow_pickle=False)


def _shard_ok(path: Path, n: int) -> bool:
    """A finished shard: a readable uint8 npy of ``n`` clips (a torn file fails the mmap)."""
    if not path.is_file():
        return False
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        return arr.dtype == np.uint8 and arr.ndim == 5 and arr.shape[0] == n
    except Exception:  # noqa: BLE001 - anything unreadable is redrawn
        return False


# Config field names accepted as sampling controls: a config says ``sampling_steps``, the generators'
# ``sample`` says ``steps``; either name works on the command line.
CONTROL_ALIASES = {"sampling_steps": "steps"}


def normalise_controls(controls: Dict[str, Any]) -> Dict[str, Any]:
    """``controls`` under the generators' names (``sampling_steps`` -> ``steps``); both names at once is refused."""
    out = dict(controls)
    for alias, name in CONTROL_ALIASES.items():
        if alias in out:
            if name in out and out[name] != out[alias]:
                raise UsageError(f"--control {alias}={out[alias]} and {name}={out[name]} name the same setting;"
                                 f" pass one of them")
            out[name] = out.pop(alias)
    return out


def check_controls(gen: Any, controls: Dict[str, Any], long: bool) -> None:
    """Refuse a control the generator does not take, before any sampling starts.

    The names are the keyword parameters of ``sample`` (and of ``sample_long`` for long videos). A
    generator whose ``sample`` takes ``**kwargs`` under another name than ``unknown`` (the built-in
    generators' name for "refused") may accept anything, so it is left to refuse for itself."""
    import inspect

    names, open_ended = set(), False
    for method in (gen.sample, gen.sample_long) if long else (gen.sample,):
        for p in inspect.signature(method).parameters.values():
            if p.kind is p.VAR_KEYWORD:
                open_ended |= p.name != "unknown" and method is gen.sample
            elif p.name not in ("n", "length", "generator"):
                names.add(p.name)
    unknown = sorted(set(controls) - names)
    if unknown and not open_ended:
        from vfbench.errors import did_you_mean

        raise UsageError(f"--control {unknown[0]}: " + did_you_mean("sampling control", unknown[0],
                                                                     sorted(names | set(CONTROL_ALIASES))))


def default_tag(step: int, seed: int, num: int, ema: bool, length: Optional[int] = None,
                precision: str = "fp32") -> str:
    return (f"step{step}-seed{seed}-n{num}" + ("" if ema else "-raw") + ("" if length is None else f"-len{length}")
            + ("" if precision == "fp32" else f"-{precision}"))


def sampling_precision(precision: str, device: torch.device) -> str:
    """The precision a sampling call runs in: ``auto`` is ``bf16`` where it is native (a GPU with bf16, a CPU
    with AMX-BF16 / AVX512-BF16; ``vfbench.training.auto_precision``), else ``fp32``; ``fp16`` is a GPU
    feature (refused on a CPU)."""
    from vfbench.training import auto_precision

    if precision not in SAMPLE_PRECISIONS:
        raise UsageError(f"--precision must be one of {', '.join(SAMPLE_PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return auto_precision(device)
    if precision == "fp16" and device.type != "cuda":
        raise UsageError("--precision fp16 needs a GPU; on a CPU use bf16 (fast only with AMX-BF16 / AVX512-BF16) "
                         "or fp32")
    return precision


def precision_context(precision: str, device: torch.device):
    """Autocast of the generator's networks for ``precision`` (``bf16`` / ``fp16``), or nothing for ``fp32``.
    Only the denoisers run in it: the diffusion updates compute in float32 whatever the network's output
    dtype (``vfbench.diffusion``), and metrics' extractors never run under it (they read uint8 shards)."""
    import contextlib

    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def sample_run(run_dir: Path | str, num: int, seed: int = 0, batch_size: int = 16, tag: Optional[str] = None,
               *, ema: bool = True, checkpoint: Any = None, device: str = "auto", force: bool = False,
               progress: bool = True, preview: bool = True, length: Optional[int] = None, precision: str = "fp32",
               memory_format: str = "auto", **controls) -> Path:
    """Draw ``num`` clips from a run into ``samples/<tag>/`` (resumable); returns that folder.

    ``batch_size`` is also the shard size. ``controls`` go to ``generator.sample`` (e.g. guidance)
    and are part of the manifest. ``length``: clips of that many frames from ``generator.sample_long``
    (generators that cannot extend videos refuse); recorded in the manifest and the default tag.
    ``precision``: ``fp32`` (default), ``bf16`` (autocast of the denoisers, GPU or CPU), ``fp16`` (GPU), or
    ``auto`` (bf16 where native, else fp32; ``sampling_precision``); the resolved precision is recorded
    in the manifest and, when not fp32, in the default tag (``-bf16``). ``memory_format``: the nets' layout
    (``vfbench.runs.load_run``; ``auto`` is channels-last on a CPU), recorded in the manifest; it changes
    outputs by float rounding only, so it is not part of the request's identity.
    """
    from vfbench.distributed import barrier, dist_info, init_distributed
    from vfbench.runs import load_run
    from vfbench.training import resolve_device

    check_positive("--num", num)
    check_positive("--batch-size", batch_size)
    if num > MAX_NUM:
        raise UsageError(f"--num {num} is more clips than vfbench can index (at most {MAX_NUM:,});"
                         " draw them in several sample sets with different --seed / --tag")
    from vfbench.options import check_seed

    check_seed(seed)
    if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 1):
        raise UsageError(f"--length must be a positive number of frames, got {length!r}")
    run_dir = Path(run_dir)
    wants_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    info = init_distributed(torch.device("cuda" if wants_cuda else "cpu")) if dist_info().enabled else dist_info()
    dev = resolve_device(device, info.local_rank)
    precision = sampling_precision(precision, dev)
    controls = normalise_controls(controls)
    gen, run_cfg = load_run(run_dir, ema=ema, checkpoint=checkpoint, device=dev, memory_format=memory_format)
    check_controls(gen, controls, long=length is not None)
    tag = tag or default_tag(run_cfg["step"], seed, num, ema, length, precision)
    if not _TAG_RE.match(tag):
        raise UsageError(f"--tag {tag!r} is not valid: use letters, digits and . _ = + - (at most 128)")
    out = run_dir / "samples" / tag
    counts = shard_counts(num, batch_size)
    manifest: Dict[str, Any] = {
        "generator": run_cfg["generator"], "run": run_dir.name, "num": num, "seed": seed,
        "shard_size": batch_size, "shards": len(counts), "checkpoint_step": run_cfg["step"],
        "weights": run_cfg["weights"], "controls": {k: controls[k] for k in sorted(controls)},
        "dtype": "uint8", "layout": "BTCHW", "complete": False,
    }
    if length is not None:  # absent for plain requests, so their manifests stay as they were
        manifest["length"] = length
    if precision != "fp32":  # likewise: absent means fp32
        manifest["precision"] = precision
    manifest["memory_format"] = run_cfg["memory_format"]
    mpath = out / "manifest.json"
    fresh = not out.exists()  # this call creates the folder (removed again if the very first draw is refused)
    if mpath.is_file():
        try:
            old = read_json_object(mpath, "samples manifest", f"pass --force to delete {out} and redraw, or another --tag")
        except VfbenchError:
            if not force:
                raise
            old = {}  # --force: whatever the damaged manifest described is redrawn
        changed = [k for k in _IDENTITY_KEYS if old.get(k) != manifest.get(k)]
        if changed and not force:
            raise UsageError(f"{out} holds samples of a different request (differs in {', '.join(changed)});"
                             " pass another --tag, or --force to delete them and redraw")
        if changed and info.is_main:
            shutil.rmtree(out)
    barrier(info)
    if info.is_main:  # marked incomplete while any shard may still be (re)drawn
        atomic_write_json(mpath, manifest)

    mine = [i for i in range(len(counts)) if i % info.world_size == info.rank]
    todo = [i for i in mine if not _shard_ok(out / shard_name(i), counts[i])]
    bar = None
    if progress and info.is_main and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(counts[i] for i in todo), desc=f"sample {run_dir.name}", unit="clip", dynamic_ncols=True)
    clip_shape = None
    try:
        for i in todo:
            g = torch.Generator(device=dev).manual_seed(derive_seed(seed, "shard", i))
            with torch.no_grad(), precision_context(precision, dev):
                if length is None:
                    x = gen.sample(counts[i], generator=g, **controls)
                else:
                    x = gen.sample_long(counts[i], length, generator=g, **controls)
            check_clips(x, f"{run_cfg['generator']}.sample output", channels=None)
            if x.shape[0] != counts[i]:
                raise DataError(f"{run_cfg['generator']}.sample returned {x.shape[0]} clips for n={counts[i]}")
            if length is not None and x.shape[1] != length:
                raise DataError(f"{run_cfg['generator']}.sample_long returned clips of {x.shape[1]} frames for"
                                f" length={length}")
            arr = x.detach().cpu().numpy()
            if clip_shape is not None and arr.shape[1:] != clip_shape:
                raise DataError(f"{run_cfg['generator']}.sample changed clip shape between shards")
            clip_shape = arr.shape[1:]
            _save_npy(out / shard_name(i), arr)
            if bar is not None:
                bar.update(counts[i])
    except KeyboardInterrupt:
        from vfbench.errors import Interrupted

        done = sum((out / shard_name(i)).is_file() for i in range(len(counts)))  # shards are written atomically
        raise Interrupted(f"{done} of {len(counts)} sample shards in {out}") from None
    except Exception:
        # a request the generator refuses (an unknown sampler, a bad control) must not leave an empty
        # folder whose manifest blocks the corrected request under the same tag
        if fresh and info.world_size == 1 and not list(out.glob("shard-*.npy")):
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        if bar is not None:
            bar.close()
    barrier(info)
    if info.is_main:
        first = next(iter_sample_shards(out, allow_incomplete=True))
        manifest["clip_shape"] = list(first.shape[1:])
        manifest["drawn_now"] = todo
        if preview:
            write_gif_grid(np.asarray(load_samples(out, allow_incomplete=True, limit=16)), out / "preview.gif")
        manifest["complete"] = True
        atomic_write_json(mpath, manifest)
    barrier(info)
    return out


# -- reading ---------------------------------------------------------------------------------------
def _shard_paths(samples_dir: Path) -> List[Path]:
    found = sorted((int(m.group(1)), p) for p in samples_dir.iterdir() if (m := SHARD_RE.match(p.name)))
    return [p for _, p in found]


def iter_sample_shards(samples_dir: Path | str, allow_incomplete: bool = False) -> Iterator[np.ndarray]:
    """Yield each shard (uint8 ``[n, T, C, H, W]``), validated, in order.

    A folder with ``manifest.json`` must say ``complete`` (unless ``allow_incomplete``) and hold
    its ``shards`` shards totalling ``num`` clips; a folder of shards without a manifest (another
    tool's samples) is read as it is.
    """
    samples_dir = Path(samples_dir)
    if not samples_dir.is_dir():
        raise DataError(f"samples folder {samples_dir} does not exist; create it with vfbench sample RUN")
    mpath = samples_dir / "manifest.json"
    manifest = None
    if mpath.is_file():
        try:
            manifest = read_json_object(mpath, "samples manifest", "rerun the vfbench sample command that made it")
            for key in ("shards", "num"):
                if isinstance(manifest.get(key), bool) or not isinstance(manifest.get(key), int):
                    raise VfbenchError(f"samples manifest {mpath} has no whole-number {key!r}; rerun the vfbench"
                                       " sample command that made it")
        except VfbenchError as exc:
            raise DataError(str(exc)) from None
    if manifest is not None and not manifest.get("complete") and not allow_incomplete:
        raise DataError(f"{samples_dir} is incomplete (manifest says complete=false); rerun the same"
                        " vfbench sample command to finish it")
    paths = _shard_paths(samples_dir)
    if manifest is not None:
        # compared with the files found, never enumerated: a damaged manifest may claim 10^12 shards
        shards = int(manifest["shards"])
        ours = [p for p in paths if int(SHARD_RE.match(p.name).group(1)) < shards]
        if allow_incomplete:
            paths = ours
        elif len(paths) != shards or [p.name for p in paths] != [shard_name(i) for i in range(len(paths))]:
            raise DataError(f"{samples_dir} should hold {shards} shards but has {len(ours)};"
                            " rerun the vfbench sample command that made it to redraw the missing ones")
    if not paths:
        raise DataError(f"{samples_dir} holds no shard-NNNNN.npy files")
    shape, total = None, 0
    for p in paths:
        try:
            npy_header(p)  # dtype and size from the header, checked against the file before numpy allocates
            arr = np.load(p, allow_pickle=False)
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"sample shard {p} is unreadable ({exc}); delete it and rerun vfbench sample") from None
        if arr.dtype != np.uint8 or arr.ndim != 5:
            raise DataError(f"sample shard {p} must be uint8 [n, T, C, H, W], got {arr.dtype} {arr.shape}")
        if shape is not None and arr.shape[1:] != shape:
            raise DataError(f"sample shard {p} has clip shape {arr.shape[1:]} but earlier shards {shape}")
        shape = arr.shape[1:]
        total += arr.shape[0]
        yield arr
    if manifest is not None and not allow_incomplete and total != int(manifest["num"]):
        raise DataError(f"{samples_dir} holds {total} clips but its manifest says {manifest['num']}")


def load_samples(samples_dir: Path | str, allow_incomplete: bool = False, limit: Optional[int] = None) -> np.ndarray:
    """All (or the first ``limit``) clips of a samples folder as one uint8 array."""
    out, have = [], 0
    for arr in iter_sample_shards(samples_dir, allow_incomplete=allow_incomplete):
        out.append(arr if limit is None else arr[: limit - have])
        have += out[-1].shape[0]
        if limit is not None and have >= limit:
            break
    return np.concatenate(out, axis=0)
