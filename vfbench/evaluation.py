"""The evaluation runner: sample clips -> extractor -> statistics -> score -> one result record each.

``evaluate(samples, metrics | protocol, dataset, store)`` scores a folder of generated clips
against a dataset under named metrics (``metrics/protocols.py``) and writes one record per metric
with ``ResultsStore.write_record`` (fields in docs/CONTRACTS.md; provenance added by the store).

Real side. ``num_real`` clips of the dataset's ``train`` split, built at the metric's frames and
resolution with dataset seed ``seed``. Clip selection (recorded in every record and in the cache
key):

* ``reference`` (default): the first ``num_real`` indices of ``numpy.random.default_rng(seed)
  .permutation(len(dataset))`` -- a fixed shuffle of the training set, TATS-style;
* ``stylegan-v``: the first ``num_real`` items in dataset order (for the folder datasets: the
  first videos, each with the dataset's seeded random window), StyleGAN-V-style.

Its statistics are cached in ``default_cache_dir()/stats/<key>.npz`` where ``key`` is the sha256 of
everything that changes the number (dataset ``describe()``, split, clip selection, metric name,
kind and version, extractor ``describe()`` with its weights' sha256, num_real, frames,
resolution, seed). Files are written atomically and read with ``allow_pickle=False``; a file lock
makes concurrent evaluations compute a missing entry once. ``cache=False`` bypasses the cache.

Fake side. A run's ``samples/<tag>/`` shards, or any folder of ``.npy`` / ``.npz`` uint8 arrays
``[n, T, C, H, W]`` or of videos (one clip per file: its first ``frames`` frames). Clips longer
than the protocol are cut to their first ``frames`` frames; clips of another size get a centre
square crop and an anti-aliased bilinear resize (both recorded). Long-video sets of ``vfbench sample
--length L`` (``"length"`` in their manifest) are never cut: with L above the metric's frames they are
refused, and a run's sample set is picked automatically only among sets drawn without ``--length``.
``trials=K`` scores K disjoint consecutive slices of ``num_fake`` clips (mean, std with ddof=0 over
slices, as TGANv2 reports rounds); ``bootstrap=B`` adds a 95% percentile interval for FVD over B
resamples of the first slice's features.

Scale. Under ``torchrun`` (``torchrun --nproc_per_node 8 -m vfbench evaluate RUN --device cuda``)
feature extraction is sharded: each rank extracts a contiguous block of every requested clip range
(the real clips' selected indices, a trial's slice of the samples), made of the whole
``batch_size`` batches a single process would feed the extractor (``shard_range``), and the
outputs are gathered in rank order, so the features, and every number, are the single-process
ones. Rank 0 alone decides cache hits (under the cache lock), scores, and writes the records and
caches; it sends each extraction to the other ranks, which return ``[]``. Argument and sample-count
checks run on every rank before any collective; an error on rank 0 or in any rank's extraction is
raised on every rank. ``disentangle_shapes`` (it samples the generator) is refused under torchrun.
Each record carries ``world_size``.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from vfbench.errors import DataError, UsageError, VfbenchError, WeightsError
from vfbench.results import ResultsStore, default_cache_dir
from vfbench.sample_folder import SHARD_EXTS, SampleFolder
from vfbench.sample_folder import long_video_length as _long_video_length

REAL_SELECTIONS = ("reference", "stylegan-v")


def protocol_metrics(protocol: str, dataset: str, size: Optional[int] = None) -> List[str]:
    """The metric names ``protocol`` computes for ``dataset`` at clip size ``size`` (see
    ``metrics/protocols.py``: 64-px clips get the 16x64x64 metrics)."""
    from vfbench.metrics.protocols import protocol_metrics as pm

    return pm(protocol, dataset, size)


def samples_needed(metrics, trials: Optional[int] = None) -> int:
    """Generated clips a set of metrics needs: max over metrics of trials x num_fake
    (``is2048_ucf_tganv2`` needs 10 x 2048 = 20480 by default)."""
    from vfbench.metrics.protocols import get_spec

    specs = [get_spec(m) for m in ([metrics] if isinstance(metrics, str) else metrics)]
    if not specs:
        raise UsageError("no metrics given; pass --metrics NAME[,NAME] or --protocol mini|paper")
    return max((trials or s.trials) * s.num_fake for s in specs)


# -- the fake side: any folder of shards or videos (vfbench.sample_folder) -------------------------------


def fit_clips(x, frames: int, size: int):
    """Bring uint8 clips [B, T, C, H, W] to the protocol: first ``frames`` frames, ``size`` x ``size``
    (centre square crop + anti-aliased bilinear resize, rounded), 3 channels."""
    import torch
    import torch.nn.functional as F

    from vfbench.clips import check_clips

    x = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    check_clips(x, "generated clips", min_frames=frames, channels=None)
    if x.shape[2] == 1:
        x = x.expand(-1, -1, 3, -1, -1)
    elif x.shape[2] != 3:
        raise UsageError(f"clips must have 1 or 3 channels in dimension 2 of [B, T, C, H, W], got shape {tuple(x.shape)}")
    x = x[:, :frames]
    b, t, c, h, w = x.shape
    if (h, w) != (size, size):
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        x = x[:, :, :, top:top + side, left:left + side].reshape(b * t, c, side, side)
        if side != size:
            x = F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            x = x.round_().clamp_(0, 255).to(torch.uint8)
        x = x.reshape(b, t, c, size, size)
    return x.contiguous()


# -- extractors -----------------------------------------------------------------------------------
def build_extractor(name: str, preset: str, *, device: str = "cpu", batch_size: int = 8, offline: bool = False,
                    i3d_weights=None, c3d_weights=None, i3d_impl: Optional[str] = None):
    """Instantiate the registered extractor ``name`` with the options its constructor accepts."""
    import inspect

    from vfbench.registry import EXTRACTORS

    cls = EXTRACTORS.get(name)
    weights = c3d_weights if name.startswith("c3d") else (i3d_weights if name.startswith("i3d") else None)
    offered = {"preset": preset, "device": device, "batch_size": batch_size, "offline": offline, "weights": weights,
               "impl": i3d_impl if name.startswith("i3d") else None}
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        params = {}
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in offered.items()
              if (var_kw or k in params) and not (k in ("weights", "impl") and v is None)}
    return cls(**kwargs)


def _extract(extractor, batches: Iterator, total: int, frames: int, size: int, desc: str,
             progress: bool) -> Dict[str, np.ndarray]:
    from tqdm.auto import tqdm

    out: Dict[str, List[np.ndarray]] = {}
    with tqdm(total=total, desc=desc, unit="clip", disable=not progress, leave=False) as bar:
        for b in batches:
            clips = fit_clips(b, frames, size)
            res = extractor.extract(clips)
            for k, v in res.items():
                v = np.asarray(v, np.float64)
                if v.shape[0] != clips.shape[0]:
                    raise VfbenchError(f"extractor {getattr(extractor, 'name', '?')} returned {v.shape[0]} rows for"
                                       f" {clips.shape[0]} clips in output {k!r}")
                out.setdefault(k, []).append(v)
            bar.update(clips.shape[0])
    return {k: np.concatenate(v) for k, v in out.items()}


# -- sharded extraction under torchrun ----------------------------------------------------------------
def _join_job(device: str):
    """(DistInfo, device for the extractors). Under torchrun: this rank's device (``--device cuda`` ->
    ``cuda:LOCAL_RANK``, made current for NCCL's object collectives) and the process group (nccl on GPU,
    gloo on CPU). One process: ``device`` as given, nothing joined."""
    from vfbench.distributed import dist_info, init_distributed

    info = dist_info()
    if not info.enabled:
        return info, device
    import torch

    from vfbench.training import resolve_device

    dev = resolve_device(device, info.local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    return init_distributed(dev), str(dev)


# the errors a rank can send to the others as (class name, message): the other ranks raise the same
# class with the same one-line message (and so exit with the same code); anything else is a VfbenchError
_SENDABLE_ERRORS = ("UsageError", "DataError", "WeightsError", "TrainingDiverged", "VfbenchError")


def _error_payload(exc: BaseException, rank: int) -> Tuple[str, str]:
    for cls in type(exc).__mro__:
        if cls.__module__ == "vfbench.errors" and cls.__name__ in _SENDABLE_ERRORS:
            return cls.__name__, str(exc)
    return "VfbenchError", f"{type(exc).__name__} on rank {rank}: {exc}"


def _error_from(payload: Tuple[str, str]) -> VfbenchError:
    from vfbench import errors

    name, message = payload
    err = getattr(errors, name if name in _SENDABLE_ERRORS else "VfbenchError")(message)
    err._vfbench_all_ranks = True
    return err


class _FeatureJobs:
    """The extractor run over a range of clips: in this process, or sharded over a torchrun job.

    One process: ``_extract`` over all the clips, as always. Under torchrun rank 0 runs the evaluation
    and sends each extraction to the other ranks, which wait in ``follow()``; every rank extracts its
    contiguous block of whole ``batch_size`` batches (so the extractor sees the batches one process
    would give it: its float32 outputs depend on the batch) and the outputs are gathered in rank order.
    An error in any rank's block is raised on every rank; rank 0 sends its own errors with ``fail``.
    """

    def __init__(self, info, extractors, folders, real_ds, dataset, seed: int, data_root, batch_size: int):
        self.info, self.extractors, self.folders, self.real_ds = info, extractors, folders, real_ds
        self.dataset, self.seed, self.data_root, self.batch_size = dataset, seed, data_root, batch_size

    def real(self, spec, ext, ds, idx: np.ndarray, desc: str, progress: bool) -> Dict[str, np.ndarray]:
        if not self.info.enabled:
            return _extract(ext, _iter_dataset(ds, idx, self.batch_size), len(idx), spec.frames, spec.resolution,
                            desc, progress)
        return self._lead(("real", spec, np.asarray(idx)), desc, progress)

    def fake(self, spec, ext, folder, lo: int, hi: int, desc: str, progress: bool) -> Dict[str, np.ndarray]:
        if not self.info.enabled:
            return _extract(ext, folder.iter_clips(lo, hi, self.batch_size), hi - lo, spec.frames, spec.resolution,
                            desc, progress)
        return self._lead(("fake", spec, lo, hi), desc, progress)

    # rank 0
    def _lead(self, job, desc: str, progress: bool) -> Dict[str, np.ndarray]:
        from vfbench.distributed import broadcast_object

        broadcast_object(("job", job), self.info)
        return self._shard(job, desc, progress)

    def finish(self) -> None:
        from vfbench.distributed import broadcast_object

        if self.info.enabled:
            broadcast_object(("done", None), self.info)

    def fail(self, exc: BaseException) -> None:
        """Send rank 0's error to the waiting ranks (unless every rank raised it already)."""
        from vfbench.distributed import broadcast_object

        if self.info.enabled and not getattr(exc, "_vfbench_all_ranks", False):
            broadcast_object(("error", _error_payload(exc, self.info.rank)), self.info)

    # the other ranks
    def follow(self) -> None:
        from vfbench.distributed import broadcast_object

        while True:
            what, payload = broadcast_object(None, self.info)
            if what == "done":
                return
            if what == "error":
                raise _error_from(payload)
            self._shard(payload, "", False)

    # every rank
    def _shard(self, job, desc: str, progress: bool) -> Dict[str, np.ndarray]:
        from vfbench.distributed import all_gather_objects, shard_range

        info, kind, spec = self.info, job[0], job[1]
        own = None
        try:
            ext = self.extractors[(spec.extractor, spec.preset)]
            if kind == "real":
                idx = job[2]
                a, b = shard_range(len(idx), info.rank, info.world_size, self.batch_size)
                dk = (spec.frames, spec.resolution, spec.real_stride)
                if dk not in self.real_ds:
                    self.real_ds[dk] = build_real_dataset(self.dataset, spec, self.seed, self.data_root)
                batches = _iter_dataset(self.real_ds[dk], idx[a:b], self.batch_size)
            else:
                lo, hi = job[2], job[3]
                a, b = shard_range(hi - lo, info.rank, info.world_size, self.batch_size)
                batches = self.folders[(spec.frames, spec.resolution)].iter_clips(lo + a, lo + b, self.batch_size)
            mine = ("ok", _extract(ext, batches, b - a, spec.frames, spec.resolution, desc, progress))
        except Exception as exc:  # noqa: BLE001 - every rank must hear of it, or the others wait forever
            own, mine = exc, ("error", _error_payload(exc, info.rank))
        parts = all_gather_objects(mine, info)
        for r, (status, payload) in enumerate(parts):
            if status == "error":  # the first failed rank's error, raised on every rank
                err = own if r == info.rank else _error_from(payload)
                err._vfbench_all_ranks = True
                raise err
        feats = [p for _, p in parts if p]
        return {k: np.concatenate([f[k] for f in feats]) for k in (feats[0] if feats else {})}


