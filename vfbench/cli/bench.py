"""``vfbench bench``: efficiency benchmarks (library: ``vfbench.bench``; more scripts in ``benchmarks/``)."""

from __future__ import annotations

from typing import Optional

import typer

from vfbench.cli import app

bench_app = typer.Typer(help="Efficiency benchmarks (the paper's Table 4; see also benchmarks/ in the repository).",
                        no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.command("efficiency")
def efficiency_cmd(
    preset: str = typer.Option("small", "--preset", help="U-Net preset of both generators (tiny, small, paper)"),
    frames: int = typer.Option(16, "--frames", help="frames per clip"),
    size: int = typer.Option(32, "--size", help="frame size in pixels"),
    batch: int = typer.Option(1, "--batch", help="clips per denoising step"),
    sample_steps: int = typer.Option(5, "--sample-steps", help="DDIM steps of the whole-sample timing"),
    repeats: int = typer.Option(5, "--repeats", help="interleaved timed repeats per variant (medians are reported)"),
    warmup: int = typer.Option(1, "--warmup", help="untimed rounds first"),
    train: bool = typer.Option(True, "--train/--no-train", help="also time one training step"),
    memory: bool = typer.Option(True, "--memory/--no-memory", help="measure peak memory"),
    rss: bool = typer.Option(False, "--rss/--no-rss", help="cross-check memory: peak RSS in a fresh process per variant"),
    analytic: bool = typer.Option(True, "--analytic/--no-analytic",
                                  help="FLOPs and traced memory of --analytic-preset at --analytic-size (meta device)"),
    analytic_preset: str = typer.Option("paper", "--analytic-preset", help="preset of the analytic part"),
    analytic_size: int = typer.Option(128, "--analytic-size", help="frame size of the analytic part"),
    residual_width: int = typer.Option(0, "--residual-width", help="override VideoFusion's residual width (0: preset's)"),
    channels_last: bool = typer.Option(True, "--channels-last/--no-channels-last",
                                       help="channels-last memory format for both variants (what `vfbench sample` uses"
                                            " on a CPU; --no-channels-last: contiguous NCHW)"),
    breakdown: bool = typer.Option(True, "--breakdown/--no-breakdown", help="time the sub-networks too"),
    threads: int = typer.Option(1, "--threads", help="CPU threads (0: torch's default)"),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda"),
    seed: int = typer.Option(0, "--seed", help="seed of the inputs and weights"),
    out: Optional[str] = typer.Option(None, "--out", help="JSON result", show_default='<results>/bench/efficiency.json'),
):
    """VideoFusion vs VDM on the same base U-Net: step/sample latency, training step, peak memory (Table 4).

    Example: vfbench bench efficiency --preset small --frames 16 --size 32 --repeats 5
    """
    from vfbench.bench import EfficiencyConfig, efficiency, format_efficiency

    cfg = EfficiencyConfig(preset=preset, frames=frames, size=size, batch=batch, sample_steps=sample_steps,
                           repeats=repeats, warmup=warmup, train=train, memory=memory, rss=rss, analytic=analytic,
                           analytic_preset=analytic_preset, analytic_size=analytic_size, residual_width=residual_width,
                           channels_last=channels_last, breakdown=breakdown, threads=threads, device=device, seed=seed)
    _measure_and_save("efficiency", efficiency, format_efficiency, cfg, out)


def _measure_and_save(name: str, measure, fmt, cfg, out: Optional[str]) -> None:
    """Run a benchmark with progress on stderr, print its table, write its JSON (``--out`` or the default)."""
    from vfbench.bench import default_out, write_result

    res = measure(cfg, progress=lambda msg: typer.echo(f"... {msg}", err=True))
    typer.echo(fmt(res))
    path = out or default_out(name)
    write_result(path, res)
    typer.echo(f"result: {path}")


@bench_app.command("analytic")
def analytic_cmd(
    preset: str = typer.Option("paper", "--preset", help="U-Net preset (tiny, small, paper)"),
    frames: int = typer.Option(16, "--frames", help="frames per clip"),
    size: int = typer.Option(128, "--size", help="frame size in pixels"),
    batch: int = typer.Option(1, "--batch", help="clips per denoising step"),
):
    """FLOPs and traced peak memory of one denoiser call, VDM vs VideoFusion, on the meta device (seconds).

    Example: vfbench bench analytic --preset paper --size 128
    """
    from vfbench.bench import analytic_costs, format_table
    from vfbench.errors import UsageError, check_positive
    from vfbench.nets.unet import unet_preset_names

    if preset not in unet_preset_names():
        raise UsageError(f"--preset must be one of {', '.join(unet_preset_names())}, got {preset!r}")
    for name, v in (("--frames", frames), ("--size", size), ("--batch", batch)):
        check_positive(name, v)
    from vfbench.options import check_frames

    check_frames(frames)
    a = analytic_costs(preset, frames, size, batch)
    gib = 1024 ** 3
    rows = [["parameters (M)", a["vdm"]["params"] / 1e6, a["videofusion"]["params"] / 1e6, a["params_ratio"]],
            ["GFLOPs / denoiser call", a["vdm"]["flops_per_step"] / 1e9, a["videofusion"]["flops_per_step"] / 1e9,
             a["flops_per_step_ratio"]],
            ["peak activations (GiB)", a["vdm"]["peak_activation_bytes"] / gib,
             a["videofusion"]["peak_activation_bytes"] / gib, a["peak_activation_bytes_ratio"]],
            ["weights + input + activations (GiB)", a["vdm"]["inference_bytes"] / gib,
             a["videofusion"]["inference_bytes"] / gib, a["inference_bytes_ratio"]]]
    typer.echo(f"preset {preset}, {frames}x{size}x{size}, batch {batch} (meta device, nothing run)")
    typer.echo(format_table(rows, ["", "VDM", "VideoFusion", "VF / VDM"]))


@bench_app.command("protocol")
def protocol_cmd(
    generators: str = typer.Option(",".join(("vdm", "videofusion", "vidm")), "--generators",
                                   help="comma-separated generators to estimate"),
    preset: str = typer.Option("paper", "--preset", help="U-Net preset (tiny, small, paper)"),
    frames: int = typer.Option(16, "--frames", help="frames per clip"),
    size: int = typer.Option(128, "--size", help="frame size of the protocol"),
    num: int = typer.Option(2048, "--num", help="generated clips per generator (and real clips)"),
    measure_size: int = typer.Option(32, "--measure-size",
                                     help="frame size the per-step cost is measured at (scaled to --size by counted FLOPs)"),
    batch: int = typer.Option(4, "--batch", help="clips per measured sampling call"),
    sampler: Optional[str] = typer.Option(None, "--sampler", help="ddim, ddpm or dpmpp_2m",
                                          show_default="each generator's own"),
    steps: Optional[int] = typer.Option(None, "--steps", help="sampling steps", show_default="each generator's own"),
    repeats: int = typer.Option(2, "--repeats", help="timed repeats (medians)"),
    i3d_clips: int = typer.Option(2, "--i3d-clips", help="clips of the I3D timing (0 skips FVD/KVD)"),
    gpu_tflops: float = typer.Option(100.0, "--gpu-tflops",
                                     help="achieved TFLOP/s assumed for the GPU estimate from counted FLOPs"),
    threads: int = typer.Option(1, "--threads", help="CPU threads (0: torch's default)"),
    out: Optional[str] = typer.Option(None, "--out", help="JSON result", show_default="<results>/bench/protocol.json"),
):
    """Wall time of the paper protocol (2048 samples + I3D FVD/KVD per generator) from measured per-step costs.

    Example: vfbench bench protocol --preset paper --size 128 --measure-size 32
    """
    from vfbench.bench import ProtocolConfig, format_protocol, protocol_estimate

    cfg = ProtocolConfig(generators=tuple(g.strip() for g in generators.split(",") if g.strip()), preset=preset,
                         frames=frames, size=size, num=num, measure_size=measure_size, batch=batch, sampler=sampler,
                         steps=steps, repeats=repeats, i3d_clips=i3d_clips, gpu_tflops=gpu_tflops, threads=threads)
    _measure_and_save("protocol", protocol_estimate, format_protocol, cfg, out)
