"""``vfbench report``: one self-contained HTML file describing everything in a results directory.

Self-contained means: inline CSS, no JavaScript, every image (plots as PNG, samples as GIF) a
base64 ``data:`` URI, and a Content-Security-Policy that forbids fetching anything, so the file
can be mailed, archived or opened offline and shows the same thing. Every string that comes from
the user or from files (run names, config values, metric names, notes) is HTML-escaped.

Sections: provenance of the report, runs (generator, dataset, steps, final loss, git commit,
version, config hash), result records (value, std, confidence interval, sample counts, extractor),
ablation / comparison tables beside the papers' published values, plots (training loss, metric vs
lambda, efficiency benchmark), sample GIFs per run, and VideoFusion's content/motion control grid.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from vfbench.atomic import atomic_write_bytes, atomic_write_text, read_json
from vfbench.config import config_hash
from vfbench.errors import VfbenchError
from vfbench.pipeline import PLAN_FILE, latest_record, trained_step
from vfbench.results import ResultsStore

GRID_ROWS, GRID_COLS = 3, 4     # control grid: rows share base noise, columns share residual noise
PREVIEW_CLIPS = 8
CACHE_DIR = "report"            # per-run cache of rendered GIFs (runs/<run>/report/)


def e(x: Any) -> str:
    """HTML-escape anything shown in the report (quotes too: values also land in attributes)."""
    return html.escape("" if x is None else str(x), quote=True)


def data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def img(mime: str, data: bytes, alt: str, cls: str = "") -> str:
    c = f' class="{e(cls)}"' if cls else ""
    return f'<img{c} alt="{e(alt)}" src="{data_uri(mime, data)}">'


# -- collecting -----------------------------------------------------------------------------------
@dataclass
class RunInfo:
    name: str
    dir: Path
    config: Dict[str, Any]
    plan: Dict[str, Any]
    step: int
    summary: Dict[str, Any]
    provenance: Dict[str, Any]
    preview: Optional[bytes] = None
    preview_note: str = ""
    strip: Optional[bytes] = None     # PNG: real training clips above samples, every clip a row of frames
    strip_note: str = ""
    control: Optional[bytes] = None
    control_note: str = ""
    real_grid: Optional[bytes] = None     # GIF: real training clips in the sample grid's layout and size
    real_control: Optional[bytes] = None  # GIF: real training clips in the control grid's layout and size
    real_note: str = ""
    disentangle: List[Dict[str, Any]] = field(default_factory=list)

    @property
    def generator(self) -> str:
        return str(self.config.get("generator", "?"))

    @property
    def dataset(self) -> str:
        ds = self.config.get("dataset")
        return str(ds.get("name", "?")) if isinstance(ds, dict) else str(ds or "?")

    @property
    def is_base_pretraining(self) -> bool:
        return self.plan.get("group") == "pretrain" or self.name.startswith(("pretrained-base-", "pretrained-vidm-base-"))


def _read_json_or_empty(path: Path) -> Dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        obj = read_json(path)
    except VfbenchError as exc:
        warnings.warn(str(exc))
        return {}
    return obj if isinstance(obj, dict) else {}


def _sample_sets(run_dir: Path) -> List[Path]:
    """Complete sample sets of a run, newest first."""
    root = run_dir / "samples"
    if not root.is_dir():
        return []
    sets = []
    for d in root.iterdir():
        m = _read_json_or_empty(d / "manifest.json")
        if d.is_dir() and m.get("complete"):
            sets.append(d)
    return sorted(sets, key=lambda d: (d.stat().st_mtime, d.name), reverse=True)


def _load_preview_clips(samples_dir: Path, n: int):
    """Up to ``n`` uint8 clips from a sample set's shards (plain .npy, never pickles)."""
    import numpy as np

    out, have = [], 0
    for shard in sorted(samples_dir.glob("shard-*.npy")):
        arr = np.load(shard, mmap_mode="r", allow_pickle=False)
        if arr.dtype != np.uint8 or arr.ndim != 5:
            raise VfbenchError(f"sample shard {shard} is not uint8 [n, T, C, H, W]")
        out.append(np.asarray(arr[: n - have]))
        have += len(out[-1])
        if have >= n:
            break
    return np.concatenate(out) if out else None


STRIP_CLIPS = 4


