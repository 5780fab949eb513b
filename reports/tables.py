"""Ablation / comparison tables from result records: CSV, markdown and a JSON recipe for reports.

A table has one row per variant (mean +- std over its seeds' runs), one measured column per
metric, and the papers' published values in separate columns labelled ``paper FVD (UCF-101
16x64x64)``. Notes under the table say when the measured setting (dataset, resolution, protocol
and extractor, training length) differs from the paper's, in which case only directions compare.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from vfbench.ablation import AblationSpec
from vfbench.atomic import atomic_write_json, atomic_write_text
from vfbench.paper_tables import PaperRow, column_label, dataset_label, find_rows, pick_resolution
from vfbench.pipeline import RunPlan, latest_record

DASH = "—"
KIND_ORDER = ("FVD", "KVD", "IS")
PAPER_EXTRACTORS = {"FVD": "I3D", "KVD": "I3D", "IS": "C3D"}


def metric_kind(metric: str) -> str:
    """``fvd2048_16f`` -> FVD, ``kvd_shapes256`` -> KVD, ``is2048_ucf_tganv2`` -> IS; else upper-cased."""
    m = metric.lower()
    for kind in ("fvd", "kvd", "is"):
        if m.startswith(kind):
            return kind.upper()
    return metric


def fmt(v: Optional[float]) -> str:
    """Compact, stable number formatting (the same in markdown, HTML and tests)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return DASH
    a = abs(v)
    if a >= 100:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    if a == 0:
        return "0"
    return f"{v:.3g}"


def extractor_name(rec: Dict[str, Any]) -> str:
    ex = rec.get("extractor")
    if isinstance(ex, dict):
        return str(ex.get("name") or ex.get("extractor") or "?")
    return str(ex) if ex else "?"


@dataclass
class Cell:
    mean: Optional[float] = None
    std: Optional[float] = None
    n: int = 0                        # runs (seeds) that contributed
    ci_low: Optional[float] = None
    ci_high: Optional[float] = None
    std_kind: str = ""                # "seeds" or "trials"

    def text(self) -> str:
        if self.mean is None:
            return DASH
        if self.std is None:
            return fmt(self.mean)
        return f"{fmt(self.mean)} ± {fmt(self.std)}"


@dataclass
class Table:
    name: str                                   # file stem in results/tables/
    title: str
    spec: str
    dataset: str
    protocol: str
    metrics: List[str]
    variants: List[str]
    generators: List[str]
    runs: List[List[str]]                       # per variant: its run names
    cells: List[List[Cell]]                     # [variant][metric]
    paper_columns: List[Tuple[str, str, str]]   # (metric kind, dataset, resolution)
    paper_values: List[List[Optional[float]]]   # [variant][paper column]
    notes: List[str]
    x_label: Optional[str] = None
    xs: List[Optional[float]] = field(default_factory=list)
    higher_is_better: Dict[str, Optional[bool]] = field(default_factory=dict)

    # -- headers --------------------------------------------------------------------------------
    def metric_header(self, m: str) -> str:
        hib = self.higher_is_better.get(m)
        arrow = "" if hib is None else (" ↑" if hib else " ↓")
        return f"{metric_kind(m)} ({m}){arrow}"

    def paper_headers(self) -> List[str]:
        return [column_label(k, d, r) for k, d, r in self.paper_columns]

    # -- renderings -----------------------------------------------------------------------------
    def to_markdown(self) -> str:
        head = ["variant"] + [self.metric_header(m) for m in self.metrics] + ["seeds"] + self.paper_headers()
        align = ["---"] + ["---:"] * (len(head) - 1)
        lines = [f"### {self.title}", "",
                 "| " + " | ".join(_md_escape(h) for h in head) + " |",
                 "| " + " | ".join(align) + " |"]
        for i, label in enumerate(self.variants):
            seeds = max((c.n for c in self.cells[i]), default=0)
            # A cell with fewer runs than its row (one seed not evaluated yet) says so.
            row = [label] + [c.text() + (f" (n={c.n})" if 0 < c.n < seeds else "") for c in self.cells[i]]
            row += [str(seeds)]
            row += [DASH if v is None else f"{v:g}" for v in self.paper_values[i]]
            lines.append("| " + " | ".join(_md_escape(x) for x in row) + " |")
        lines.append("")
        lines += [f"- {_md_escape(n)}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def csv_header(self) -> List[str]:
        head = ["variant", "generator", "runs", "seeds"]
        for m in self.metrics:
            head += [m, f"{m}_std", f"{m}_n", f"{m}_ci_low", f"{m}_ci_high"]
        return head + self.paper_headers()

    def csv_rows(self) -> List[List[str]]:
        def num(v):
            return "" if v is None else repr(float(v))

        rows = []
        for i, label in enumerate(self.variants):
            seeds = max((c.n for c in self.cells[i]), default=0)
            row = [label, self.generators[i], ";".join(self.runs[i]), str(seeds)]
            for c in self.cells[i]:
                row += [num(c.mean), num(c.std), str(c.n), num(c.ci_low), num(c.ci_high)]
            row += [num(v) for v in self.paper_values[i]]
            rows.append(row)
        return rows

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self.csv_header())
        w.writerows(self.csv_rows())
        return buf.getvalue()

    def to_json(self) -> Dict[str, Any]:
        d = asdict(self)
        d["paper_headers"] = self.paper_headers()
        d["metric_headers"] = [self.metric_header(m) for m in self.metrics]
        return d

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "Table":
        d = dict(d)
        d.pop("paper_headers", None)
        d.pop("metric_headers", None)
        d["cells"] = [[Cell(**c) for c in row] for row in d["cells"]]
        d["paper_columns"] = [tuple(c) for c in d["paper_columns"]]
        return cls(**d)


