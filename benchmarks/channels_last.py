"""Channels-last against the default (contiguous NCHW) memory format on CPU, in one interleaved run.

For VDM and VideoFusion built on one preset (``vfbench.bench.build_models``), each variant's denoiser call
(and optionally a training step) is timed in the order NCHW, channels-last, NCHW, ... and the medians
compared. Channels-last here is what ``vfbench.nets.memory_format`` applies: the 4-D weights are stored
NHWC, and oneDNN then keeps the activations NHWC from the first convolution on. The max absolute difference
of the two formats' outputs (same weights, same input) is reported: it is float rounding, not a change of
the model.

    python benchmarks/channels_last.py --preset small --frames 16 --size 32 --batch 1 --repeats 7
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
from typing import Dict

import torch


def run(preset: str = "small", frames: int = 16, size: int = 32, batch: int = 1, repeats: int = 7,
        threads: int = 1, train: bool = False, seed: int = 0) -> Dict:
    from vfbench.bench import _train_fn, build_models, interleaved_times, machine_info
    from vfbench.nets.memory_format import to_channels_last

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    models = build_models(preset, frames, size)
    z = torch.randn(batch, frames, 3, size, size, generator=torch.Generator().manual_seed(seed))
    t = torch.full((batch,), 500, dtype=torch.long)
    res = {"config": dict(preset=preset, frames=frames, size=size, batch=batch, repeats=repeats, threads=threads,
                          train=train, seed=seed), "machine": machine_info(), "torch": torch.__version__,
           "generators": {}}
    fns, variants = {}, {}
    for name, model in models.items():
        cl = to_channels_last(copy.deepcopy(model))
        for fmt, m in (("nchw", model.eval()), ("channels_last", cl.eval())):
            variants[(name, fmt)] = m
            fns[f"{name}/{fmt}/denoise"] = (lambda m=m: _denoise(m, z, t))
    times = interleaved_times(fns, repeats, 1)
    for name in models:
        a, b = variants[(name, "nchw")], variants[(name, "channels_last")]
        diff = float((_denoise(a, z, t) - _denoise(b, z, t)).abs().max())
        med = {fmt: statistics.median(times[f"{name}/{fmt}/denoise"]) for fmt in ("nchw", "channels_last")}
        res["generators"][name] = {"denoise_s": med, "denoise_ratio": med["channels_last"] / med["nchw"],
                                   "max_abs_diff": diff}
    res["vf_over_vdm"] = {fmt: (res["generators"]["videofusion"]["denoise_s"][fmt]
                                / res["generators"]["vdm"]["denoise_s"][fmt]) for fmt in ("nchw", "channels_last")}
    if train:
        video = torch.randint(0, 256, (max(batch, 2), frames, 3, size, size), dtype=torch.uint8,
                              generator=torch.Generator().manual_seed(seed))
        tfns = {f"{name}/{fmt}/train": _train_fn(m, {"video": video}, seed) for (name, fmt), m in variants.items()}
        ttimes = interleaved_times(tfns, max(1, repeats // 2), 1)
        for name in models:
            med = {fmt: statistics.median(ttimes[f"{name}/{fmt}/train"]) for fmt in ("nchw", "channels_last")}
            res["generators"][name].update(train_s=med, train_ratio=med["channels_last"] / med["nchw"])
    return res


def _denoise(model, z, t):
    with torch.inference_mode():
        return model.predict_noise(z, t)


def main(argv=None) -> Dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--train", action="store_true", help="also time one training step (batch >= 2)")
    ap.add_argument("--out", default=None, help="write the result JSON here")
    a = ap.parse_args(argv)
    res = run(a.preset, a.frames, a.size, a.batch, a.repeats, a.threads, a.train)
    text = json.dumps(res, indent=2, default=str)
    if a.out:
        from vfbench.atomic import atomic_write_text

        atomic_write_text(a.out, text + "\n")
    for name, g in res["generators"].items():
        line = (f"{name:12s} denoise NCHW {g['denoise_s']['nchw']:.4f} s, channels-last "
                f"{g['denoise_s']['channels_last']:.4f} s, ratio {g['denoise_ratio']:.3f}, max|diff| {g['max_abs_diff']:.2e}")
        if "train_ratio" in g:
            line += f"; train step ratio {g['train_ratio']:.3f}"
        print(line)
    print(f"VF/VDM denoise: NCHW {res['vf_over_vdm']['nchw']:.3f}, channels-last {res['vf_over_vdm']['channels_last']:.3f}")
    return res


if __name__ == "__main__":
    main()
