"""``vfbench quality``: one table that says whether runs make videos that look like their data.

For each run: its samples (the default sampler, seeded; reused when already drawn) scored with the
protocol's FVD, beside two anchors scored the same way:

* **floor**: real clips of the dataset's *test* split against the protocol's real reference (real vs
  real: the best FVD a generator can hope for at this sample count);
* **ceiling**: a freshly initialised (untrained) generator of the first run's kind and config (two
  sampling steps: its zero-initialised output layers make the samples independent of the step count).

and ``vfbench.sample_quality`` statistics (pixel std, frame-to-frame std, shapes-net confidence,
coverage and within-clip content consistency) for every row, real train clips included. Written as
Markdown and JSON to ``tables/quality.*`` of the results directory; ``figure`` writes a PNG of real
clips above each run's samples (one clip per row, frames left to right).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from vfbench.errors import UsageError


def _fvd(store, *, metric_specs, run: Optional[str] = None, tag: Optional[str] = None, folder=None,
         dataset=None) -> Optional[float]:
    from vfbench.evaluation import evaluate

    recs = evaluate(samples_source=folder, run=run, tag=tag, dataset=dataset, metrics=metric_specs, store=store,
                    progress=False, write=run is not None)
    fvd = [r for r in recs if str(r.get("metric", "")).startswith("fvd")]
    return float(fvd[0]["value"]) if fvd else None


def _write_shard(folder: Path, clips: np.ndarray) -> Path:
    from vfbench.sampling import _save_npy

    _save_npy(folder / "shard-000000.npy", np.ascontiguousarray(clips))
    return folder


def quality_table(store, runs: Sequence[str], *, num: int = 256, seed: int = 0, sample_batch: int = 16,
                  steps: Optional[int] = None, untrained: bool = True, figure: Optional[Path] = None,
                  progress: bool = True, log=print) -> Dict[str, Any]:
    """Sample, score and summarise ``runs`` (module doc); returns ``{"rows": [...], "markdown": str, ...}``."""
    from vfbench.atomic import atomic_write_json, atomic_write_text
    from vfbench.pipeline import metric_specs
    from vfbench.runs import build_generator, load_run, run_dataset
    from vfbench.sample_quality import clip_statistics
    from vfbench.sampling import load_samples, sample_run

    if not runs:
        raise UsageError("name at least one run: vfbench quality RUN [RUN ...]")
    rows: List[Dict[str, Any]] = []
    samples_of: Dict[str, np.ndarray] = {}
    first_cfg = None
    for name in runs:
        run_dir = store.resolve_run(name)
        gen, info = load_run(run_dir)
        ds = info["dataset"]
        if first_cfg is None:
            first_cfg = info
            from vfbench.metrics.protocols import protocol_metrics

            size = ds.get("size") if isinstance(ds.get("size"), int) else None  # 64-px runs: fvd2048_16f_64
            specs = metric_specs(["fvd_shapes256"] if ds.get("name") == "shapes"
                                 else [protocol_metrics("paper", str(ds.get("name")), size)[0]], num)
        log(f"{run_dir.name}: sampling {num} clips (step {info['step']})")
        controls = {"steps": steps} if steps else {}
        sdir = sample_run(run_dir, num, seed=seed, batch_size=sample_batch, progress=progress, **controls)
        clips = load_samples(sdir, limit=num)
        samples_of[run_dir.name] = clips
        fvd = _fvd(store, metric_specs=specs, run=str(run_dir), tag=sdir.name)  # a folder outside the store too
        rows.append({"row": run_dir.name, "kind": f"{info['generator']} step {info['step']}", "fvd": fvd,
                     **clip_statistics(clips)})
        del gen

    ds = first_cfg["dataset"]
    kw = {k: ds[k] for k in ("frames", "size", "data_root", "stride", "seed") if ds.get(k) is not None}
    name = str(ds["name"])
    tables = Path(store.root) / "tables"
    work = tables / "quality-clips"
    real = {}
    for split in ("train", "test"):
        d = run_dataset(ds, split)
        real[split] = np.stack([np.asarray(d[i]["video"]) for i in range(min(num, len(d)))])
    dataset_ref = {"name": name, **kw}
    floor = _fvd(store, metric_specs=specs, folder=_write_shard(work / f"{name}-test", real["test"]), dataset=dataset_ref)
    rows.append({"row": f"real {name} test split (floor)", "kind": "real vs real", "fvd": floor,
                 **clip_statistics(real["test"])})
    rows.append({"row": f"real {name} train split", "kind": "the data", "fvd": None, **clip_statistics(real["train"])})
    if untrained:
        torch.manual_seed(seed)
        fresh = build_generator(first_cfg["generator"], first_cfg["generator_config"], seed=seed).eval()
        # an untrained net's output layers are zero-initialised, so its samples do not depend on the number of
        # steps: two are enough for the ceiling
        clips = fresh.sample(num, torch.Generator().manual_seed(seed), steps=2).numpy()
        ceiling = _fvd(store, metric_specs=specs, folder=_write_shard(work / f"untrained-{first_cfg['generator']}", clips),
                       dataset=dataset_ref)
        rows.append({"row": f"untrained {first_cfg['generator']} (ceiling)", "kind": "step 0", "fvd": ceiling,
                     **clip_statistics(clips)})
    metric = specs[0].name
    cols = [("fvd", metric), ("pixel_std", "pixel std"), ("frame_to_frame_std", "frame-to-frame std"),
            ("shape_speed", "shape speed"), ("shape_jitter", "shape jitter"),
            ("content_confidence", "content conf."), ("content_consistency", "content consistency"),
            ("content_coverage", "content coverage"), ("motion_confidence", "motion conf."),
            ("motion_coverage", "motion coverage")]
    head = "| row | " + " | ".join(c[1] for c in cols) + " |\n|---|" + "---:|" * len(cols) + "\n"

    def fmt(v):
        return "—" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v)

    body = "".join(f"| {r['row']} | " + " | ".join(fmt(r.get(k)) for k, _ in cols) + " |\n" for r in rows)
    sampler = f"{steps} sampling steps" if steps else "each generator's default sampler"
    markdown = (f"{num} clips per row, sample seed {seed}, {sampler}; {metric} against the protocol's real reference "
                f"(train split); std in uint8 levels; shape speed (image widths per frame) and jitter (per frame^2) from "
                f"the coloured shape's centroid; shapes-net labels (module vfbench.sample_quality).\n\n"
                + head + body)
    out = {"num": num, "seed": seed, "steps": steps, "metric": metric, "rows": rows, "markdown": markdown}
    atomic_write_json(tables / "quality.json", out)
    atomic_write_text(tables / "quality.md", markdown)
    if figure is not None:
        from vfbench.previews import write_filmstrip

        groups = [(f"real ({name})", real["train"][:4])] + [(r, c[:4]) for r, c in samples_of.items()]
        write_filmstrip(figure, groups, scale=max(1, 64 // int(real["train"].shape[-1])), label_width=150)
        out["figure"] = str(figure)
    return out


__all__ = ["quality_table"]
