"""Matplotlib figures for reports, returned as PNG bytes (embedded as data URIs, never linked).

Figures are built on ``matplotlib.figure.Figure`` directly (no pyplot global state, no display
needed) and saved without timestamps in their metadata, so the same inputs give the same bytes.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
           "#7f7f7f", "#bcbd22")


def _text(s: Any) -> str:
    # "$" would switch matplotlib to mathtext (and can raise on odd input): show it literally.
    return str(s).replace("$", r"\$")


def _png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def read_log(path: Path) -> Tuple[List[float], List[float]]:
    """(steps, losses) from a run's ``log.csv``; rows that do not parse (a torn last line) are skipped."""
    steps, losses = [], []
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                try:
                    s, v = float(row["step"]), float(row["loss"])
                except (KeyError, TypeError, ValueError):
                    continue
                if math.isfinite(v):
                    steps.append(s)
                    losses.append(v)
    except (OSError, ValueError, csv.Error) as exc:  # a binary or damaged log must not sink the report
        import warnings

        warnings.warn(f"skipping training log {path}: it is not UTF-8 CSV text ({exc})")
    return steps, losses


def loss_curves(logs: Sequence[Tuple[str, Path]], title: str = "training loss") -> Optional[bytes]:
    """One line per run (log-scale loss); None when no run has a usable log."""
    from matplotlib.figure import Figure

    series = [(name, *read_log(p)) for name, p in logs]
    series = [s for s in series if s[1]]
    if not series:
        return None
    fig = Figure(figsize=(8, 4))
    ax = fig.add_subplot(1, 1, 1)
    for i, (name, steps, losses) in enumerate(series):
        # a short run logs a handful of points: show them as markers, not an invisible line
        ax.plot(steps, losses, label=_text(name), color=_COLORS[i % len(_COLORS)], linewidth=1.2,
                marker="o" if len(steps) < 20 else None, markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if all(v > 0 for _, _, ls in series for v in ls):
        ax.set_yscale("log")
    ax.set_title(_text(title))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if len(series) > 6 else 1)
    return _png(fig)


def _paper_column(table, metric: str) -> Optional[int]:
    """Index of the published column of ``metric``'s kind (FVD, KVD or IS), or None."""
    m = metric.lower()
    kind = m[:3] if m.startswith(("fvd", "kvd")) else ("is" if m.startswith("is") else "")
    cols = [c for c, (k, _d, _r) in enumerate(table.paper_columns) if k.lower() == kind]
    return cols[0] if cols else None


def metric_vs_x_figure(table):
    """The figure of ``metric_vs_x``, or None: one row per metric, the measured values (with std error
    bars) on the left and the published ones on the right, each on its own axis. Never one plot with
    twin y-axes: the two scales differ (other dataset, resolution, extractor), and with a few points
    one line hides under the other."""
    from matplotlib.figure import Figure

    if not table.x_label or not any(x is not None for x in table.xs):
        return None
    order = sorted((i for i, x in enumerate(table.xs) if x is not None), key=lambda i: table.xs[i])
    rows = []
    for j, m in enumerate(table.metrics):
        pts = [(table.xs[i], table.cells[i][j]) for i in order if table.cells[i][j].mean is not None]
        c = _paper_column(table, m)
        paper = [] if c is None else [(table.xs[i], table.paper_values[i][c]) for i in order
                                      if table.paper_values[i][c] is not None]
        if pts:
            rows.append((m, pts, c, paper))
    if not rows:
        return None
    with_paper = any(paper for *_x, paper in rows)
    ncols = 2 if with_paper else 1
    fig = Figure(figsize=(4.2 * ncols, 2.9 * len(rows)))
    for r, (m, pts, c, paper) in enumerate(rows):
        ax = fig.add_subplot(len(rows), ncols, r * ncols + 1)
        ax.errorbar([p[0] for p in pts], [p[1].mean for p in pts], yerr=[p[1].std or 0.0 for p in pts],
                    marker="o", capsize=4, color=_COLORS[0])
        ax.set_title(_text(f"measured: {table.metric_header(m)}"), fontsize=9)
        panels = [ax]
        if with_paper:
            pax = fig.add_subplot(len(rows), ncols, r * ncols + 2, sharex=ax)
            if paper:
                pax.plot([p[0] for p in paper], [p[1] for p in paper], linestyle="--", marker="s", color=_COLORS[1])
                pax.set_title(_text(f"published: {table.paper_headers()[c]}"), fontsize=9, color=_COLORS[1])
            else:
                pax.text(0.5, 0.5, "no published value", ha="center", va="center", transform=pax.transAxes,
                         fontsize=8, color="#65707b")
                pax.set_yticks([])
            panels.append(pax)
        for a in panels:
            a.set_xlabel(_text(table.x_label), fontsize=8)
            a.tick_params(labelsize=7)
            a.ticklabel_format(axis="y", useOffset=False)  # nearly equal values: no "1e-6+1" offset label
            a.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def metric_vs_x(table) -> Optional[bytes]:
    """PNG of ``metric_vs_x_figure``, or None when the table has no numeric axis or no measured value."""
    fig = metric_vs_x_figure(table)
    return None if fig is None else _png(fig)


