"""Data path: the pre-decoded uint8 memory-mapped clip cache vs on-the-fly decord decoding.

Writes ``--videos`` small H.264 mp4 files (moving gradients and squares, ``--height`` x ``--width``,
``--length`` frames) into a temporary folder with PyAV, runs ``vfbench.data.prepare.prepare("folder",
..., cache=True)`` on it (the ``vfbench data prepare --cache`` path), and reads every clip of the
``folder`` dataset twice per round: once decoding with decord (``use_cache=False``), once from the cache;
rounds interleave the two (A B A B ...), medians are compared. Both paths must give identical clips
(checked byte for byte). Threads: 1 by default (``--threads``; decord's own decoder threads are not
changed).

    python benchmarks/data_cache.py --videos 12 --length 64 --size 64
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
import torch


def write_videos(folder: Path, count: int, length: int, height: int, width: int, fps: int = 25, seed: int = 0) -> None:
    import av

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    for v in range(count):
        path = folder / f"video{v:03d}.mp4"
        with av.open(str(path), mode="w") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"preset": "veryfast", "crf": "23"}
            c = rng.integers(0, 256, size=3)
            for t in range(length):
                img = np.empty((height, width, 3), np.uint8)
                img[..., 0] = (xx * 2 + t * 3 + c[0]) % 256
                img[..., 1] = (yy * 2 + t * 2 + c[1]) % 256
                img[..., 2] = ((xx + yy) + c[2]) % 256
                s = height // 4
                x0, y0 = (t * 3 + v * 7) % (width - s), (t * 2 + v * 5) % (height - s)
                img[y0:y0 + s, x0:x0 + s] = 255 - c
                for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)


def run(videos: int = 12, length: int = 64, height: int = 128, width: int = 160, size: int = 64, frames: int = 16,
        repeats: int = 3, threads: int = 1, workdir: Optional[str] = None) -> Dict:
    from vfbench.bench import interleaved_times, machine_info, summarize
    from vfbench.data.folders import FolderDataset
    from vfbench.data.prepare import prepare

    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    tmp = tempfile.TemporaryDirectory(prefix="vfbench-data-cache-", dir=workdir)
    try:
        root = Path(tmp.name) / "videos"
        t0 = time.perf_counter()
        write_videos(root, videos, length, height, width)
        t_write = time.perf_counter() - t0
        t0 = time.perf_counter()
        summary = prepare("folder", root, split="all", frames=frames, cache=True, size=size)
        t_prepare = time.perf_counter() - t0
        kw = dict(split="all", frames=frames, size=size, data_root=root, sampling="random", seed=0)
        decode = FolderDataset(use_cache=False, **kw)
        cached = FolderDataset(use_cache=True, **kw)
        if cached.cache is None:
            raise RuntimeError("the frame cache was not picked up by the dataset")
        n = len(decode)

        def read_all(ds):
            return [ds[i]["video"] for i in range(n)]

        a, b = read_all(decode), read_all(cached)
        identical = all(torch.equal(x, y) for x, y in zip(a, b))
        times = interleaved_times({"decord": lambda: read_all(decode), "cache": lambda: read_all(cached)},
                                  repeats=repeats, warmup=0)
        r = {k: summarize(v) for k, v in times.items()}
        for k in r:
            r[k]["clips_per_s"] = n / r[k]["median_s"]
        return {"benchmark": "data_cache",
                "config": dict(videos=videos, length=length, height=height, width=width, size=size, frames=frames,
                               repeats=repeats, threads=threads, codec="libx264 yuv420p crf 23"),
                "machine": machine_info(), "clips": n, "identical": identical,
                "write_videos_s": t_write, "prepare_s": t_prepare, "cache_bytes": summary.get("cache_bytes"),
                "decord": r["decord"], "cache": r["cache"],
                "speedup": r["cache"]["clips_per_s"] / r["decord"]["clips_per_s"]}
    finally:
        tmp.cleanup()
        torch.set_num_threads(old)


def table(res: Dict) -> str:
    from vfbench.bench import format_table

    c = res["config"]
    rows = [["decord decode + crop/resize", res["decord"]["clips_per_s"], res["decord"]["median_s"]],
            ["memory-mapped uint8 cache", res["cache"]["clips_per_s"], res["cache"]["median_s"]]]
    head = (f"Data path: {res['clips']} clips of {c['frames']}x{c['size']}x{c['size']} from {c['videos']} mp4 videos "
            f"({c['length']} frames, {c['width']}x{c['height']}), {c['repeats']} interleaved rounds (medians); "
            f"identical clips: {res['identical']}; speedup {res['speedup']:.1f}x (prepare once: {res['prepare_s']:.2f} s)")
    return head + "\n" + format_table(rows, ["path", "clips/s", "seconds per pass"])


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    from vfbench.bench import default_out, write_result

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--videos", type=int, default=12)
    p.add_argument("--length", type=int, default=64)
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--width", type=int, default=160)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    res = run(a.videos, a.length, a.height, a.width, a.size, a.frames, a.repeats, a.threads)
    print(table(res))
    out = a.out or default_out("data_cache")
    write_result(out, res)
    print(f"result: {out}")
    return res


if __name__ == "__main__":
    main()
