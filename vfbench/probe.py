"""Metric diagnostics (``vfbench probe``): can a metric see motion at all, and how far does its value move
with the number of clips?

**Temporal sensitivity**, after Ge et al., "On the Content Bias in Fréchet Video Distance" (CVPR 2024):
the metric between N real clips and *the same* clips with a temporal corruption -- frames shuffled
(``shuffle``), played backwards (``reverse``), one frame repeated (``freeze``) -- beside per-frame spatial
corruptions of **matched strength** -- a Gaussian blur (``blur``) and Gaussian noise (``noise``) whose mean
squared pixel change is the shuffle's (noise: sigma = its root; blur: the sigma on a grid whose change is
nearest). A metric that sees motion rates a shuffle at least as far as noise that changes the pixels as much;
a content-biased one barely moves. ``floor`` is the metric between two disjoint real sets of N clips: the
sampling noise every value sits on. Scores are FVD with the extractor's features (I3D logits, shapes-net
features), unbiased covariance.

**Sample-count bias**: FVD between two sets at N = 128, 256, ... up to the clips there are (a seeded random
subset of each side per N, ``repeats`` subsets averaged), and its extrapolation to infinitely many clips by a
least-squares line in 1/N, ``FVD_N = FVD_inf + k / N``, as FID-infinity does (Chong & Forsyth, "Effectively
Unbiased FID and Inception Score and where to find them", CVPR 2020). Every evaluation record scored with
fewer clips than its protocol publishes carries a warning (``vfbench.evaluation.count_warning``).

Both write result records (``protocol: probe``; the per-probe numbers in ``details``) that ``vfbench report``
shows as a table and a plot.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from vfbench.errors import UsageError

TEMPORAL = ("shuffle", "reverse", "freeze")
SPATIAL = ("blur", "noise")
TRANSFORMS = TEMPORAL + SPATIAL
BLUR_SIGMAS = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0)


# -- corruptions: uint8 [N, T, C, H, W] -> uint8, pure and seeded ---------------------------------------
def shuffle_frames(clips: np.ndarray, seed: int = 0) -> np.ndarray:
    """Every clip's frames in a random order (a permutation that moves at least one frame when T > 1)."""
    rng = np.random.default_rng(seed)
    out = np.empty_like(clips)
    t = clips.shape[1]
    for i in range(len(clips)):
        perm = rng.permutation(t)
        while t > 1 and (perm == np.arange(t)).all():
            perm = rng.permutation(t)
        out[i] = clips[i, perm]
    return out


def reverse_frames(clips: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(clips[:, ::-1])


def freeze_frames(clips: np.ndarray) -> np.ndarray:
    """Every frame replaced by the clip's first: a still image shown for T frames."""
    return np.ascontiguousarray(np.repeat(clips[:, :1], clips.shape[1], axis=1))


def gaussian_blur(clips: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of every frame (radius 3 sigma, reflected borders), rounded to uint8."""
    import torch
    import torch.nn.functional as F

    r = max(1, int(np.ceil(3 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k = torch.tensor(k / k.sum(), dtype=torch.float32)
    n, t, c, h, w = clips.shape
    x = torch.from_numpy(np.ascontiguousarray(clips)).reshape(n * t * c, 1, h, w).float()
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect" if r < w else "replicate"), k.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect" if r < h else "replicate"), k.view(1, 1, -1, 1))
    return x.round_().clamp_(0, 255).to(torch.uint8).reshape(n, t, c, h, w).numpy()


def gaussian_noise(clips: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """``clips + N(0, sigma^2)`` per pixel, rounded and clipped to uint8."""
    rng = np.random.default_rng(seed)
    return np.clip(np.rint(clips + rng.normal(0.0, sigma, clips.shape)), 0, 255).astype(np.uint8)


def pixel_mse(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared pixel change (uint8 levels squared)."""
    return float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))