def _md_escape(s: str) -> str:
    # A pipe inside a cell would split it; user strings (variant labels) may contain one.
    return str(s).replace("|", "\\|").replace("\n", " ")


def _aggregate(recs: Sequence[Dict[str, Any]]) -> Cell:
    vals = [float(r["value"]) for r in recs if r.get("value") is not None]
    if not vals:
        return Cell()
    if len(vals) == 1:
        r = recs[0]
        f = lambda k: None if r.get(k) is None else float(r[k])  # noqa: E731
        return Cell(vals[0], f("std"), 1, f("ci_low"), f("ci_high"), "trials" if r.get("std") is not None else "")
    n = len(vals)
    mean = sum(vals) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
    return Cell(mean, std, n, None, None, "seeds")


def build_table(spec: AblationSpec, plans: Sequence[RunPlan], records: Sequence[Dict[str, Any]],
                metrics: Sequence[str], protocol: str, *, name: str) -> Table:
    """Aggregate the records of ``plans`` into ``spec``'s table with the published columns."""
    by_run_metric: Dict[Tuple[str, str], List[Dict[str, Any]]] = {}
    for r in records:
        if r.get("protocol") == protocol:
            by_run_metric.setdefault((r.get("run"), r.get("metric")), []).append(r)

    dataset = plans[0].dataset if plans else "?"
    size = plans[0].size if plans else None
    variants, generators, runs, cells, xs, used = [], [], [], [], [], []
    hib: Dict[str, Optional[bool]] = {m: None for m in metrics}
    for v in spec.variants:
        vplans = [p for p in plans if p.variant == v.label]
        if not vplans:
            continue
        variants.append(v.label)
        generators.append(v.generator)
        runs.append([p.name for p in vplans])
        xs.append(v.x)
        row = []
        for m in metrics:
            recs = [latest_record(by_run_metric[(p.name, m)]) for p in vplans if (p.name, m) in by_run_metric]
            used += recs
            for r in recs:
                if r.get("higher_is_better") is not None:
                    hib[m] = bool(r["higher_is_better"])
            row.append(_aggregate(recs))
        cells.append(row)

    # Published columns: the union of (metric, dataset, resolution) over the variants' matches.
    per_variant: List[Dict[Tuple[str, str, str], float]] = []
    kinds = [k for k in KIND_ORDER if k in spec.metrics] + [k for k in spec.metrics if k not in KIND_ORDER]
    for v in spec.variants:
        if v.label not in variants:
            continue
        found: Dict[Tuple[str, str, str], float] = {}
        if v.paper is not None:
            rows: List[PaperRow] = []
            for kind in kinds:
                rows += pick_resolution(find_rows(v.paper, [kind]), size)
            for r in rows:
                found.setdefault((r.metric.upper(), r.dataset, r.resolution), r.value)
        per_variant.append(found)
    cols = sorted({k for f in per_variant for k in f},
                  key=lambda c: (kinds.index(c[0]) if c[0] in kinds else 99, c[1], _res_key(c[2])))
    # a published column is shown only beside a measured one of its kind (no "paper IS" without an IS)
    measured = {metric_kind(m) for m in metrics}
    unmatched = sorted({c[0] for c in cols if c[0] not in measured}, key=lambda k: KIND_ORDER.index(k)
                       if k in KIND_ORDER else 99)
    cols = [c for c in cols if c[0] in measured]
    paper_values = [[f.get(c) for c in cols] for f in per_variant]

    notes = _notes(spec, plans, used, cols, protocol, dataset, cells)
    if unmatched:
        notes = [n for n in notes if not n.startswith("No published value")]  # there are some, just not shown
        notes.append(f"The published {', '.join(unmatched)} values are left out: no {' or '.join(unmatched)} was"
                     " measured for this table (its metrics: " + ", ".join(metrics) + ").")
    return Table(name=name, title=_title(spec, dataset, protocol), spec=spec.name, dataset=dataset,
                 protocol=protocol, metrics=list(metrics), variants=variants, generators=generators,
                 runs=runs, cells=cells, paper_columns=cols, paper_values=paper_values, notes=notes,
                 x_label=spec.x_label, xs=xs, higher_is_better=hib)


