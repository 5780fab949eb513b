"""``vfbench evaluate``: score a run's samples (or any folder of clips) under a protocol's metrics."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from vfbench.cli import app
from vfbench.errors import UsageError


def _fmt(v) -> str:
    if v is None:
        return ""
    return f"{v:.1f}" if abs(v) >= 100 else f"{v:.4g}"


def _arrows() -> tuple:
    """(lower-is-better, higher-is-better) marks: the arrows where the terminal can print them, else words."""
    import sys

    try:
        "↓↑".encode(getattr(sys.stdout, "encoding", None) or "ascii")
        return "↓", "↑"
    except (UnicodeEncodeError, LookupError):
        return "(lower better)", "(higher better)"


def format_table(records: List[dict]) -> str:
    """A small plain-text table of result records, with the direction of each metric beside its value."""
    down, up = _arrows()
    rows = [("run", "metric", "protocol", "value", "std", "95% CI", "real/fake x trials")]
    for r in records:
        ci = f"[{_fmt(r.get('ci_low'))}, {_fmt(r.get('ci_high'))}]" if r.get("ci_low") is not None else ""
        arrow = up if r.get("higher_is_better") else down
        rows.append((str(r.get("run") or Path(str(r.get("samples_dir"))).name), str(r["metric"]),
                     str(r.get("protocol")), f"{_fmt(r['value'])} {arrow}", _fmt(r.get("std")), ci,
                     f"{r.get('num_real', 0)}/{r.get('num_fake')} x {r.get('trials', 1)}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    legend = f"{down} lower is better, {up} higher is better" if len(down) == 1 else ""
    return "\n".join(["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
                     + ([legend] if legend else []))


def _quiet_rank() -> bool:
    """A non-zero rank of a torchrun job: rank 0 prints the table."""
    from vfbench.distributed import dist_info

    info = dist_info()
    return info.enabled and not info.is_main


@app.command("evaluate")
def evaluate_cmd(
    run: Optional[str] = typer.Argument(None, help="Run name (in the results dir) or run directory."),
    protocol: Optional[str] = typer.Option(None, "--protocol", show_default='mini', help="mini (CPU scale; the default) or paper (2048 vs 2048, I3D, C3D IS)."),
    metrics: Optional[str] = typer.Option(None, "--metrics", show_default="the protocol's", help="Comma-separated metric names (default: the protocol's); see `vfbench ls metrics`."),
    tag: Optional[str] = typer.Option(None, "--tag", help="Sample set samples/<tag>/ of the run", show_default='the only or largest one'),
    all_runs: bool = typer.Option(False, "--all", help="Every run with samples and no record yet for these metrics."),
    samples: Optional[Path] = typer.Option(None, "--samples", show_default='none', help="Any folder of .npy/.npz uint8 shards (n, T, C, H, W) or videos (external generators)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", show_default="the run's", help="Reference dataset (required with --samples; default: the run's)."),
    trials: Optional[int] = typer.Option(None, "--trials", help="Independent sample sets (disjoint slices): mean +- std", show_default="the metric's, 1; 10 for is2048_ucf_tganv2"),
    bootstrap: int = typer.Option(0, "--bootstrap", help="Resamples for a 95% bootstrap interval of FVD (0: none)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Recompute the real-data statistics instead of using the cache."),
    offline: bool = typer.Option(False, "--offline", help="Never download weights."),
    i3d_weights: Optional[Path] = typer.Option(None, "--i3d-weights", help="I3D weights file", show_default='the converted cache'),
    c3d_weights: Optional[Path] = typer.Option(None, "--c3d-weights", show_default='none (needed for is2048_ucf)', help="C3D UCF-101 weights: conv3d_deepnetA_ucf.npz (mean2.npz beside it) or c3d_ucf101.pt."),
    results: Optional[Path] = typer.Option(None, "--results", help="Results directory", show_default='./vfbench-results or VFBENCH_HOME'),
    data_root: Optional[Path] = typer.Option(None, "--data-root", show_default="the run's, or VFBENCH_DATA/<name>", help="Root folder of the reference dataset."),
    device: str = typer.Option("auto", "--device", help="auto (a GPU if there is one, else cpu), cpu, cuda or cuda:N."),
    batch_size: int = typer.Option(8, "--batch-size", help="Clips per extractor batch."),
    seed: int = typer.Option(0, "--seed", help="Seed of the real clip selection and the bootstrap."),
    i3d_preset: Optional[str] = typer.Option(None, "--i3d-preset", show_default='reference', help="I3D convention to imitate: reference (default), stylegan-v, tats, latte or cd-fvd (see `vfbench protocols`); the metric name gets the preset as a suffix."),
    i3d_impl: Optional[str] = typer.Option(None, "--i3d-impl", show_default='fused', help="I3D implementation: fused (default; channels-last, BatchNorm folded) or eager (the layer-for-layer port); same fp32 function, recorded in the result."),
    real_selection: Optional[str] = typer.Option(None, "--real-selection", show_default='reference', help="reference (shuffled train set, default) or stylegan-v (first videos)."),
    fit: bool = typer.Option(False, "--fit", help="Resize generated clips of another size to the metric's (centre crop + antialiased bilinear; printed and recorded) instead of refusing them."),
):
    """Score generated clips with FVD/KVD/IS under a protocol and write one result record per metric.

    Under torchrun the feature extraction is sharded over the ranks (same numbers as one process);
    rank 0 writes the records and prints the table, the other ranks print nothing.

    Example: vfbench evaluate videofusion-shapes --protocol mini --bootstrap 100
    """
    from vfbench.errors import check_positive
    from vfbench.evaluation import evaluate, evaluate_all
    from vfbench.results import ResultsStore

    check_positive("--batch-size", batch_size)
    from vfbench.options import check_device

    check_device(device)
    if device == "auto":  # as `sample` resolves it; the extractors take a concrete device
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    from vfbench.options import check_seed

    check_seed(seed)
    if bootstrap < 0:
        raise UsageError(f"--bootstrap must be 0 or a positive number of resamples, got {bootstrap}")
    if trials is not None:
        check_positive("--trials", trials)
    if protocol is not None and protocol not in ("mini", "paper"):
        from vfbench.errors import did_you_mean

        raise UsageError(did_you_mean("protocol", protocol, ["mini", "paper"]))
    names = [m.strip() for m in metrics.split(",") if m.strip()] if metrics else None
    if names is None and protocol is None:
        protocol = "mini"
    if names:
        from vfbench.metrics.protocols import check_metric_name

        for n in names:
            check_metric_name(n)
    store = ResultsStore.open(results)
    common = dict(trials=trials, bootstrap=bootstrap, seed=seed, batch_size=batch_size, device=device,
                  cache=not no_cache, offline=offline, i3d_weights=i3d_weights, c3d_weights=c3d_weights,
                  data_root=data_root, real_selection=real_selection, i3d_preset=i3d_preset, i3d_impl=i3d_impl,
                  fit=fit)
    given = sum(x is not None and x is not False for x in (run, samples, all_runs or None))
    if given != 1:
        raise UsageError("give exactly one of RUN, --all or --samples DIR (with --dataset NAME)")
    if all_runs:
        records, skipped = evaluate_all(store, protocol=protocol, metrics=names, tag=tag,
                                        log=lambda s: typer.echo(s, err=True), **common)
        if _quiet_rank():  # under torchrun rank 0 reports
            return
        if not records:
            typer.echo(f"nothing to evaluate ({len(skipped)} run(s) already evaluated)")
            return
    elif samples is not None:
        if not dataset:
            raise UsageError("--samples needs --dataset NAME, the reference dataset to compare against")
        records = evaluate(samples, names, dataset, store, protocol=protocol, tag=tag, **common)
    else:
        records = evaluate(None, names, dataset, store, protocol=protocol, run=run, tag=tag,
                           **common)
    if _quiet_rank():  # under torchrun rank 0 reports
        return
    typer.echo(format_table(records))
    for w in dict.fromkeys(w for r in records for w in (r.get("warnings") or [])):  # each once, in order
        typer.echo(f"warning: {w}", err=True)
    typer.echo(f"{len(records)} record(s) written to {store.records_dir}")