def corruptions(clips: np.ndarray, seed: int = 0) -> Dict[str, Tuple[np.ndarray, Dict[str, Any]]]:
    """Every corruption of ``clips`` with its parameters; the spatial ones matched to the shuffle's strength."""
    shuffled = shuffle_frames(clips, seed)
    target = pixel_mse(clips, shuffled)
    out = {"shuffle": (shuffled, {}), "reverse": (reverse_frames(clips), {}), "freeze": (freeze_frames(clips), {})}
    sigma = float(np.sqrt(target))
    out["noise"] = (gaussian_noise(clips, sigma, seed), {"sigma": sigma, "matched_to": "shuffle"})
    best = None
    for s in BLUR_SIGMAS:
        blurred = gaussian_blur(clips, s)
        gap = abs(pixel_mse(clips, blurred) - target)
        if best is None or gap < best[0]:
            best = (gap, s, blurred)
    out["blur"] = (best[2], {"sigma": best[1], "matched_to": "shuffle"})
    return out


# -- features and the score -------------------------------------------------------------------------------
def extract_features(extractor, clips: np.ndarray, batch_size: int = 8) -> np.ndarray:
    parts = [np.asarray(extractor.extract(clips[i:i + batch_size])["features"], np.float64)
             for i in range(0, len(clips), batch_size)]
    return np.concatenate(parts)


def fvd(a: np.ndarray, b: np.ndarray) -> float:
    from vfbench.metrics.fvd import features_to_fvd

    return features_to_fvd(a, b)


def temporal_sensitivity(extractor, clips: np.ndarray, other: np.ndarray, *, seed: int = 0,
                         batch_size: int = 8) -> List[Dict[str, Any]]:
    """Rows ``{transform, value, pixel_mse, params, floor, ratio_to_floor}``: FVD(clips, corrupted clips) per
    corruption, and the ``floor`` row FVD(clips, other) for two disjoint real sets of the same size."""
    if len(clips) < 2 or len(other) < 2:
        raise UsageError("the temporal probe needs at least 2 clips on each side; pass a larger --num")
    base = extract_features(extractor, clips, batch_size)
    floor = fvd(base, extract_features(extractor, other, batch_size))
    rows = [{"transform": "floor", "value": floor, "pixel_mse": None, "params": {"what": "two disjoint real sets"}}]
    for name, (changed, params) in corruptions(clips, seed).items():
        rows.append({"transform": name, "value": fvd(base, extract_features(extractor, changed, batch_size)),
                     "pixel_mse": pixel_mse(clips, changed), "params": params})
    for r in rows:
        r["ratio_to_floor"] = r["value"] / floor if floor > 0 else None
    return rows


def count_sizes(available: int, smallest: int = 128) -> List[int]:
    """128, 256, 512, ... up to ``available`` (which is included when it is not a power of two step)."""
    sizes, n = [], smallest
    while n < available:
        sizes.append(n)
        n *= 2
    if available >= 2 and (not sizes or sizes[-1] != available):
        sizes.append(available)
    return [s for s in sizes if s >= 2]


def fit_inverse_n(sizes: Sequence[int], values: Sequence[float]) -> Tuple[float, float]:
    """Least squares ``value = a + b / N``: returns ``(a, b)`` (``a``: the value at infinitely many clips)."""
    if len(sizes) < 2:
        raise UsageError("the extrapolation needs the metric at two sample counts at least; use more clips"
                         " (--max 256 or more)")
    x = 1.0 / np.asarray(sizes, np.float64)
    design = np.stack([np.ones_like(x), x], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, np.asarray(values, np.float64), rcond=None)
    return float(a), float(b)


def sample_count_bias(real_features: np.ndarray, other_features: np.ndarray, sizes: Sequence[int], *,
                      seed: int = 0, repeats: int = 1) -> Dict[str, Any]:
    """FVD at each N of ``sizes`` (random subsets of both sides, mean over ``repeats``) and its 1/N fit."""
    rng = np.random.default_rng(seed)
    values = []
    for n in sizes:
        if n > len(real_features) or n > len(other_features):
            raise UsageError(f"N = {n} needs {n} clips on each side but there are {len(real_features)} and"
                             f" {len(other_features)}; lower --max")
        vals = [fvd(real_features[rng.choice(len(real_features), n, replace=False)],
                    other_features[rng.choice(len(other_features), n, replace=False)]) for _ in range(repeats)]
        values.append(float(np.mean(vals)))
    a, b = fit_inverse_n(sizes, values)
    return {"n": [int(n) for n in sizes], "fvd": values, "fvd_inf": a, "slope": b, "repeats": int(repeats),
            "fit": "FVD_N = FVD_inf + slope / N, least squares over the N measured (FID-infinity)"}