def real_clips_of(run: RunInfo, n: int = STRIP_CLIPS):
    """The first ``n`` training clips of the run's dataset at the run's clip size (uint8), or None with a
    reason when the dataset cannot be read here (a real dataset not on this machine)."""
    import numpy as np

    ds = run.config.get("dataset")
    if not isinstance(ds, dict) or not ds.get("name"):
        return None, "the run records no dataset"
    try:
        from vfbench.runs import run_dataset

        dataset = run_dataset(ds)
        clips = [np.asarray(dataset[i]["video"]) for i in range(min(n, len(dataset)))]
    except (OSError, ValueError, VfbenchError) as exc:
        return None, f"real clips unavailable: {exc}"
    return (np.stack(clips), "") if clips else (None, "the dataset is empty")


def filmstrip_png(run: RunInfo) -> None:
    """Real clips above the run's samples, a row of frames each: the content of a row and the coherence
    along it are visible at once (a GIF shows only motion)."""
    from vfbench.previews import filmstrip_png_bytes

    for sdir in _sample_sets(run.dir):
        cached = run.dir / CACHE_DIR / f"strip-{sdir.name}.png"
        if cached.is_file():
            run.strip = cached.read_bytes()
            return
        try:
            fake = _load_preview_clips(sdir, STRIP_CLIPS)
        except (OSError, ValueError, VfbenchError) as exc:
            run.strip_note = f"could not read samples/{sdir.name}: {exc}"
            return
        if fake is None:
            continue
        real, why = real_clips_of(run, STRIP_CLIPS)
        groups = ([("real", real)] if real is not None else []) + [("generated", fake)]
        run.strip = filmstrip_png_bytes(groups, scale=max(1, 64 // int(fake.shape[-1])), label_width=64)
        run.strip_note = why
        atomic_write_bytes(cached, run.strip)
        return


def _cached_gif(path: Path, make: Callable[[], Optional[bytes]]) -> Optional[bytes]:
    if path.is_file():
        return path.read_bytes()
    data = make()
    if data is not None:
        atomic_write_bytes(path, data)
    return data


def _real_grid(run: RunInfo, n: int, cols: int, **labels) -> Optional[bytes]:
    """The run's first ``n`` real training clips in the layout of a sample grid of ``n`` clips (so both
    have the same pixel size), cached; None with ``run.real_note`` saying why when unreadable here."""
    from vfbench.reports.grids import grid_gif

    tag = "-labelled" if labels else ""
    cached = run.dir / CACHE_DIR / f"real-n{n}-c{cols}{tag}.gif"
    if cached.is_file():
        return cached.read_bytes()
    real, why = real_clips_of(run, n)
    if real is None:
        run.real_note = why
        return None
    if len(real) < n:
        run.real_note = f"the dataset has only {len(real)} clips"
    return _cached_gif(cached, lambda: grid_gif(real, cols, **labels))


def preview_gif(run: RunInfo) -> None:
    """A grid of the newest complete sample set's clips and, beside it, as many real training clips in
    the same layout: the same size on the page, so content and motion compare at a glance."""
    from vfbench.reports.grids import grid_gif

    for sdir in _sample_sets(run.dir):
        try:
            clips = _load_preview_clips(sdir, PREVIEW_CLIPS)
            if clips is None:
                continue
            run.preview = _cached_gif(run.dir / CACHE_DIR / f"samples-{sdir.name}.gif",
                                      lambda: grid_gif(clips, GRID_COLS))
            run.preview_note = f"samples/{sdir.name}"
            run.real_grid = _real_grid(run, len(clips), GRID_COLS)
            return
        except (OSError, ValueError, VfbenchError) as exc:
            run.preview_note = f"could not render samples/{sdir.name}: {exc}"
    if not run.preview_note:
        run.preview_note = "no complete sample set yet (vfbench sample RUN)"


def control_grid_clips(generator, rows: int = GRID_ROWS, cols: int = GRID_COLS, seed: int = 0,
                       steps: Optional[int] = None):
    """VideoFusion clips on a rows x cols grid: clip (r, c) has base noise b_r and residual noise r_c.

    Rows share content (same base noise), columns share motion (same residual noise), the
    paper's Sec. 3.5 / 4.7 control. The noises are drawn from explicit generators and passed to
    the sampler, so the grid is reproducible.
    """
    import torch

    cfg = generator.config
    frame = (cfg.channels, cfg.size, cfg.size)
    gb = torch.Generator().manual_seed(seed)
    gr = torch.Generator().manual_seed(seed + 1)
    base = torch.randn((rows, *frame), generator=gb)
    resid = torch.randn((cols, cfg.frames, *frame), generator=gr)
    base_noise = base.repeat_interleave(cols, dim=0)           # [rows*cols, C, H, W], row-major
    residual_noise = resid.repeat(rows, 1, 1, 1, 1)            # [rows*cols, N, C, H, W]
    extra = {} if steps is None else {"steps": steps}
    return generator.sample(rows * cols, generator=torch.Generator().manual_seed(seed),
                            base_noise=base_noise, residual_noise=residual_noise, **extra)


GRID_ROW_LABELS = [f"content {r + 1}" for r in range(GRID_ROWS)]     # row r: base noise b_r
GRID_COL_LABELS = [f"motion {c + 1}" for c in range(GRID_COLS)]      # column c: residual noise r_c


def control_grid(run: RunInfo, enabled: bool, steps: Optional[int] = None) -> None:
    """The content/motion grid of a VideoFusion run, labelled (rows: content, columns: motion), with
    real clips in the same layout beside it. The sampled clips are cached (sampling them is the
    slowest part of a report, so it is opt-in); the labelled GIF is drawn from them each time."""
    import numpy as np

    from vfbench.reports.grids import grid_gif

    if run.generator != "videofusion" or run.is_base_pretraining or run.step <= 0:
        return
    cached = run.dir / CACHE_DIR / (f"control-grid-step{run.step}" + (f"-ss{steps}" if steps else "") + ".npy")
    clips = None
    if cached.is_file():
        try:
            clips = np.load(cached, allow_pickle=False)
        except (OSError, ValueError) as exc:
            run.control_note = f"cached grid {cached} unreadable ({exc}); delete it and rerun with --control-grid"
            return
    elif not enabled:
        run.control_note = "not rendered (vfbench report --control-grid samples it)"
        return
    else:
        try:
            from vfbench.atomic import atomic_write
            from vfbench.runs import load_run

            gen, _cfg = load_run(run.dir, ema=True)
            clips = control_grid_clips(gen, steps=steps).numpy()
            with atomic_write(cached, "wb") as fh:
                np.save(fh, clips, allow_pickle=False)
        except (ImportError, VfbenchError, RuntimeError, ValueError, OSError) as exc:
            # one run that cannot be sampled (torn checkpoint, old architecture) must not sink the report
            run.control_note = f"not rendered: {exc}"
            return
    try:
        run.control = grid_gif(clips, GRID_COLS, row_labels=GRID_ROW_LABELS, col_labels=GRID_COL_LABELS)
    except (ValueError, VfbenchError) as exc:
        run.control_note = f"cached grid {cached} is not a clip grid ({exc}); delete it and rerun with --control-grid"
        return
    # the same margins, left blank, keep the real grid exactly the control grid's size
    run.real_control = _real_grid(run, len(clips), GRID_COLS, row_labels=["real clips"] + [""] * (GRID_ROWS - 1),
                                  col_labels=[""] * GRID_COLS)


def collect_runs(store: ResultsStore, records: Sequence[Dict[str, Any]], control: bool,
                 log: Callable[[str], None], sampling_steps: Optional[int] = None) -> List[RunInfo]:
    runs = []
    by_run: Dict[str, List[Dict[str, Any]]] = {}
    for r in records:
        by_run.setdefault(str(r.get("run")), []).append(r)
    for run_dir in store.iter_runs():
        cfg = _read_json_or_empty(run_dir / "config.json")
        plan = _read_json_or_empty(run_dir / PLAN_FILE).get("plan", {})
        recs = by_run.get(run_dir.name, [])
        prov = cfg.get("provenance") if isinstance(cfg.get("provenance"), dict) else None
        if prov is None and recs:
            prov = latest_record(recs).get("provenance") or {}
        run = RunInfo(run_dir.name, run_dir, cfg, plan if isinstance(plan, dict) else {}, trained_step(run_dir),
                      _read_json_or_empty(run_dir / "summary.json"), prov or {})
        run.disentangle = [r for r in recs if "disentangl" in str(r.get("metric", "")).lower()]
        preview_gif(run)
        filmstrip_png(run)
        if run.generator == "videofusion" and not run.is_base_pretraining and control:
            log(f"report: content/motion grid for {run.name}")
        control_grid(run, control, sampling_steps)
        runs.append(run)
    return runs


def latest_records(records: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One record per (run, metric, protocol): the newest (re-evaluations supersede)."""
    groups: Dict[tuple, List[Dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((str(r.get("run")), str(r.get("metric")), str(r.get("protocol"))), []).append(r)
    return [latest_record(groups[k]) for k in sorted(groups)]


def collect_tables(store: ResultsStore, records: Sequence[Dict[str, Any]]):
    from vfbench.reports.tables import Table, table_from_recipe

    out = []
    tdir = store.root / "tables"
    for p in sorted(tdir.glob("*.json")) if tdir.is_dir() else ():
        doc = _read_json_or_empty(p)
        if doc.get("format") != "vfbench-table-v1":
            continue
        try:
            out.append(table_from_recipe(doc["recipe"], records))
        except (VfbenchError, KeyError, TypeError, ValueError) as exc:
            try:  # the saved table, if the recipe no longer rebuilds (e.g. a renamed spec)
                out.append(Table.from_json(doc["table"]))
            except (KeyError, TypeError, ValueError):
                warnings.warn(f"table {p} could not be read ({exc}); skipping it")
    return out


def collect_bench(store: ResultsStore) -> List[tuple]:
    bdir = store.root / "bench"
    out = []
    for p in sorted(bdir.glob("*.json")) if bdir.is_dir() else ():
        try:
            out.append((p.name, json.loads(p.read_text(encoding="utf-8"))))
        except (OSError, ValueError) as exc:
            warnings.warn(f"benchmark file {p} is not valid JSON ({exc}); skipping it")
    return out


# -- rendering ------------------------------------------------------------------------------------
CSS = """
body{font-family:-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1240px;
color:#1d2329;line-height:1.45;padding:0 16px}
h1{font-size:1.6em;margin-bottom:0}h2{border-bottom:2px solid #dfe3e8;padding-bottom:4px;margin-top:2em}
h3{font-size:1.05em;margin-top:1.6em}
table{border-collapse:collapse;margin:8px 0 4px;font-size:13px}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:right;vertical-align:top}
th{background:#f3f5f7}td.l,th.l{text-align:left}
th.paper,td.paper{background:#fff6e0;color:#5c4400;font-style:italic}
.muted{color:#65707b;font-size:12px}.notes{font-size:12.5px;color:#3b4650;max-width:1100px}
code{background:#f3f5f7;padding:1px 4px;border-radius:3px;font-size:12px}
.cards{display:flex;flex-wrap:wrap;gap:16px}.pair{display:flex;gap:8px;margin:6px 0}.pair figure{flex:1 1 0;min-width:0;margin:0}.card{border:1px solid #d0d7de;border-radius:6px;padding:8px;
max-width:560px}.card.wide{max-width:780px}.card img{image-rendering:pixelated;max-width:100%}
img.plot{max-width:100%;border:1px solid #eef0f2}
.warn{background:#fdecea;border-left:4px solid #d93025;padding:6px 10px;font-size:13px}
.scroll{max-width:100%;overflow-x:auto;-webkit-overflow-scrolling:touch}
img{max-width:100%;height:auto}code{overflow-wrap:anywhere}.scroll td code,.scroll th code{white-space:nowrap;overflow-wrap:normal}
@media (max-width:600px){body{margin:12px auto;padding:0 8px}.cards{gap:8px}.card{max-width:100%;padding:4px}
h1{font-size:1.3em}}
"""


def _fmt(v: Any) -> str:
    from vfbench.reports.tables import fmt

    if v is None:
        return "—"
    try:
        return fmt(float(v))
    except (TypeError, ValueError):
        return str(v)


def _runs_table(runs: Sequence[RunInfo]) -> str:
    head = ("run", "generator", "dataset", "table row", "steps", "final loss", "params", "vfbench", "git commit",
            "config hash")
    rows = []
    for r in runs:
        cfg_core = {k: r.config[k] for k in ("generator", "generator_config", "dataset", "train") if k in r.config}
        variant = " / ".join(x for x in (r.plan.get("group"), r.plan.get("variant")) if x)
        target = r.plan.get("steps")
        steps = f"{r.step}" + (f" / {target}" if target and int(target) != r.step else "")
        commit = str(r.provenance.get("git_commit", "—"))
        rows.append("<tr>" + "".join([
            f'<td class="l"><code>{e(r.name)}</code></td>', f'<td class="l">{e(r.generator)}</td>',
            f'<td class="l">{e(r.dataset)}</td>', f'<td class="l">{e(variant or "—")}</td>', f"<td>{e(steps)}</td>",
            f"<td>{e(_fmt(r.summary.get('final_loss')))}</td>",
            f"<td>{e(_params(r.summary.get('num_params')))}</td>",
            f'<td class="l">{e(r.provenance.get("vfbench_version", "—"))}</td>',
            f'<td class="l"><code>{e(commit[:12] + ("+dirty" if commit.endswith("+dirty") else ""))}</code></td>',
            f'<td class="l"><code>{e(config_hash(cfg_core) if cfg_core else "—")}</code></td>']) + "</tr>")
    return _table(head, rows) if rows else '<p class="muted">No runs yet: <code>vfbench demo</code> makes some.</p>'


def _params(n: Any) -> str:
    if not isinstance(n, (int, float)):
        return "—"
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{int(n):,}"


def _table(head: Sequence[str], rows: Sequence[str], left: int = 1, paper_from: Optional[int] = None) -> str:
    ths = []
    for i, h in enumerate(head):
        cls = "l" if i < left else ("paper" if paper_from is not None and i >= paper_from else "")
        ths.append(f'<th class="{cls}">{e(h)}</th>' if cls else f"<th>{e(h)}</th>")
    # in a horizontal-scroll box: a wide table scrolls inside it on a phone instead of widening the page
    return ('<div class="scroll"><table><thead><tr>' + "".join(ths) + "</tr></thead><tbody>" + "\n".join(rows)
            + "</tbody></table></div>")


def _records_table(records: Sequence[Dict[str, Any]]) -> str:
    """One row per record; the optional columns (std, CI, trials, sample set) appear only when some
    record has a value there, so a table never shows a column of dashes for what nothing measured."""
    from vfbench.reports.tables import extractor_name

    if not records:
        return '<p class="muted">No result records yet: <code>vfbench evaluate --all</code> writes them.</p>'

    def ci(r):
        return None if r.get("ci_low") is None else f"[{_fmt(r.get('ci_low'))}, {_fmt(r.get('ci_high'))}]"

    def arrow(r):
        hib = r.get("higher_is_better")
        return "" if hib is None else (" ↑" if hib else " ↓")

    # (header, cell text or None, css class, optional)
    columns = [
        ("run", lambda r: f"<code>{e(r.get('run'))}</code>", "l", False),
        ("metric", lambda r: f"{e(r.get('metric'))}{e(arrow(r))}", "l", False),
        ("protocol", lambda r: e(r.get("protocol")), "l", False),
        ("value", lambda r: e(_fmt(r.get("value"))), "", False),
        ("std", lambda r: None if r.get("std") is None else e(_fmt(r["std"])), "", True),
        ("95% CI", lambda r: None if ci(r) is None else e(ci(r)), "", True),
        ("trials", lambda r: None if r.get("trials") in (None, 1) else e(r["trials"]), "", True),
        ("real", lambda r: e(r.get("num_real", "—")), "", False),
        ("generated", lambda r: e(r.get("num_fake", "—")), "", False),
        ("extractor", lambda r: e(extractor_name(r)), "l", False),
        ("sample set", lambda r: None if not r.get("samples_dir") else e(Path(str(r["samples_dir"])).name), "l", True),
        ("created", lambda r: e((r.get("provenance") or {}).get("created", "—")), "l muted", False),
    ]
    cells = [[fn(r) for _h, fn, _c, _o in columns] for r in records]
    keep = [j for j, (_h, _f, _c, optional) in enumerate(columns) if not optional or any(row[j] for row in cells)]
    head = [columns[j][0] for j in keep]
    rows = []
    for row in cells:
        tds = []
        for j in keep:
            cls = columns[j][2]
            tds.append((f'<td class="{cls}">' if cls else "<td>") + (row[j] if row[j] is not None else "—") + "</td>")
        rows.append("<tr>" + "".join(tds) + "</tr>")
    return _table(head, rows, left=3)


def _ablation_table(t) -> str:
    head = ["variant"] + [t.metric_header(m) for m in t.metrics] + ["seeds"] + t.paper_headers()
    paper_from = 2 + len(t.metrics)
    rows = []
    for i, label in enumerate(t.variants):
        seeds = max((c.n for c in t.cells[i]), default=0)
        tds = [f'<td class="l">{e(label)}<br><span class="muted">{e(", ".join(t.runs[i]))}</span></td>']
        for c in t.cells[i]:
            ci = "" if c.ci_low is None else f'<br><span class="muted">CI [{e(_fmt(c.ci_low))}, {e(_fmt(c.ci_high))}]</span>'
            nn = f' <span class="muted">(n={c.n})</span>' if 0 < c.n < seeds else ""
            tds.append(f"<td>{e(c.text())}{nn}{ci}</td>")
        tds.append(f"<td>{seeds}</td>")
        tds += [f'<td class="paper">{"—" if v is None else e(f"{v:g}")}</td>' for v in t.paper_values[i]]
        rows.append("<tr>" + "".join(tds) + "</tr>")
    notes = "".join(f"<li>{e(n)}</li>" for n in t.notes)
    legend = ('<p class="muted">Shaded italic columns are the published values (not measured here).</p>'
              if t.paper_columns else "")
    return (f"<h3>{e(t.title)}</h3>" + _table(head, rows, paper_from=paper_from) + legend
            + (f'<ul class="notes">{notes}</ul>' if notes else ""))


def _mini_banner(records: Sequence[Dict[str, Any]]) -> List[str]:
    """The warning over mini-protocol records, saying what they used (from the records themselves:
    a TaiChi/I3D report must not claim the built-in extractor on shapes)."""
    from vfbench.reports.tables import extractor_name

    mini = [r for r in records if str(r.get("protocol")) == "mini"]
    if not mini:
        return []
    extractors = sorted({extractor_name(r) for r in mini} - {"?"})
    datasets = sorted({str(r["dataset"]) for r in mini if r.get("dataset")})
    fakes = sorted({int(r["num_fake"]) for r in mini if isinstance(r.get("num_fake"), int) and r["num_fake"] > 0})
    what = []
    if fakes:
        what.append(f"{fakes[0]}" + (f"–{fakes[-1]}" if len(fakes) > 1 else "") + " generated clips, not 2048")
    if extractors:
        what.append("extractor " + ", ".join(f"<code>{e(x)}</code>" for x in extractors))
    if datasets:
        what.append("on " + ", ".join(f"<code>{e(d)}</code>" for d in datasets))
    detail = f" ({'; '.join(what)})" if what else ""
    return [f'<p class="warn">Records marked <b>mini</b> use the CPU-scale protocol{detail}: they are not'
            " comparable to published numbers.</p>"]


def render(store: ResultsStore, runs: Sequence[RunInfo], records: Sequence[Dict[str, Any]], tables,
           bench: Sequence[tuple], title: str) -> str:
    from vfbench.provenance import provenance
    from vfbench.reports import plots

    prov = provenance()
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        # Nothing may be fetched: data: images and the inline style only.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:;"
        " style-src 'unsafe-inline'\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f'<p class="muted">results directory <code>{e(store.root)}</code> · generated {e(now)} · vfbench'
        f' {e(prov.get("vfbench_version"))} · git <code>{e(prov.get("git_commit"))}</code> · torch'
        f' {e(prov.get("torch", "?"))} · {e(prov.get("platform"))}</p>',
        '<p class="muted">Sections: <a href="#runs">runs</a> · <a href="#results">results</a> ·'
        ' <a href="#tables">tables</a> · <a href="#plots">plots</a> · <a href="#samples">samples</a> ·'
        ' <a href="#control">content/motion control</a> · <a href="#diagnostics">metric diagnostics</a></p>',
    ]
    probes = [r for r in records if r.get("protocol") == "probe"]
    records = [r for r in records if r.get("protocol") != "probe"]
    parts += _mini_banner(records)

    parts += ['<h2 id="runs">Runs</h2>', _runs_table(runs)]
    parts += ['<h2 id="results">Result records</h2>',
              '<p class="muted">Newest record per (run, metric, protocol). std: over the metric\'s trials'
              " (or IS splits); CI: bootstrap interval where computed.</p>", _records_table(records)]

    parts.append('<h2 id="tables">Ablations and comparisons</h2>')
    parts += [_ablation_table(t) for t in tables] or [
        '<p class="muted">No tables yet: <code>vfbench ablate lambda</code>, <code>vfbench compare</code>.</p>']

    parts.append('<h2 id="plots">Plots</h2>')
    for t in tables:
        png = plots.metric_vs_x(t)
        if png:
            parts += [f"<h3>{e(t.title)}: metrics vs {e(t.x_label)}</h3>", img("image/png", png, f"{t.name} plot", "plot")]
    logs = [(r.name, r.dir / "log.csv") for r in runs if (r.dir / "log.csv").is_file()]
    png = plots.loss_curves(logs)
    parts += (["<h3>Training loss</h3>", img("image/png", png, "training loss curves", "plot")] if png else
              ['<p class="muted">No training logs yet.</p>'])
    for name, doc in bench:
        png = plots.efficiency_bars(doc, name)
        if png:
            parts += [f"<h3>Efficiency benchmark ({e(name)})</h3>", img("image/png", png, f"benchmark {name}", "plot")]
        ratios = plots.bench_ratios(doc)
        if ratios:
            rows = [f'<tr><td class="l">{e(q)}</td><td>{e(_fmt(m))}</td><td class="paper">{e(_fmt(p))}</td></tr>'
                    for q, m, p in ratios]
            parts += [_table(("VideoFusion / VDM", "measured", "paper (Table 4)"), rows, paper_from=2),
                      '<p class="muted">Ratios below 1 mean VideoFusion is cheaper. The paper measured'
                      " its own models at 16x128x128 on a GPU; compare directions.</p>"]

    parts.append('<h2 id="samples">Samples</h2><p class="muted">Each run\'s generated clips beside as many of its'
                 " real training clips, in the same layout and at the same size; runs grouped by the table they"
                 " belong to.</p>")
    for group, members in _groups([r for r in runs if not r.is_base_pretraining]):
        parts.append(f"<h3>{e(group)}</h3><div class=\"cards\">")
        for r in members:
            gen = (img("image/gif", r.preview, f"samples of {r.name}") if r.preview
                   else f'<p class="muted">{e(r.preview_note)}</p>')
            body = _beside(r, r.real_grid, gen, f"generated ({r.preview_note})" if r.preview else "generated")
            if r.strip:
                body += ('<span class="muted">real training clips (top) and generated clips, one clip per row, '
                         f'frames left to right{": " + e(r.strip_note) if r.strip_note else ""}</span><br>'
                         + img("image/png", r.strip, f"real clips and samples of {r.name}", "plot"))
            parts.append(f'<div class="card"><b><code>{e(r.name)}</code></b> <span class="muted">{e(r.generator)}'
                         f" · step {r.step}</span>{body}</div>")
        parts.append("</div>")

    parts.append('<h2 id="control">VideoFusion content / motion control</h2>'
                 '<p class="muted">Row <i>content k</i>: every clip shares base noise k (the same content should'
                 " appear along the row); column <i>motion k</i>: every clip shares residual noise k (the same"
                 " motion should appear down the column). Sampled from each run's EMA weights with fixed seeds;"
                 " real training clips in the same layout beside each grid.</p><div class=\"cards\">")
    any_vf = False
    for r in runs:
        if r.generator != "videofusion" or r.is_base_pretraining:
            continue
        any_vf = True
        score = "".join(f"<br>{e(d.get('metric'))}: <b>{e(_fmt(d.get('value')))}</b>" for d in r.disentangle)
        if r.control:
            body = _beside(r, r.real_control, img("image/gif", r.control, f"control grid of {r.name}"),
                           "generated: rows content, columns motion")
        else:
            body = f'<p class="muted">{e(r.control_note or "not available")}</p>'
        parts.append(f'<div class="card wide"><b><code>{e(r.name)}</code></b> <span class="muted">step {r.step}'
                     f"</span>{score}{body}</div>")
    if not any_vf:
        parts.append('<p class="muted">No VideoFusion runs.</p>')
    parts.append("</div>")
    parts += _diagnostics(probes)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _diagnostics(probes: Sequence[Dict[str, Any]]) -> List[str]:
    """``vfbench probe`` records: the temporal-sensitivity table and bars, the sample-count curves."""
    from vfbench.reports import plots

    parts = ['<h2 id="diagnostics">Metric diagnostics</h2>']
    if not probes:
        return parts + ['<p class="muted">No probes yet: <code>vfbench probe temporal</code>,'
                        " <code>vfbench probe count</code>.</p>"]
    temporal = [r for r in probes if (r.get("details") or {}).get("probe") == "temporal"]
    count = [r for r in probes if (r.get("details") or {}).get("probe") == "count"]
    if temporal:
        parts.append('<h3>Temporal sensitivity</h3><p class="muted">FVD between real clips and the same clips'
                     " corrupted; blur and noise change the pixels as much as the shuffle does. A metric that sees"
                     " motion puts shuffle/reverse/freeze well above the floor (two disjoint real sets).</p>")
        rows, groups = [], {}
        for r in temporal:
            d = r.get("details") or {}
            label = f"{d.get('extractor')} on {r.get('dataset')} ({r.get('num_real')} clips)"
            if d.get("ratio_to_floor") is not None:
                groups.setdefault(label, {})[str(d.get("transform"))] = float(d["ratio_to_floor"])
            mse = d.get("pixel_mse")
            rows.append(f'<tr><td class="l">{e(label)}</td><td class="l">{e(d.get("transform"))}</td>'
                        f'<td>{e("—" if mse is None else _fmt(mse))}</td><td>{e(_fmt(r.get("value")))}</td>'
                        f'<td>{e(_fmt(d.get("ratio_to_floor")))}</td></tr>')
        parts.append(_table(("extractor", "corruption", "pixel MSE", "FVD", "FVD / floor"), rows, left=2))
        png = plots.probe_temporal_bars(groups)
        if png:
            parts.append(img("image/png", png, "temporal sensitivity bars", "plot"))
    if count:
        parts.append('<h3>Sample-count bias</h3><p class="muted">FVD at N clips per side and its extrapolation'
                     " to infinitely many (least squares in 1/N, as FID-infinity).</p>")
        rows, curves = [], {}
        for r in count:
            d = r.get("details") or {}
            label = f"{d.get('extractor')} on {r.get('dataset')} vs {d.get('other')}"
            ns, vals = list(d.get("n") or []), list(d.get("fvd") or [])
            if ns and len(ns) == len(vals):
                curves[label] = (ns, vals, float(r.get("value")), float(d.get("slope", 0.0)))
            pts = ", ".join(f"{n}: {_fmt(v)}" for n, v in zip(ns, vals))
            rows.append(f'<tr><td class="l">{e(label)}</td><td class="l">{e(pts)}</td>'
                        f'<td>{e(_fmt(r.get("value")))}</td></tr>')
        parts.append(_table(("extractor", "FVD at N", "FVD at N = inf"), rows, left=2))
        png = plots.probe_count_curves(curves)
        if png:
            parts.append(img("image/png", png, "sample-count bias curves", "plot"))
    return parts


def _groups(runs: Sequence[RunInfo]) -> List[tuple]:
    """(heading, runs) per table the runs were trained for (``plan.json``'s group), in order of appearance."""
    out: Dict[str, List[RunInfo]] = {}
    for r in runs:
        g = str(r.plan.get("group") or "")
        out.setdefault(f"{g} runs" if g else "other runs", []).append(r)
    return list(out.items())


def _beside(run: RunInfo, real: Optional[bytes], generated: str, caption: str) -> str:
    """Real clips | a generated grid, as two equal figures (the GIFs have the same pixel size)."""
    left = (img("image/gif", real, f"real clips of {run.name}") if real
            else f'<p class="muted">{e(run.real_note or "real clips unavailable")}</p>')
    return ('<div class="pair"><figure><figcaption class="muted">real training clips</figcaption>'
            f'{left}</figure><figure><figcaption class="muted">{e(caption)}</figcaption>{generated}</figure></div>')


def build_report(store: ResultsStore, *, title: str = "vfbench report", control_grid: bool = False,
                 sampling_steps: Optional[int] = None,
                 log: Callable[[str], None] = lambda s: None) -> str:
    all_records = list(store.iter_records())
    records = latest_records(all_records)
    runs = collect_runs(store, records, control_grid, log, sampling_steps)
    tables = collect_tables(store, all_records)
    return render(store, runs, records, tables, collect_bench(store), title)


def write_report(store: ResultsStore, out: Optional[Path] = None, **kwargs) -> Path:
    """Render the report of ``store`` to ``out`` (default ``<results>/reports/report.html``)."""
    text = build_report(store, **kwargs)
    path = Path(out) if out else store.reports_dir / "report.html"
    atomic_write_text(path, text)
    return path
