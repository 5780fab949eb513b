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

import copy
import statistics
from typing import Dict

import torch


def run(preset: str = "small", frames: int = 16, size: int = 32, batch: int = 1, repeats: int = 7,
        threads: int = 1, train: bool = False, seed: int = 0) -> Dict:
    from vfbench.bench import _train_fn, denoiser_timing_setup, interleaved_times
    from vfbench.nets.memory_format import to_channels_last

    models, z, t, res = denoiser_timing_setup(preset, frames, size, batch, threads, seed, repeats=repeats, train=train)
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
    from vfbench.bench import denoiser_timing_parser, write_result

    ap = denoiser_timing_parser(__doc__.splitlines()[0])
    ap.add_argument("--train", action="store_true", help="also time one training step (batch >= 2)")
    a = ap.parse_args(argv)
    res = run(a.preset, a.frames, a.size, a.batch, a.repeats, a.threads, a.train)
    if a.out:
        write_result(a.out, res)
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
