"""Scaling curves on a CPU at small sizes: how training-step time, sampling time and metric time grow.

* **training step** (loss + backward + AdamW) and **one DDIM denoising step**, VDM and VideoFusion at
  ``--preset`` (default ``small``), batch 1: against the number of frames (``--frames-grid``, at
  ``--size``) and the frame size (``--size-grid``, at 16 frames); the denoising step also against the
  batch (``--batch-grid``: samples per call);
* **metric**: the I3D network's FLOPs per clip (constant in the input size: clips are resized to
  224x224) and measured seconds per clip (``--i3d-clips`` clips, optional); FVD from features
  (mean/covariance + matrix square root of 400x400) and KVD (unbiased cubic-kernel MMD) against the
  number of clips N (``--n-grid``).

Every point is the median of ``--repeats`` runs; the points of one curve are interleaved (A B C A B C
...), so machine-load drift spreads evenly over a curve. For each curve a log-log slope (the exponent
``k`` in time ~ x^k) is fitted and printed. Threads: 1 by default.

    python benchmarks/scaling.py --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, Dict, Optional, Sequence

import numpy as np
import torch


def _slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    lx, ly = np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float))
    return float(np.polyfit(lx, ly, 1)[0]) if len(xs) > 1 else float("nan")


def _curve(points: Dict[float, Callable[[], object]], repeats: int) -> Dict[str, object]:
    from vfbench.bench import interleaved_times

    times = interleaved_times({str(k): f for k, f in points.items()}, repeats=repeats, warmup=1)
    xs = list(points)
    ys = [statistics.median(times[str(k)]) for k in xs]
    return {"x": xs, "seconds": ys, "slope": _slope(xs, ys)}


def _models(preset: str, frames: int, size: int):
    from vfbench.bench import build_models

    torch.manual_seed(0)
    return build_models(preset, frames, size)


def _train_step(model, frames: int, size: int, batch: int = 1):
    from vfbench.bench import _train_fn

    g = torch.Generator().manual_seed(0)
    video = torch.randint(0, 256, (batch, frames, 3, size, size), dtype=torch.uint8, generator=g)
    return _train_fn(model, {"video": video}, 0)


def _denoise_step(model, frames: int, size: int, batch: int = 1):
    from vfbench.bench import _step_fn

    model.eval()
    z = torch.randn(batch, frames, 3, size, size, generator=torch.Generator().manual_seed(0))
    return _step_fn(model, z, 500, 480)


def run(preset: str = "small", size: int = 32, frames_grid=(4, 8, 16), size_grid=(16, 32, 64), batch_grid=(1, 2, 4),
        n_grid=(128, 256, 512, 1024), i3d_clips: int = 0, repeats: int = 3, threads: int = 1) -> Dict:
    from vfbench.bench import count_flops, machine_info
    from vfbench.metrics.fvd import features_to_fvd
    from vfbench.metrics.kvd import polynomial_mmd2_unbiased

    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        res = {"benchmark": "scaling",
               "config": dict(preset=preset, size=size, frames_grid=list(frames_grid), size_grid=list(size_grid),
                              batch_grid=list(batch_grid), n_grid=list(n_grid), i3d_clips=i3d_clips, repeats=repeats,
                              threads=threads),
               "machine": machine_info(), "curves": {}}
        curves = res["curves"]
        for variant in ("vdm", "videofusion"):
            by_frames = {f: _models(preset, f, size)[variant] for f in frames_grid}
            curves[f"{variant}: training step vs frames"] = _curve(
                {f: _train_step(m, f, size) for f, m in by_frames.items()}, repeats)
            curves[f"{variant}: denoising step vs frames"] = _curve(
                {f: _denoise_step(m, f, size) for f, m in by_frames.items()}, repeats)
            by_size = {s: _models(preset, 16, s)[variant] for s in size_grid}
            curves[f"{variant}: training step vs size"] = _curve(
                {s: _train_step(m, 16, s) for s, m in by_size.items()}, repeats)
            curves[f"{variant}: denoising step vs size"] = _curve(
                {s: _denoise_step(m, 16, s) for s, m in by_size.items()}, repeats)
            m = _models(preset, 16, size)[variant]
            curves[f"{variant}: denoising step vs batch (samples per call)"] = _curve(
                {b: _denoise_step(m, 16, size, b) for b in batch_grid}, repeats)

        rng = np.random.default_rng(0)
        feats = {n: (rng.standard_normal((n, 400)), rng.standard_normal((n, 400)) + 0.1) for n in n_grid}
        curves["FVD from I3D features (400-d) vs clips N"] = _curve(
            {n: (lambda a=a, b=b: features_to_fvd(a, b)) for n, (a, b) in feats.items()}, repeats)
        curves["KVD (unbiased cubic MMD) vs clips N"] = _curve(
            {n: (lambda a=a, b=b: polynomial_mmd2_unbiased(a, b)) for n, (a, b) in feats.items()}, repeats)

        from vfbench.metrics.i3d import I3D

        with torch.device("meta"):
            meta = I3D()
        res["i3d_flops_per_16f_clip"] = count_flops(lambda: meta(torch.empty(1, 3, 16, 224, 224, device="meta")))
        if i3d_clips:
            from vfbench.metrics.i3d_extractor import preprocess

            net = I3D().eval()
            clips = torch.randint(0, 256, (i3d_clips, 16, 3, 64, 64), dtype=torch.uint8)
            t0 = time.perf_counter()
            with torch.inference_mode():
                net(preprocess(clips))
            res["i3d_seconds_per_clip_eager"] = (time.perf_counter() - t0) / i3d_clips
        return res
    finally:
        torch.set_num_threads(old)


def table(res: Dict) -> str:
    from vfbench.bench import format_table

    c = res["config"]
    rows = []
    for name, cv in res["curves"].items():
        pts = ", ".join(f"{x}: {y:.3g}s" for x, y in zip(cv["x"], cv["seconds"]))
        rows.append([name, pts, cv["slope"]])
    head = (f"Scaling (CPU, threads {c['threads']}, preset {c['preset']}, batch 1 unless stated, medians of "
            f"{c['repeats']} interleaved repeats); I3D: {res['i3d_flops_per_16f_clip'] / 1e9:.1f} GFLOP per 16x224x224 "
            f"clip whatever the input size")
    return head + "\n" + format_table(rows, ["curve", "points (x: seconds)", "log-log slope"])


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    from vfbench.bench import default_out, write_result

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="small")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--frames-grid", default="4,8,16")
    p.add_argument("--size-grid", default="16,32,64")
    p.add_argument("--batch-grid", default="1,2,4")
    p.add_argument("--n-grid", default="128,256,512,1024")
    p.add_argument("--i3d-clips", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    grid = lambda s: tuple(int(v) for v in s.split(",") if v)  # noqa: E731
    res = run(a.preset, a.size, grid(a.frames_grid), grid(a.size_grid), grid(a.batch_grid), grid(a.n_grid),
              a.i3d_clips, a.repeats, a.threads)
    print(table(res))
    out = a.out or default_out("scaling")
    write_result(out, res)
    print(f"result: {out}")
    return res


if __name__ == "__main__":
    main()