def _res_key(res: str) -> Tuple[int, ...]:
    return tuple(int(x) for x in res.split("x") if x.isdigit())


def _title(spec: AblationSpec, dataset: str, protocol: str) -> str:
    paper = "VideoFusion" if spec.paper_source == "videofusion" else "VIDM"
    where = f"Table {spec.table} of the {paper} paper" if spec.table else "no published table"
    return f"{spec.title} ({where}) on {dataset_label(dataset)}, {protocol} protocol"


def _notes(spec, plans, used, cols, protocol, dataset, cells) -> List[str]:
    notes = []
    seeds = max((c.n for row in cells for c in row), default=0)
    if seeds > 1:
        notes.append(f"mean ± sample standard deviation over {seeds} seeds (one training run each);"
                     " a cell marked (n=1) has one run, and its ± is the metric's spread over its trials.")
    else:
        if any(c.std is not None for row in cells for c in row):
            notes.append("± is the metric's own spread over its evaluation trials (one seed per variant).")
        if seeds == 1:
            # measured with the shapes metrics' version 2 (clips scored at their own size): real test clips
            # against the train reference; 32x32 gives the same (43.5/43.5 and 11.7/12.8)
            noise = (" (two disjoint sets of real shapes clips at 16x16 score FVD 45 and 44 with 64 clips, 12 and 12"
                     " with 256, and a second sample seed moved a generator's FVD by ~11 at 64 clips: differences"
                     " under ~15 are within noise there)" if str(dataset) == "shapes" else "")
            notes.append("One training seed per row: no seed-to-seed spread was measured, so a difference is a trend,"
                         f" not a result, unless it is larger than the metric's sampling noise{noise};"
                         " --seeds 3 gives mean ± std.")
    if any(c.mean is None for row in cells for c in row):
        notes.append(f"{DASH} in a measured column: not evaluated yet (rerun the command to finish).")
    if not cols:
        notes.append("No published value for these rows ships with vfbench (paper_tables/); only measured"
                     " values are shown.")
        return notes
    plan = plans[0] if plans else None
    res = f"{plan.frames}x{plan.size}x{plan.size}" if plan else "?"
    paper_ds = sorted({c[1] for c in cols})
    paper_res = sorted({c[2] for c in cols if c[2]}, key=_res_key)
    differs = []
    if paper_ds != [dataset]:
        differs.append(f"dataset ({dataset_label(dataset)} here, "
                       f"{', '.join(dataset_label(d) for d in paper_ds)} in the paper)")
    if paper_res and paper_res != [res]:
        differs.append(f"resolution ({res} here, {', '.join(paper_res)} in the paper)")
    extractors = sorted({extractor_name(r) for r in used})
    nfake = sorted({int(r["num_fake"]) for r in used if r.get("num_fake") is not None})
    paper_ex = sorted({PAPER_EXTRACTORS.get(c[0], "?") for c in cols})
    if protocol != "paper" or any(("i3d" not in e.lower() and "c3d" not in e.lower()) for e in extractors):
        differs.append(f"protocol and extractor ({protocol} protocol, extractor "
                       f"{', '.join(extractors) or 'unknown'}, {', '.join(map(str, nfake)) or '?'} generated clips here; "
                       f"{'/'.join(paper_ex)} on 2048 clips in the paper)")
    if plan is not None:
        pre = max((p.pretrain_base_steps for p in plans), default=0)
        order = {"videofusion": 0, "vdm": 1, "vidm": 2}  # the table's row order: "from the same weights" reads on
        started = sorted({p.generator for p in plans if p.pretrain_base_steps > 0}, key=lambda g: (order.get(g, 9), g))
        what = {"videofusion": "VideoFusion's base", "vdm": "VDM's spatial layers (from the same weights)",
                "vidm": "VIDM's content generator"}
        base = ""
        if pre and started == ["videofusion"]:
            base = (f"; VideoFusion's base first pretrained for {pre} image steps on single frames of the same data,"
                    " the paper's on LAION-5B (DALL-E 2's decoder)")
        elif pre:
            base = (f"; {', '.join(what.get(g, g) for g in started)} first pretrained for {pre} image steps on"
                    " single frames of the same data; in the papers VideoFusion's base is DALL-E 2's decoder"
                    " (LAION-5B) and VDM and VIDM train from scratch")
        differs.append(f"training ({plan.steps} steps at the {plan.preset!r} preset here, far shorter"
                       f" than the papers' training{base})")
    if differs:
        notes.append("The 'paper' columns are the published values, not measured here. The setting differs in "
                     + "; ".join(differs) + ": compare only directions (which variant is better), not values.")
    if spec.name == "lambda":
        notes.append("Table 5 publishes lambda 0.10, 0.25, 0.50 and 0.75 only.")
    if spec.name == "compare" and dataset not in ("ucf101", "sky", "taichi"):
        notes.append("The papers did not use this dataset; their UCF-101 numbers are shown as the reference.")
    if spec.name == "compare" and any(g == "vidm" for g in (p.generator for p in plans)):
        notes.append("VIDM's published values come from the VIDM paper (its own resolution and split).")
    return notes


