"""How good is VideoFusion's image DPM alone? Samples the base generator (the keyframe's denoiser) as an
image model and scores the images against real `shapes` keyframes.

The score is a Frechet distance in shapes-net features between still clips (each image repeated over 16
frames) of the samples and of the real central frames of the test split: the keyframe quality that the
residual generator is conditioned on (README "Generators that learn"), without the video around it.
Also printed: shapes-net's mean content confidence (does it see a shape at all?) and the fraction of
images that show a coloured shape. Writes a PNG grid of the first 32 images when --png is given.

    python benchmarks/base_image_quality.py --base RESULTS/pretrained/NAME --prediction x0 --size 32
    python benchmarks/base_image_quality.py --base RESULTS/runs/RUN --size 32   # a run's (EMA) base

Real-vs-real floor at 32x32 (256 train keyframes against 1000 test keyframes): 11.3.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def sample_base_images(model, n: int, steps: int, seed: int) -> torch.Tensor:
    """uint8 ``[n, C, H, W]`` from the base generator alone, DDIM (eta 0) with ``steps`` steps."""
    from vfbench.clips import unit_to_uint8
    from vfbench.diffusion import ddim_step, timestep_pairs
    from vfbench.prediction import output_to_eps

    cfg = model.config
    z = torch.randn(n, cfg.channels, cfg.size, cfg.size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for t, t_prev in timestep_pairs(model.schedule.num_timesteps, steps):
            tv = torch.full((n,), t, dtype=torch.long)
            eps = output_to_eps(model.schedule, z, tv, model.base(z, tv), model.base_prediction)
            z = ddim_step(model.schedule, z, eps, t, t_prev)
    return unit_to_uint8(z)


def still_clips(images: torch.Tensor, frames: int = 16) -> torch.Tensor:
    return images.unsqueeze(1).expand(-1, frames, -1, -1, -1).contiguous()


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="a pretrained base (file or folder) or a VideoFusion run folder")
    p.add_argument("--prediction", default=None, help="what the base predicts (x0, v, eps); default: the file's")
    p.add_argument("--preset", default="small", help="for a plain state dict (other files record their config)")
    p.add_argument("--size", type=int, default=32, help="for a plain state dict (other files record their config)")
    p.add_argument("--num", type=int, default=256)
    p.add_argument("--real", type=int, default=1000, help="real test-split keyframes")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--png", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(1)

    from vfbench.data.shapes import ShapesDataset
    from vfbench.generators.videofusion import VideoFusion
    from vfbench.metrics.fvd import features_to_fvd
    from vfbench.metrics.shapes_net import ShapesNetExtractor
    from vfbench.runs import read_base_state, read_run_config
    from vfbench.sample_quality import shape_motion

    state, desc = read_base_state(a.base)
    if desc["kind"] == "run":
        made = read_run_config(Path(desc["source"]))["generator_config"]
    elif desc["kind"] == "state_dict":
        made = {}
    else:
        made = torch.load(desc["source"], weights_only=True).get("generator_config") or {}
    override = {"base_prediction": a.prediction} if a.prediction else {}
    if made:  # the architecture and parameterisation the base was trained with
        model = VideoFusion.from_config_dict(dict(made, **override))
    else:
        model = VideoFusion(VideoFusion.config_for(a.preset, 16, a.size, **override))
    model.base.load_state_dict(state)
    model.eval()
    prediction, size = model.base_prediction, model.config.size
    images = sample_base_images(model, a.num, a.steps, a.seed)

    ext = ShapesNetExtractor()
    ds = ShapesDataset("test", frames=16, size=size)
    real = torch.stack([torch.as_tensor(ds[i]["video"])[ds.frames // 2] for i in range(a.real)])
    real_features = ext.extract(still_clips(real))["features"]
    fake = ext.extract(still_clips(images))
    row = {"base": a.base, "kind": desc["kind"], "step": desc.get("step"), "prediction": prediction,
           "num": a.num, "sampler": f"ddim{a.steps}", "seed": a.seed,
           "image_fd_shapes": round(features_to_fvd(real_features, fake["features"]), 2),
           "content_confidence": round(float(fake["probs"].max(1).mean()), 3),
           "shape_visible": round(shape_motion(still_clips(images, 1).numpy())["shape_visible"], 3)}
    print(json.dumps(row))
    if a.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        k = min(32, a.num) // 8 * 8
        s = size
        grid = images[:k].permute(0, 2, 3, 1).numpy().reshape(k // 8, 8, s, s, 3).transpose(0, 2, 1, 3, 4)
        plt.imsave(a.png, np.kron(grid.reshape(k // 8 * s, 8 * s, 3), np.ones((3, 3, 1), dtype=np.uint8)))
    return row


if __name__ == "__main__":
    main()