def _bench_rows(doc: Any) -> List[Dict[str, Any]]:
    """Rows of a ``results/bench/*.json`` document: a list of dicts, or one under a list-valued key."""
    if isinstance(doc, list):
        return [r for r in doc if isinstance(r, dict)]
    if isinstance(doc, dict):
        for key in ("rows", "results", "generators", "entries"):
            if isinstance(doc.get(key), list):
                return [r for r in doc[key] if isinstance(r, dict)]
        if all(isinstance(v, dict) for v in doc.values()) and doc:
            return [{"name": k, **v} for k, v in doc.items()]
    return []


def _flatten(d: Dict[str, Any], prefix: str = "") -> Dict[str, float]:
    out: Dict[str, float] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = float(v)
    return out


# Known fields of ``vfbench bench efficiency`` output: (flattened key, axis title, scale).
BENCH_FIELDS = (
    ("step.median_s", "denoising step latency (s)", 1.0),
    ("step_memory.peak_bytes", "step peak memory (MiB)", 1.0 / 2 ** 20),
    ("sample.median_s", "whole-sample latency (s)", 1.0),
    ("train_step.median_s", "training step latency (s)", 1.0),
    ("memory_GB", "memory (GB)", 1.0),
    ("latency_s", "latency (s)", 1.0),
    ("params", "parameters (M)", 1e-6),
)


def bench_series(doc: Any) -> Tuple[List[str], Dict[str, List[Optional[float]]]]:
    """(row labels, {axis title: values}) of an efficiency benchmark document.

    Understands ``vfbench bench efficiency`` output (``{"variants": {name: {...}}}``) and plain
    lists of rows; unknown layouts fall back to their first numeric fields.
    """
    if isinstance(doc, dict) and isinstance(doc.get("variants"), dict):
        rows = [{"name": k, **_flatten(v)} for k, v in doc["variants"].items() if isinstance(v, dict)]
    else:
        rows = [{**{k: v for k, v in r.items() if isinstance(v, str)}, **_flatten(r)} for r in _bench_rows(doc)]
    labels = [str(r.get("generator") or r.get("method") or r.get("name") or f"row {i}") for i, r in enumerate(rows)]
    fields: Dict[str, List[Optional[float]]] = {}
    for key, title, scale in BENCH_FIELDS:
        vals = [r.get(key) for r in rows]
        if any(v is not None for v in vals):
            fields[title] = [v * scale if isinstance(v, (int, float)) and not isinstance(v, bool) else None
                             for v in vals]
    if not fields:  # any other numeric columns
        keys = sorted({k for r in rows for k, v in r.items() if isinstance(v, float)})
        for key in keys[:4]:
            fields[key] = [r.get(key) for r in rows]
    return labels, fields