# -- files ------------------------------------------------------------------------------------------------
def table_name(prefix: str, dataset: str, protocol: str) -> str:
    return f"{prefix}-{dataset}-{protocol}"


def write_table(tables_dir: Path, table: Table, recipe: Dict[str, Any]) -> Dict[str, Path]:
    """Write ``<name>.csv``, ``<name>.md`` and ``<name>.json`` (the table plus how to rebuild it)."""
    tables_dir = Path(tables_dir)
    paths = {"csv": tables_dir / f"{table.name}.csv", "md": tables_dir / f"{table.name}.md",
             "json": tables_dir / f"{table.name}.json"}
    atomic_write_text(paths["csv"], table.to_csv())
    atomic_write_text(paths["md"], table.to_markdown())
    atomic_write_json(paths["json"], {"format": "vfbench-table-v1", "recipe": recipe, "table": table.to_json()})
    return paths


def table_from_recipe(recipe: Dict[str, Any], records: Sequence[Dict[str, Any]]) -> Table:
    """Rebuild a table from its recipe and the current records (reports show fresh numbers)."""
    from vfbench.ablation import get_spec

    spec = get_spec(recipe["spec"], **recipe.get("spec_kwargs", {}))
    plans = [RunPlan(**p) for p in recipe["plans"]]
    return build_table(spec, plans, records, recipe["metrics"], recipe["protocol"], name=recipe["name"])