# -- the command's work: clips, extractor, records ----------------------------------------------------------
def _dataset_clips(dataset: str, split: str, num: int, frames: int, size: int, data_root, seed: int,
                   offset: int = 0) -> np.ndarray:
    from vfbench.data import build_dataset

    ds = build_dataset(dataset, split=split, frames=frames, size=size, data_root=data_root, seed=seed)
    if len(ds) < offset + num:
        raise UsageError(f"the probe needs {offset + num} clips of {dataset!r} ({split} split) but it has {len(ds)};"
                         f" pass --num {max(2, (len(ds) - offset))} or fewer")
    idx = np.random.default_rng(seed).permutation(len(ds))[offset:offset + num]
    return np.stack([np.asarray(ds[int(i)]["video"]) for i in idx])


def default_extractors(dataset: str) -> List[str]:
    return ["shapes-net", "i3d"] if dataset == "shapes" else ["i3d"]


def _extractor(name: str, device: str, batch_size: int, offline: bool, i3d_weights=None):
    from vfbench.evaluation import build_extractor

    return build_extractor(name, "reference", device=device, batch_size=batch_size, offline=offline,
                           i3d_weights=i3d_weights)


def _record(kind: str, name: str, value: float, *, dataset: str, extractor, n: int, seed: int, details, tag: str):
    from vfbench.evaluation import _jsonable

    # the metric names the probe, the extractor and the dataset: the report keeps the newest record per name
    return {"run": None, "generator": None, "dataset": dataset,
            "metric": f"probe_{kind}_{name}_{getattr(extractor, 'name', 'extractor')}_{dataset}",
            "protocol": "probe", "value": float(value), "higher_is_better": None, "std": None,
            "num_real": n, "num_fake": n, "seeds": {"clips": seed}, "tag": tag,
            "extractor": _jsonable(extractor.describe()), "details": _jsonable(details)}


def _folder_clips(path, num: int, frames: int, size: int, seed: int) -> np.ndarray:
    """``num`` clips of a folder of videos / frame folders / shards (first ``frames`` frames of each, centre
    square crop and antialiased resize to ``size``), in a seeded random order."""
    from vfbench.sample_folder import SampleFolder

    folder = SampleFolder(path, frames, size)
    if len(folder) < num:
        raise UsageError(f"the probe needs {num} clips but {path} holds {len(folder)}; pass --num"
                         f" {max(2, len(folder) // 2)} or fewer")
    from vfbench.evaluation import fit_clips

    clips = np.concatenate([fit_clips(b, frames, size).numpy() for b in folder.iter_clips(0, len(folder), 16)])
    return clips[np.random.default_rng(seed).permutation(len(clips))[:num]]


def run_temporal(store, *, dataset: str = "shapes", extractors: Optional[Sequence[str]] = None, num: int = 64,
                 frames: int = 16, size: int = 32, data_root=None, clips_dir=None, seed: int = 0,
                 device: str = "cpu", batch_size: int = 8, offline: bool = False, i3d_weights=None,
                 write: bool = True, log=lambda s: None) -> List[Dict[str, Any]]:
    """The temporal probe on ``num`` real clips (and ``num`` others for the floor), per extractor; records.
    The clips come from ``dataset``'s train split, or from ``clips_dir`` (any folder of videos; its name then
    stands for the dataset in the records)."""
    from pathlib import Path

    from vfbench.options import check_seed

    check_seed(seed)
    if num < 2:
        raise UsageError(f"--num must be at least 2, got {num}")
    if clips_dir is not None:
        clips = _folder_clips(clips_dir, 2 * num, frames, size, seed)
        dataset = f"folder:{Path(clips_dir).name}"
    else:
        clips = _dataset_clips(dataset, "train", 2 * num, frames, size, data_root, seed)
    clips, other = clips[:num], clips[num:]
    records = []
    for name in extractors or default_extractors(dataset):
        log(f"temporal probe: {name} on {num} clips of {dataset} ({frames}x{size}x{size})")
        ext = _extractor(name, device, batch_size, offline, i3d_weights)
        for row in temporal_sensitivity(ext, clips, other, seed=seed, batch_size=batch_size):
            details = {"probe": "temporal", "extractor": name, **row, "frames": frames, "size": size}
            rec = _record("temporal", row["transform"], row["value"], dataset=dataset, extractor=ext, n=num,
                          seed=seed, details=details, tag=f"probe-temporal-{name}")
            if write:
                rec["record_id"] = store.write_record(rec).stem
            records.append(rec)
    return records