def bench_ratios(doc: Any) -> List[Tuple[str, float, Optional[float]]]:
    """(quantity, measured VideoFusion / VDM, published ratio) from ``vfbench bench efficiency`` output."""
    if not isinstance(doc, dict) or not isinstance(doc.get("variants"), dict):
        return []
    var = {k: _flatten(v) for k, v in doc["variants"].items() if isinstance(v, dict)}
    if "videofusion" not in var or "vdm" not in var:
        return []
    paper = doc.get("paper_table4") if isinstance(doc.get("paper_table4"), dict) else {}
    out = []
    for key, title, paper_key in (("step.median_s", "denoising step latency", "latency_ratio"),
                                  ("step_memory.peak_bytes", "step peak memory", "memory_ratio")):
        a, b = var["videofusion"].get(key), var["vdm"].get(key)
        if a is not None and b:
            p = paper.get(paper_key)
            out.append((title, a / b, float(p) if isinstance(p, (int, float)) else None))
    return out


def efficiency_bars(doc: Any, title: str) -> Optional[bytes]:
    from matplotlib.figure import Figure

    labels, fields = bench_series(doc)
    if not labels or not fields:
        return None
    fig = Figure(figsize=(3.6 * len(fields), 3.4))
    for j, (key, vals) in enumerate(fields.items()):
        ax = fig.add_subplot(1, len(fields), j + 1)
        xs = list(range(len(labels)))
        ax.bar(xs, [v if v is not None else 0.0 for v in vals],
               color=[_COLORS[i % len(_COLORS)] for i in xs])
        ax.set_xticks(xs)
        ax.set_xticklabels([_text(l) for l in labels], rotation=20, ha="right", fontsize=8)
        ax.set_title(_text(key), fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(_text(title), fontsize=10)
    fig.tight_layout()
    return _png(fig)


def probe_temporal_bars(groups: Dict[str, Dict[str, float]]) -> Optional[bytes]:
    """Bars of FVD / floor per corruption, one panel per extractor (``{label: {corruption: ratio}}``)."""
    from matplotlib.figure import Figure

    groups = {k: v for k, v in groups.items() if v}
    if not groups:
        return None
    fig = Figure(figsize=(3.8 * len(groups), 3.2))
    for j, (label, ratios) in enumerate(groups.items()):
        ax = fig.add_subplot(1, len(groups), j + 1)
        names = list(ratios)
        xs = list(range(len(names)))
        ax.bar(xs, [ratios[n] for n in names], color=[_COLORS[i % len(_COLORS)] for i in xs])
        ax.axhline(1.0, color="#555", lw=0.8, ls="--")
        ax.set_xticks(xs)
        ax.set_xticklabels([_text(n) for n in names], rotation=20, ha="right", fontsize=8)
        ax.set_ylabel("FVD / real-vs-real floor", fontsize=8)
        ax.set_title(_text(label), fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def probe_count_curves(curves: Dict[str, Tuple[List[int], List[float], float, float]]) -> Optional[bytes]:
    """FVD against 1/N with the least-squares line to 1/N = 0 (``{label: (n, fvd, fvd_inf, slope)}``)."""
    from matplotlib.figure import Figure

    if not curves:
        return None
    fig = Figure(figsize=(5.2, 3.4))
    ax = fig.add_subplot(1, 1, 1)
    for i, (label, (ns, vals, a, b)) in enumerate(curves.items()):
        c = _COLORS[i % len(_COLORS)]
        xs = [1.0 / n for n in ns]
        ax.plot(xs, vals, "o", color=c, label=_text(label))
        ax.plot([0.0, max(xs)], [a, a + b * max(xs)], "-", color=c, lw=1)
    ax.set_xlabel("1 / N (clips per side)", fontsize=8)
    ax.set_ylabel("FVD", fontsize=8)
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)