# -- the real side ----------------------------------------------------------------------------------
# keys of a run's recorded dataset section that are not options of the reference dataset: the
# protocol sets frames/size/seed, and ``describe`` is the record of what the run trained on
_RUN_ONLY_DATASET_KEYS = ("frames", "size", "seed", "describe")


def reference_dataset_of(run_cfg: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The reference dataset spec of a run (its config.json ``dataset`` section, as options)."""
    dataset = run_cfg.get("dataset") or None
    if isinstance(dataset, dict):
        dataset = {k: v for k, v in dataset.items() if k not in _RUN_ONLY_DATASET_KEYS}
    return dataset


def _dataset_spec(dataset) -> Dict[str, Any]:
    if isinstance(dataset, str):
        return {"name": dataset}
    if isinstance(dataset, dict):
        if "name" not in dataset:
            raise UsageError("a dataset spec needs a 'name' (e.g. {'name': 'shapes'}); pass --dataset NAME")
        return dict(dataset)
    return None  # a ready dataset object


def _dataset_name(dataset) -> str:
    spec = _dataset_spec(dataset)
    if spec is not None:
        return spec["name"]
    d = getattr(dataset, "describe", lambda: {})()
    return str(d.get("name", type(dataset).__name__))


def build_real_dataset(dataset, spec, seed: int, data_root=None):
    """The real dataset at the metric's frames/resolution (``train`` split, dataset seed ``seed``)."""
    ds_spec = _dataset_spec(dataset)
    if ds_spec is None:
        return dataset
    from vfbench.data import build_dataset

    extra = {k: v for k, v in ds_spec.items() if k not in ("name", "frames", "size", "seed", "data_root", "split",
                                                          "stride")}
    stride = getattr(spec, "real_stride", None) or ds_spec.get("stride")
    return build_dataset(ds_spec["name"], split=ds_spec.get("split", "train"), frames=spec.frames,
                         size=spec.resolution, data_root=data_root or ds_spec.get("data_root"),
                         stride=stride, seed=seed, **extra)


def real_indices(n_avail: int, num: int, selection: str, seed: int) -> np.ndarray:
    if selection == "reference":
        return np.random.default_rng(seed).permutation(n_avail)[:num]
    if selection == "stylegan-v":
        return np.arange(min(num, n_avail))
    raise UsageError(f"real clip selection must be one of {', '.join(REAL_SELECTIONS)}, got {selection!r}")


def _iter_dataset(ds, idx: np.ndarray, batch_size: int) -> Iterator:
    import torch

    for i in range(0, len(idx), batch_size):
        yield torch.stack([ds[int(j)]["video"] for j in idx[i:i + batch_size]])


def _jsonable(obj):
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def stats_cache_key(parts: Dict[str, Any]) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


# Real-side cache files are read back with their declared sizes checked first (vfbench.arrays). What the
# protocol can put in them: per real clip at most a few extractor outputs of at most MAX_FEATURE_DIM
# float64 values, plus (FVD) a covariance of MAX_FEATURE_DIM^2. I3D gives 400, C3D 101, shapes-net < 512.
MAX_FEATURE_DIM = 4096


def _cache_limit(num_real: int) -> int:
    return 8 * (max(int(num_real), 1) * 4 * MAX_FEATURE_DIM + MAX_FEATURE_DIM ** 2 + 4 * MAX_FEATURE_DIM)


def _read_cache_npz(path: Path, num_real: int) -> Optional[Dict[str, np.ndarray]]:
    """The arrays of a cache file, or None (one warning naming it) when it is damaged: it is then recomputed
    and replaced."""
    import warnings

    from vfbench.arrays import ZIP_ERRORS, load_npz

    try:
        return load_npz(path, _cache_limit(num_real), f"the statistics of {num_real} real clips can take")
    except (ValueError,) + ZIP_ERRORS as exc:
        warnings.warn(f"cache file {path} cannot be read ({exc}); it is computed again and replaced")
        return None


def _load_state(path: Path, num_real: int = 0):
    import warnings

    from vfbench.metrics.stats import stats_from_state

    arrays = _read_cache_npz(path, num_real)
    if arrays is None:
        return None
    try:
        return stats_from_state(arrays)
    except (KeyError, ValueError, TypeError, UsageError) as exc:  # a foreign file under our name
        warnings.warn(f"cache file {path} is not a vfbench statistics file ({exc}); it is computed again and replaced")
        return None


def _save_state(path: Path, stat) -> None:
    from vfbench.atomic import atomic_write

    with atomic_write(path, "wb") as fh:
        np.savez(fh, **stat.state())


# -- the runner -----------------------------------------------------------------------------------------
def _resolve_specs(metrics, dataset_name: str, protocol: Optional[str], size: Optional[int] = None):
    from vfbench.metrics.protocols import PROTOCOLS, get_spec, protocol_metrics as pm

    if metrics is None:
        if protocol is None:
            raise UsageError("say what to compute: pass --protocol mini|paper or --metrics NAME[,NAME]")
        metrics = pm(protocol, dataset_name, size)
    elif isinstance(metrics, str):
        if metrics in PROTOCOLS:
            protocol, metrics = metrics, pm(metrics, dataset_name, size)
        else:
            metrics = [m.strip() for m in metrics.split(",") if m.strip()]
    specs = [get_spec(m) for m in metrics]
    if not specs:
        raise UsageError("no metrics to compute; pass --metrics NAME[,NAME] or --protocol mini|paper")
    return specs, protocol


def fit_to_clips(specs, samples_path: Path, fit: bool, log=None):
    """The specs at the size of the stored clips: a metric at the clips' own size (``resolution=None``) takes
    it; a metric of another size refuses the clips, naming the metric that fits, unless ``fit`` asks for the
    resize (centre square crop + antialiased bilinear, rounded; said through ``log`` and recorded)."""
    import warnings

    from vfbench.metrics.protocols import fitting_metric
    from vfbench.sample_folder import stored_clip_size

    hw = stored_clip_size(samples_path)
    if hw is None:
        return list(specs)
    h, w = hw
    out = []
    for s in specs:
        if s.resolution is None:
            s = replace(s, resolution=min(h, w))
        elif (h, w) != (s.resolution, s.resolution):
            r = s.resolution
            if not fit:
                other = fitting_metric(s, h) if h == w else None
                fix = (f"score them with {other} (the same metric at {h}x{w}), or pass --fit to resize them to {r}x{r}"
                       if other else f"no registered metric scores {h}x{w} clips: pass --fit to resize them to"
                                     f" {r}x{r} (recorded), or generate {r}x{r} clips")
                raise UsageError(f"{s.name} scores {r}x{r} clips but {samples_path} holds {h}x{w} clips; {fix}")
            msg = (f"--fit: {s.name} scores {h}x{w} clips of {samples_path} after a centre square crop and an"
                   f" antialiased bilinear resize to {r}x{r} (not the protocol's path; recorded as 'fit')")
            (log or (lambda m: warnings.warn(m, stacklevel=3)))(msg)
        out.append(s)
    return out


def count_warning(spec) -> Optional[str]:
    """The warning every record scored with fewer clips than its protocol publishes carries."""
    if spec.num_fake >= spec.protocol_count:
        return None
    return (f"{spec.name} used {spec.num_fake} generated clips, fewer than the {spec.protocol_count} its protocol"
            f" publishes: FVD/KVD/IS move with the count (see `vfbench probe count`), so this value is not"
            f" comparable with published {spec.protocol_count}-clip numbers")


def _protocol_label(spec, protocol: Optional[str]) -> str:
    if protocol:
        return protocol
    from vfbench.metrics.protocols import protocol_of

    return protocol_of(spec.name) or "custom"


def evaluate(samples_source=None, metrics=None, dataset=None, store: Optional[ResultsStore] = None, *,
             protocol: Optional[str] = None, trials: Optional[int] = None, bootstrap: int = 0, seed: int = 0,
             batch_size: int = 8, device: str = "cpu", cache: bool = True, offline: bool = False,
             i3d_weights=None, c3d_weights=None, run: Optional[str] = None, tag: Optional[str] = None,
             samples_dir=None, data_root=None, real_selection: Optional[str] = None, i3d_preset: Optional[str] = None,
             i3d_impl: Optional[str] = None, cache_dir=None, fit: bool = False,
             progress: bool = True, write: bool = True) -> List[Dict[str, Any]]:
    """Score generated clips under ``metrics`` (names, specs, or a protocol name) against ``dataset``.

    ``samples_source``/``samples_dir``: a folder of clips; or ``run`` (a run name/path in
    ``store``) whose ``samples/<tag>/`` is used and whose config gives the dataset. Returns the
    records written (one per metric), each with ``record_id``.
    """
    store = store if isinstance(store, ResultsStore) else ResultsStore.open(store)
    samples_source = samples_source if samples_source is not None else samples_dir
    run_cfg: Dict[str, Any] = {}
    run_name = None
    if run is not None:
        run_dir = store.resolve_run(str(run))
        run_name = run_dir.name
        from vfbench.readback import read_json_object

        # scoring needs the dataset (and names the generator) only: no generator_config required
        run_cfg = read_json_object(run_dir / "config.json", "run config", "restore it or train the run again")
        if samples_source is None:
            samples_source = pick_samples_dir(run_dir, tag)
        if dataset is None:
            dataset = reference_dataset_of(run_cfg)
    if samples_source is None:
        raise UsageError("no samples to score: give a run (vfbench evaluate RUN) or --samples DIR")
    if dataset is None:
        raise UsageError("no reference dataset: pass --dataset NAME (the run's config.json names none)")
    if trials is not None and trials < 1:
        raise UsageError(f"--trials must be a positive integer, got {trials}")
    from vfbench.options import check_seed

    check_seed(int(seed) if isinstance(seed, np.integer) else seed)
    if bootstrap < 0:
        raise UsageError(f"--bootstrap must be 0 or a positive number of resamples, got {bootstrap}")
    dataset_name = _dataset_name(dataset)
    from vfbench.sample_folder import stored_clip_size

    hw = stored_clip_size(samples_source) if samples_source is not None else None
    specs, protocol = _resolve_specs(metrics, dataset_name, protocol, hw[0] if hw and hw[0] == hw[1] else None)
    if i3d_preset is not None:
        specs = [s.with_preset(i3d_preset) if s.extractor == "i3d" else s for s in specs]
    if real_selection is not None:
        if real_selection not in REAL_SELECTIONS:
            from vfbench.errors import did_you_mean

            raise UsageError(did_you_mean("real clip selection (--real-selection)", real_selection, REAL_SELECTIONS))
        specs = [replace(s, real_selection=real_selection) for s in specs]
    # the disentanglement score samples the generator itself (controlled noises), not the shards
    from vfbench.distributed import dist_info

    world = dist_info()
    records = []
    for s in [s for s in specs if s.kind == "disentangle"]:
        if world.enabled:
            raise UsageError(f"{s.name} samples the generator itself and is not sharded across ranks; evaluate it"
                             f" in one process, without torchrun: vfbench evaluate {run_name or 'RUN'} --metrics"
                             f" {s.name}")
        if run_name is None:
            raise UsageError(f"{s.name} samples the generator with controlled noises and needs a run"
                             " (vfbench evaluate RUN), not --samples")
        from vfbench.disentangle import evaluate_disentanglement

        rec = evaluate_disentanglement(run_name, store, seed=seed, device=device, write=write)
        records.append(rec)
    specs = [s for s in specs if s.kind != "disentangle"]
    if not specs:
        return records
    samples_path = Path(samples_source)
    specs = fit_to_clips(specs, samples_path, fit)

    # check sample counts before any expensive work
    folders: Dict[Tuple[int, int], SampleFolder] = {}
    for s in specs:
        key = (s.frames, s.resolution)
        if key not in folders:
            folders[key] = SampleFolder(samples_path, s.frames, s.resolution)
        k = trials or s.trials
        need, have = k * s.num_fake, len(folders[key])
        if have < need:
            fewer = have // k
            alt = (f", or score the clips there are with --metrics {s.at_count(fewer).name} (flagged as fewer clips"
                   f" than the protocol's)") if fewer >= 2 and s.kind != "disentangle" else ""
            target = run_name or "RUN"
            raise DataError(f"{s.name} needs {need} generated clips ({k} x {s.num_fake}) but {samples_path} holds"
                            f" {have}; generate more with `vfbench sample {target} --num {need}`{alt}")

    cache_root = Path(cache_dir) if cache_dir else default_cache_dir()
    extractors: Dict[Tuple[str, str], Any] = {}
    real_ds: Dict[Tuple[int, int, Optional[int]], Any] = {}
    real_feats: Dict[Tuple, Dict[str, np.ndarray]] = {}
    fake_feats: Dict[Tuple, Dict[str, np.ndarray]] = {}
    generator = run_cfg.get("generator") or _manifest_generator(samples_path) or "external"
    # under torchrun: join the job, each rank on its own GPU (one process: device as given)
    world, ext_device = _join_job(device)
    for spec in specs:  # load every network first: missing weights fail before any long computation
        ek = (spec.extractor, spec.preset)
        if ek not in extractors:
            extractors[ek] = build_extractor(spec.extractor, spec.preset, device=ext_device, batch_size=batch_size,
                                             offline=offline, i3d_weights=i3d_weights, c3d_weights=c3d_weights,
                                             i3d_impl=i3d_impl)
    jobs = _FeatureJobs(world, extractors, folders, real_ds, dataset, seed, data_root, batch_size)
    if world.enabled and not world.is_main:
        jobs.follow()  # extract the blocks rank 0 asks for until it is done
        return []
    try:
        for spec in specs:
            t0 = time.time()
            k_trials = trials or spec.trials
            ext = extractors[(spec.extractor, spec.preset)]
            ext_desc = _jsonable(ext.describe())
            spec = spec.resolved(ext_desc, dataset_name)
            folder = folders[(spec.frames, spec.resolution)]

            # real side
            real_stat, cache_key, real_desc = None, None, None
            if spec.needs_real:
                dk = (spec.frames, spec.resolution, spec.real_stride)
                if dk not in real_ds:
                    real_ds[dk] = build_real_dataset(dataset, spec, seed, data_root)
                ds = real_ds[dk]
                if len(ds) < spec.num_real:
                    fix = (f"score with --metrics {spec.at_count(len(ds)).name} ({len(ds)} clips each side, flagged as"
                           f" fewer than the protocol's) or use a larger dataset") if len(ds) >= 2 else \
                        "use a larger dataset"
                    raise DataError(f"{spec.name} needs {spec.num_real} real clips but dataset {dataset_name!r} has"
                                    f" {len(ds)}; {fix}")
                real_desc = _jsonable(getattr(ds, "describe", lambda: {"name": dataset_name})())
                selection = {"mode": spec.real_selection, "seed": seed, "num": spec.num_real, "split": real_desc.get("split", "train")}
                if spec.real_stride:  # a preset's real-data frame stride (latte); absent otherwise, as before
                    selection["stride"] = spec.real_stride
                cache_key = stats_cache_key({
                    "dataset": real_desc, "selection": selection, "metric": spec.name, "kind": spec.kind,
                    "version": spec.version, "frames": spec.frames, "resolution": spec.resolution,
                    "extractor": ext_desc, "num_real": spec.num_real, "seed": seed,
                    "stat": "moments" if spec.kind == "fvd" else "samples",
                })
                real_stat = _real_statistic(spec, ds, ext, ext_desc, selection, cache_key, cache_root, cache,
                                            jobs, progress, real_feats)

            # fake side, trial by trial
            values, slices, first_fake = [], [], None
            split_std = None
            for k in range(k_trials):
                lo, hi = k * spec.num_fake, (k + 1) * spec.num_fake
                fk = (json.dumps(ext_desc, sort_keys=True), spec.frames, spec.resolution, lo, hi)
                if fk not in fake_feats:
                    fake_feats[fk] = jobs.fake(spec, ext, folder, lo, hi, f"{spec.extractor} generated [{lo}:{hi}]",
                                               progress)
                out = fake_feats[fk]
                if spec.output not in out:
                    raise UsageError(f"extractor {spec.extractor!r} gives {', '.join(out)} but {spec.name} needs"
                                     f" {spec.output!r}")
                v, sd = _score(spec, real_stat, out[spec.output])
                values.append(v)
                slices.append([lo, hi])
                if k == 0:
                    first_fake, split_std = out[spec.output], sd

            value = float(np.mean(values))
            std = float(np.std(values)) if k_trials > 1 else split_std
            ci_low = ci_high = None
            if bootstrap and spec.kind == "fvd":
                from vfbench.metrics.fvd import bootstrap_fvd

                _, ci_low, ci_high = bootstrap_fvd(real_stat, first_fake, bootstrap, seed=seed,
                                                   unbiased=spec.unbiased_cov)
            rec = {
                "run": run_name, "generator": generator, "dataset": dataset_name,
                "metric": spec.name, "protocol": _protocol_label(spec, protocol), "value": value,
                "higher_is_better": spec.higher_is_better, "std": std, "ci_low": ci_low, "ci_high": ci_high,
                "trials": k_trials, "values": [float(x) for x in values],
                "num_real": spec.num_real if spec.needs_real else 0, "num_fake": spec.num_fake,
                "seeds": {"real_selection": seed if spec.needs_real else None, "fake_slices": slices,
                          "bootstrap": seed if ci_low is not None else None},
                "bootstrap": int(bootstrap) if ci_low is not None else 0,
                "extractor": ext_desc, "metric_spec": spec.to_dict(),
                "real": ({"dataset": real_desc, "selection": spec.real_selection} if spec.needs_real else None),
                "config": run_cfg, "samples_dir": str(samples_path), "samples": folder.describe(),
                "tag": samples_path.name if run_name else (tag or samples_path.name),
                "resolution": spec.resolution, "fit": folder.describe()["fit"],
                "warnings": [w for w in (count_warning(spec),) if w],
                "cache_key": cache_key, "elapsed": round(time.time() - t0, 3), "world_size": world.world_size,
            }
            if write:
                path = store.write_record(rec)
                rec["record_id"] = path.stem
            records.append(rec)
    except Exception as exc:
        jobs.fail(exc)  # the other ranks wait for rank 0: give them its error
        raise
    jobs.finish()
    return records


def _real_statistic(spec, ds, ext, ext_desc, selection, cache_key, cache_root: Path, cache: bool,
                    jobs: _FeatureJobs, progress: bool, real_feats):
    """The real side's statistic: from the cache, or from the real features (extracted, sharded under
    torchrun, only when neither the statistic nor the features are cached: rank 0 decides, under the locks)."""
    from vfbench.atomic import FileLock
    from vfbench.metrics.stats import FeatureSet, FeatureStats

    def extract():
        idx = real_indices(len(ds), spec.num_real, spec.real_selection, selection["seed"])
        return jobs.real(spec, ext, ds, idx, f"{spec.extractor} real", progress)

    def compute():
        fk = (json.dumps(ext_desc, sort_keys=True), json.dumps(selection, sort_keys=True), spec.frames,
              spec.resolution)
        if fk not in real_feats:
            # Several metrics share the real features; with the cache on they live on disk under their own
            # lock, so a concurrent evaluation of another metric loads them instead of extracting again.
            real_feats[fk] = _cached_real_features(cache_root, ds, ext_desc, selection, spec, extract) \
                if cache else extract()
        feats = real_feats[fk][spec.output]
        return (FeatureStats() if spec.kind == "fvd" else FeatureSet()).update(feats)

    if not cache:
        return compute()
    path = cache_root / "stats" / f"{cache_key}.npz"
    with FileLock(path.with_suffix(".lock")):
        if path.is_file():
            stat = _load_state(path, spec.num_real)
            if stat is not None and stat.n == spec.num_real:
                return stat
        stat = compute()
        _save_state(path, stat)
        return stat


def _cached_real_features(cache_root: Path, ds, ext_desc, selection, spec, extract) -> Dict[str, np.ndarray]:
    """The extractor outputs of the selected real clips, extracted once per key across processes."""
    from vfbench.atomic import FileLock, atomic_write

    key = stats_cache_key({"features": True, "extractor": ext_desc, "selection": selection,
                           "dataset": _jsonable(getattr(ds, "describe", lambda: {})()),
                           "frames": spec.frames, "resolution": spec.resolution})
    path = cache_root / "features" / f"{key}.npz"
    with FileLock(path.with_suffix(".lock")):
        if path.is_file():
            feats = _read_cache_npz(path, spec.num_real)
            if feats is not None:
                return feats
        feats = extract()
        with atomic_write(path, "wb") as fh:
            np.savez(fh, **feats)
        return feats


def _score(spec, real_stat, fake: np.ndarray):
    """(value, std-within-one-sample-set or None)."""
    if spec.kind == "fvd":
        from vfbench.metrics.fvd import stats_to_fvd
        from vfbench.metrics.stats import FeatureStats

        return stats_to_fvd(real_stat, FeatureStats().update(fake), unbiased=spec.unbiased_cov), None
    if spec.kind == "kvd":
        from vfbench.metrics.kvd import stats_to_kvd
        from vfbench.metrics.stats import FeatureSet

        return stats_to_kvd(real_stat, FeatureSet().update(fake), block_size=spec.kvd_block_size or None), None
    if spec.kind == "is":
        from vfbench.metrics.inception_score import inception_score

        m, s = inception_score(fake, spec.splits)
        return m, (s if spec.splits > 1 else None)
    raise UsageError(f"metric kind {spec.kind!r} cannot be scored by vfbench evaluate")


def _manifest_generator(path: Path) -> Optional[str]:
    from vfbench.readback import json_object_or_none

    m = path / "manifest.json"
    info = json_object_or_none(m, "samples manifest", warn=False) if m.is_file() else None
    gen = (info or {}).get("generator")
    return gen if isinstance(gen, str) else None


def pick_samples_dir(run_dir: Path, tag: Optional[str] = None) -> Path:
    """``samples/<tag>/`` of a run; without a tag the only set, else the one with the most clips."""
    root = Path(run_dir) / "samples"
    if tag:
        p = root / tag
        if not p.is_dir():
            have = sorted(d.name for d in root.iterdir() if d.is_dir()) if root.is_dir() else []
            raise DataError(f"run {Path(run_dir).name} has no sample set {tag!r} (have: {', '.join(have) or 'none'});"
                            f" create it with `vfbench sample {Path(run_dir).name} --tag {tag}`")
        return p
    sets = [d for d in sorted(root.iterdir()) if d.is_dir()] if root.is_dir() else []
    sets = [d for d in sets if any(f.suffix in SHARD_EXTS for f in d.iterdir())]
    long_sets = [d for d in sets if _long_video_length(d) is not None]
    sets = [d for d in sets if d not in long_sets]  # long videos are scored only when named with --tag
    if not sets:
        if long_sets:
            names = ", ".join(d.name for d in long_sets)
            raise DataError(f"run {Path(run_dir).name} has only long-video sample sets ({names}); draw protocol-length"
                            f" clips with `vfbench sample {Path(run_dir).name} --num N` (no --length) or name a set"
                            f" with --tag")
        raise DataError(f"run {Path(run_dir).name} has no samples yet; create them with"
                        f" `vfbench sample {Path(run_dir).name} --num N`")
    if len(sets) == 1:
        return sets[0]

    def count(d: Path) -> int:
        try:
            return len(SampleFolder(d))
        except VfbenchError:
            return -1

    return max(sets, key=lambda d: (count(d), d.name))


def run_has_samples(run_dir: Path) -> bool:
    try:
        pick_samples_dir(run_dir)
        return True
    except VfbenchError:
        return False


def evaluate_all(store: Optional[ResultsStore] = None, *, protocol: Optional[str] = None, metrics=None,
                 log=lambda s: None, **kwargs) -> Tuple[List[Dict[str, Any]], List[str]]:
    """Evaluate every run with samples that has no record yet for its protocol's metrics.

    A run counts as done for a metric when a record with the same run, metric, protocol label and
    sample set exists. Each record is computed under its claim (``vfbench.record_claims``), after the
    store is read again, so concurrent ``evaluate --all`` write every record once. Returns ``(records written, names of runs skipped as already evaluated)``.
    Under torchrun every rank evaluates the runs rank 0 found to do (each sharded, see ``evaluate``);
    only rank 0 logs, and the others return ``([], skipped)``.
    """
    from vfbench.distributed import broadcast_object, dist_info
    from vfbench.metrics.protocols import get_spec
    from vfbench.readback import json_object_or_none

    store = store if isinstance(store, ResultsStore) else ResultsStore.open(store)
    if metrics is None and protocol is None:
        protocol = "mini"
    world = dist_info()
    if world.enabled:  # rank 0 reads the records (rank 0 writes them): every rank must pick the same runs
        world, _ = _join_job(kwargs.get("device", "cpu"))
        if not world.is_main:
            log = lambda s: None  # noqa: E731
    from vfbench.record_claims import Claims, done_keys

    main = not world.enabled or world.is_main
    done = broadcast_object(done_keys(store.iter_records()) if main else {}, world)
    records, skipped = [], []
    for run_dir in store.iter_runs():
        if not run_has_samples(run_dir):
            continue
        cfg = json_object_or_none(run_dir / "config.json", "run config",
                                  "restore it, or delete the run folder to leave it out")
        if cfg is None:  # warned, naming the file: one broken run must not stop the others
            continue
        ds = (cfg.get("dataset") or {}).get("name") if isinstance(cfg.get("dataset"), dict) else cfg.get("dataset")
        if not isinstance(ds, str) or not ds:
            log(f"{run_dir.name}: config.json names no dataset, skipping")
            continue
        size = (cfg.get("dataset") or {}).get("size") if isinstance(cfg.get("dataset"), dict) else None
        names = metrics or protocol_metrics(protocol, ds, size if isinstance(size, int) else None)
        names = [names] if isinstance(names, str) else list(names)
        sdir = pick_samples_dir(run_dir, kwargs.get("tag"))
        keys = []  # by position in names: a metric may be given as a spec object
        for m in names:
            spec = get_spec(m)
            if kwargs.get("i3d_preset") and spec.extractor == "i3d":
                spec = spec.with_preset(kwargs["i3d_preset"])
            keys.append((run_dir.name, spec.name, _protocol_label(spec, protocol), sdir.name))
        todo = [i for i, k in enumerate(keys) if k not in done]

        def label(idx):
            return ", ".join(str(getattr(names[i], "name", names[i])) for i in idx)

        if not todo:
            skipped.append(run_dir.name)
            log(f"{run_dir.name}: already evaluated ({label(range(len(names)))}), skipping")
            continue
        wrote = False
        while todo:  # each pass claims what no other process holds (or waits for one key), then computes it
            claims = Claims(store.root) if main else None
            try:
                got = claims.take([(i, keys[i]) for i in todo]) if main else []
                now_done = done_keys(store.iter_records(warn=False)) if main else {}  # re-read under the claims
                mine = [i for i in got if keys[i] not in now_done]
                gone = [i for i in todo if keys[i] in now_done]
                mine, gone = broadcast_object((mine, gone), world)
                if gone:
                    log(f"{run_dir.name}: {label(gone)} evaluated by another process meanwhile, skipping")
                if mine:
                    log(f"{run_dir.name}: evaluating {label(mine)}")
                    records += evaluate(metrics=[names[i] for i in mine], store=store, protocol=protocol,
                                        run=run_dir.name, **kwargs)
                    wrote = True
            finally:
                if claims is not None:
                    claims.release()
            todo = [i for i in todo if i not in mine and i not in gone]
        if not wrote:
            skipped.append(run_dir.name)
    return records, skipped


__all__ = ["evaluate", "evaluate_all", "protocol_metrics", "samples_needed", "SampleFolder", "fit_clips", "build_extractor",
           "stats_cache_key", "pick_samples_dir", "REAL_SELECTIONS", "WeightsError"]