def run_count(store, *, dataset: str = "shapes", extractor: Optional[str] = None, max_clips: int = 512,
              samples=None, frames: int = 16, size: int = 32, data_root=None, seed: int = 0, repeats: int = 1,
              device: str = "cpu", batch_size: int = 8, offline: bool = False, i3d_weights=None,
              write: bool = True, log=lambda s: None) -> Dict[str, Any]:
    """The sample-count probe: real train clips against ``samples`` (a folder of generated clips) or, without
    it, against real test clips (the estimator's own bias); one record of FVD_inf with the curve."""
    from vfbench.options import check_seed

    check_seed(seed)
    name = extractor or default_extractors(dataset)[0]
    sizes = count_sizes(max_clips)
    if len(sizes) < 2:
        raise UsageError(f"--max {max_clips} leaves fewer than two sample counts from 128 up; use --max 256 or more")
    real = _dataset_clips(dataset, "train", max_clips, frames, size, data_root, seed)
    if samples is not None:
        from vfbench.sample_folder import SampleFolder

        folder = SampleFolder(samples, frames, size)
        if len(folder) < max_clips:
            raise UsageError(f"{samples} holds {len(folder)} clips but --max is {max_clips}; pass --max {len(folder)}")
        other = np.concatenate(list(folder.iter_clips(0, max_clips, 64)))
        other_label = str(samples)
    else:
        other = _dataset_clips(dataset, "test", max_clips, frames, size, data_root, seed)
        other_label = f"{dataset} test split (real vs real)"
    log(f"count probe: {name}, N = {', '.join(map(str, sizes))} ({frames}x{size}x{size})")
    ext = _extractor(name, device, batch_size, offline, i3d_weights)
    curve = sample_count_bias(extract_features(ext, real, batch_size), extract_features(ext, other, batch_size),
                              sizes, seed=seed, repeats=repeats)
    details = {"probe": "count", "extractor": name, "other": other_label, "frames": frames, "size": size, **curve}
    rec = _record("count", "fvd_inf", curve["fvd_inf"], dataset=dataset, extractor=ext, n=max_clips, seed=seed,
                  details=details, tag=f"probe-count-{name}")
    rec["values"] = curve["fvd"]
    if write:
        rec["record_id"] = store.write_record(rec).stem
    return rec


def temporal_table(records: Sequence[Dict[str, Any]]) -> str:
    """Markdown: one row per (extractor, corruption)."""
    lines = ["| extractor | corruption | pixel MSE | FVD | FVD / floor |", "| --- | --- | ---: | ---: | ---: |"]
    for r in records:
        d = r.get("details") or {}
        ratio, mse = d.get("ratio_to_floor"), d.get("pixel_mse")
        lines.append(f"| {d.get('extractor')} | {d.get('transform')} | {'-' if mse is None else f'{mse:.1f}'} |"
                     f" {r['value']:.4g} | {'' if ratio is None else f'{ratio:.2f}'} |")
    return "\n".join(lines)


def count_table(rec: Dict[str, Any]) -> str:
    d = rec.get("details") or {}
    lines = ["| N | FVD |", "| ---: | ---: |"]
    lines += [f"| {n} | {v:.4g} |" for n, v in zip(d.get("n", []), d.get("fvd", []))]
    lines.append(f"| inf (fit a + b/N, b = {d.get('slope', float('nan')):.4g}) | {rec['value']:.4g} |")
    return "\n".join(lines)
