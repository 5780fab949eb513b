"""``vfbench sample``: draw clips from a trained run into resumable shards (vfbench.sampling)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

import typer

from vfbench.cli import app
from vfbench.errors import UsageError


def parse_controls(items: List[str]) -> Dict[str, Any]:
    """``KEY=VALUE`` pairs; values are parsed as YAML scalars (3.0 -> float, ddim -> str, 50 -> int)."""
    import yaml

    out: Dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key.isidentifier():
            raise UsageError(f"--control {item!r} must look like KEY=VALUE, e.g. --control guidance_scale=2.0")
        try:
            out[key] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            out[key] = raw
    return out


@app.command("sample")
def sample_cmd(
    run: str = typer.Argument(..., help="Run name (in the results dir) or run folder."),
    num: int = typer.Option(..., "--num", help="Number of clips to draw."),
    seed: int = typer.Option(0, "--seed", help="Seed; shard i uses a seed derived from (seed, i)."),
    batch_size: int = typer.Option(16, "--batch-size", help="Clips per generator call and per shard file."),
    tag: Optional[str] = typer.Option(None, "--tag", help="Folder name under samples/", show_default='step<N>-seed<S>-n<num>'),
    raw: bool = typer.Option(False, "--raw", help="Use the raw weights instead of the EMA weights."),
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", help="A step number or checkpoint file", show_default='the newest'),
    control: List[str] = typer.Option([], "--control", help="Generator sampling control KEY=VALUE (repeatable), e.g. guidance_scale=2.0."),
    length: Optional[int] = typer.Option(
        None, "--length", show_default="the training length", help="Frames per clip, beyond the training length: videofusion and vdm extend window by"
        " window (--control overlap=K; vdm also guidance_weight=W), vidm up to its max_frames. Part of the request"
        " and of the default tag (-len<L>)."),
    sampling_steps: Optional[int] = typer.Option(
        None, "--sampling-steps", show_default="the run's sampling_steps",
        help="Sampling steps of the run's sampler (the same as --control steps=N or sampling_steps=N)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, bf16 (autocast of the denoisers; fast on GPUs and on"
                                  " CPUs with AMX-BF16 / AVX512-BF16, many times slower elsewhere), fp16 (GPU only) or auto"
                                  " (bf16 where it is native, else fp32). Recorded in the manifest; not fp32 adds -bf16 to"
                                  " the default tag."),
    memory_format: str = typer.Option("auto", "--memory-format", help="auto (channels-last on a CPU, up to a third faster"
                                      " there; contiguous on a GPU), contiguous or channels_last: how the nets' weights and"
                                      " activations are laid out. Outputs differ only by float rounding; recorded in the"
                                      " manifest."),
    force: bool = typer.Option(False, "--force", help="Delete samples of a different request under the same tag."),
    no_preview: bool = typer.Option(False, "--no-preview", help="Skip preview.gif."),
    results: Optional[Path] = typer.Option(None, "--results", help="Results directory", show_default='./vfbench-results or VFBENCH_HOME'),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
):
    """Sample a trained run into samples/<tag>/ (uint8 .npy shards, manifest.json, preview.gif).

    Rerunning the same command after an interruption draws only the missing shards.

    Example: vfbench sample videofusion-shapes --num 256 --seed 0 --batch-size 16

    Long videos: vfbench sample vdm-shapes --num 64 --length 64 --control guidance_weight=2.0
    """
    from vfbench.results import ResultsStore
    from vfbench.sampling import sample_run

    controls = parse_controls(control)
    if sampling_steps is not None:
        from vfbench.errors import check_positive

        check_positive("--sampling-steps", sampling_steps)
        given = controls.get("steps", controls.get("sampling_steps", sampling_steps))
        if given != sampling_steps:
            raise UsageError(f"--sampling-steps {sampling_steps} and --control steps={given} disagree; pass one of them")
        controls = {k: v for k, v in controls.items() if k not in ("steps", "sampling_steps")}
        controls["steps"] = sampling_steps
    store = ResultsStore.open(results)
    run_dir = store.resolve_run(run)
    if "length" in controls:
        raise UsageError("the clip length is not a sampling control; pass --length L instead of --control length=L")
    out = sample_run(run_dir, num=num, seed=seed, batch_size=batch_size, tag=tag, ema=not raw,
                     checkpoint=checkpoint, device=device, force=force, progress=progress,
                     preview=not no_preview, length=length, precision=precision, memory_format=memory_format,
                     **controls)
    typer.echo(str(out))
