"""The paper's ablations and comparisons as declarative specs, expanded into named runs.

A spec is data: a name, the paper's table number, its variants (row label, generator, config
overrides, whether the base generator is pretrained first) and the metric kinds the table shows.
``expand`` turns a spec into ``RunPlan`` objects with deterministic names
(``ablate-lambda-0.25-shapes-s0``), one per variant and seed, which ``vfbench.pipeline`` trains,
samples and evaluates (skipping whatever is done), and ``vfbench.reports.tables`` turns the
records into the table next to the published values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from vfbench.errors import UnknownNameError, UsageError, check_positive, check_range
from vfbench.options import check_frames, check_lr, check_seed
from vfbench.paper_tables import PaperRef
from vfbench.pipeline import RunPlan

PAPER_LAMBDAS = (0.10, 0.25, 0.50, 0.75)


@dataclass(frozen=True)
class Variant:
    label: str                                   # the table row, e.g. "lambda = 0.25"
    key: str                                     # the run-name part, e.g. "0.25"
    generator: str
    overrides: Dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    pretrain_base: bool = False                  # start VideoFusion's base from the image-DPM pretraining
    paper: Optional[PaperRef] = None             # the published row(s) it corresponds to
    x: Optional[float] = None                    # numeric position for plots (lambda)


@dataclass(frozen=True)
class AblationSpec:
    name: str                                    # "lambda", "pretrain", "stopgrad", "vidm", "compare"
    title: str
    table: Optional[int]                         # the paper's table number
    paper_source: str                            # which paper's table: "videofusion" or "vidm"
    variants: Tuple[Variant, ...]
    metrics: Tuple[str, ...] = ("FVD", "KVD", "IS")   # metric kinds shown (matched to record names)
    x_label: Optional[str] = None                # set when variants lie on a numeric axis (plots)
    description: str = ""


def _lam_key(v: float) -> str:
    return f"{v:.2f}"


def lambda_spec(values: Sequence[float] = PAPER_LAMBDAS) -> AblationSpec:
    """Table 5: VideoFusion with different lambda (share of the base noise)."""
    if not values:
        raise UsageError("--values must list at least one lambda, e.g. --values 0.1,0.25,0.5,0.75")
    seen, variants = set(), []
    for v in values:
        check_range("--values", float(v), 0.0, 1.0)
        key = _lam_key(float(v))
        if key in seen:
            raise UsageError(f"--values lists lambda {key} twice; give each value once")
        seen.add(key)
        variants.append(Variant(label=f"lambda = {key}", key=key, generator="videofusion",
                                overrides={"lam": float(v)}, pretrain_base=True,
                                paper=PaperRef("videofusion", (5,), "VideoFusion", f"lambda={key}"),
                                x=float(v)))
    return AblationSpec("lambda", "Effect of lambda, the share of the shared base noise", 5, "videofusion",
                        tuple(variants), ("FVD", "KVD", "IS"), x_label="lambda",
                        description="VideoFusion trained with each lambda, everything else equal; every run"
                                    " starts from the same pretrained base, as the paper's VideoFusion does.")


def pretrain_spec() -> AblationSpec:
    """Table 6: VDM vs VideoFusion without / with a pretrained base, equal joint-training steps."""
    ref = lambda m: PaperRef("videofusion", (6,), m, "pretrain")  # noqa: E731
    return AblationSpec("pretrain", "Effect of pretraining the base generator", 6, "videofusion", (
        Variant("VDM", "vdm", "vdm", {}, False, ref("VDM")),
        Variant("VideoFusion w/o pretrain", "vf-scratch", "videofusion", {}, False, ref("VideoFusion w/o pretrain")),
        Variant("VideoFusion w/ pretrain", "vf-pretrained", "videofusion", {}, True, ref("VideoFusion w/ pretrain")),
    ), ("FVD", "KVD", "IS"),
        description="Equal joint-training steps; 'w/ pretrain' first trains the base generator as an"
                    " image DPM on single frames (--pretrain-steps).")


def stopgrad_spec() -> AblationSpec:
    """Table 7: fixed base / joint training without / with stop-gradient (all from a pretrained base)."""
    ref = lambda m: PaperRef("videofusion", (7,), m, "joint training")  # noqa: E731
    return AblationSpec("stopgrad", "Joint training of the base generator", 7, "videofusion", (
        Variant("Fixed", "fixed", "videofusion", {"mode": "fixed"}, True, ref("Fixed")),
        Variant("w/o stop gradient", "no-stopgrad", "videofusion", {"mode": "no-stopgrad"}, True,
                ref("w/o stop gradient")),
        Variant("w stop gradient", "stopgrad", "videofusion", {"mode": "stopgrad"}, True, ref("w stop gradient")),
    ), ("FVD", "KVD", "IS"),
        description="All three start from the same pretrained base generator.")


# VIDM's Table 3 switches. The published table has no numbers in the shipped CSVs, so no paper column.
# Every row but one is the paper's full model (its Charbonnier robustness penalty included, which vfbench's
# default VIDM replaces by MSE) with one component switched off.
_FULL = {"robustness_penalty": True}
VIDM_SWITCHES = (
    ("full", "VIDM (full)", dict(_FULL)),
    ("no-truncation", "w/o sampling-space truncation", {**_FULL, "truncation": False}),
    ("no-robust", "w/o robustness penalty", {"robustness_penalty": False}),
    ("no-posgn", "w/o PosGN", {**_FULL, "posgn": False}),
    ("no-implicit", "w/o implicit motion condition", {**_FULL, "implicit_condition": False}),
)


def vidm_spec() -> AblationSpec:
    """VIDM Table 3: the content / motion generator switches."""
    return AblationSpec("vidm", "VIDM component ablation", 3, "vidm",
                        tuple(Variant(label, key, "vidm", over) for key, label, over in VIDM_SWITCHES),
                        ("FVD", "KVD", "IS"),
                        description="VIDM with one component switched off at a time.")


# Per dataset: which published table the compare rows correspond to.
_COMPARE_TABLES = {"ucf101": ((1,), "unconditional", (2,)), "sky": ((2,), "unconditional", (1,)),
                   "taichi": ((3,), "unconditional", (1,))}


def compare_spec(dataset: str = "shapes") -> AblationSpec:
    """VideoFusion vs VDM vs VIDM on one dataset at equal training steps (Tables 1-3 style)."""
    # On a dataset the papers did not use, UCF-101 is the reference (the tables say so).
    paper_ds = dataset if dataset in _COMPARE_TABLES else "ucf101"
    vf_tables, setting, vidm_tables = _COMPARE_TABLES[paper_ds]
    vidm_setting = None if paper_ds != "ucf101" else "train+test unconditional"
    vidm_tables = vidm_tables if paper_ds != "ucf101" else (2,)
    table = vf_tables[0]
    return AblationSpec("compare", "VideoFusion vs VDM vs VIDM at equal training steps", table, "videofusion", (
        # pretrained base: the paper's VideoFusion rows (Table 1 = Table 5 lambda 0.5 = Table 6 "w/ pretrain"
        # = Table 7 "w stop gradient", FVD 139) all start from a pretrained image DPM (DALL-E 2's decoder)
        Variant("VideoFusion", "videofusion", "videofusion", {}, True,
                PaperRef("videofusion", vf_tables, "VideoFusion", setting, paper_ds)),
        # and so do the baselines here, so that the table compares video models at equal image pretraining
        # (VDM's spatial layers from VideoFusion's base, as the paper re-implements VDM on its base generator,
        # Sec. 4.4; VIDM's content generator, its own image DPM). The pretrain ablation (Table 6) keeps the
        # paper's from-scratch VDM row.
        Variant("VDM", "vdm", "vdm", {}, True, PaperRef("videofusion", vf_tables, "VDM", setting, paper_ds)),
        Variant("VIDM", "vidm", "vidm", {}, True, PaperRef("vidm", vidm_tables, "VIDM", vidm_setting, paper_ds)),
    ), ("FVD", "KVD", "IS"),
        description="The three generators trained for the same number of steps on the same data, each started"
                    " from an image DPM pretrained on single frames for --pretrain-steps (VideoFusion's base;"
                    " VDM's spatial layers, from the same weights; VIDM's content generator), as the paper's"
                    " VideoFusion starts from a pretrained image model.")


SPECS = {"lambda": lambda_spec, "pretrain": pretrain_spec, "stopgrad": stopgrad_spec, "vidm": vidm_spec}


def get_spec(name: str, **kwargs) -> AblationSpec:
    if name == "compare":
        return compare_spec(**kwargs)
    if name not in SPECS:
        raise UnknownNameError("ablation", name, list(SPECS) + ["compare"])
    return SPECS[name](**kwargs)


@dataclass
class ExpandOptions:
    """The knobs every ablation / comparison shares (CLI flags or a --config file)."""

    dataset: str = "shapes"
    data_root: Optional[str] = None
    preset: str = "small"
    steps: int = 300
    pretrain_steps: Optional[int] = None      # base pretraining length (default: = steps)
    seeds: int = 1
    frames: int = 16
    size: int = 64
    batch_size: Optional[int] = None
    lr: Optional[float] = None                # None: the trainer's default (1e-4; tiny models like 1e-3)
    precision: Optional[str] = None           # None: the trainer's default (fp32); "auto": bf16 where native
    prefix: Optional[str] = None              # run-name prefix (default "ablate-<name>" / "compare")
    # Extra generator config per generator name, e.g. {"videofusion": {"sampling_steps": 10}};
    # a variant's own overrides (the ablated switch) win over these.
    overrides: Dict[str, Dict[str, Any]] = field(default_factory=dict)

    def validate(self) -> "ExpandOptions":
        check_positive("--steps", self.steps)
        check_positive("--seeds", self.seeds)
        check_frames(self.frames)  # every ablated generator is a video generator
        check_positive("--size", self.size)
        if self.pretrain_steps is not None:
            check_positive("--pretrain-steps", self.pretrain_steps)
        if self.batch_size is not None:
            check_positive("--batch-size", self.batch_size)
        if self.lr is not None:
            check_lr(self.lr)
        from vfbench.registry import DATASETS

        DATASETS.check(self.dataset)  # an unknown --dataset fails before any training
        if self.preset not in ("tiny", "small", "paper"):
            raise UsageError(f"--preset must be tiny, small or paper, got {self.preset!r}")
        if self.prefix is not None and not re.match(r"^[A-Za-z0-9][A-Za-z0-9._=+-]{0,60}$", self.prefix):
            raise UsageError(f"--prefix {self.prefix!r} is not valid: use letters, digits and . _ = + -")
        return self


def run_name(prefix: str, variant: Variant, dataset: str, seed: int) -> str:
    return f"{prefix}-{variant.key}-{dataset}-s{seed}"


def expand(spec: AblationSpec, opts: ExpandOptions) -> List[RunPlan]:
    """One RunPlan per (variant, seed), in table order then seed order."""
    opts.validate()
    prefix = opts.prefix or ("compare" if spec.name == "compare" else f"ablate-{spec.name}")
    plans = []
    for v in spec.variants:
        for seed in range(opts.seeds):
            plans.append(RunPlan(
                name=run_name(prefix, v, opts.dataset, seed), generator=v.generator, dataset=opts.dataset,
                preset=opts.preset, steps=opts.steps, seed=seed, frames=opts.frames, size=opts.size,
                data_root=opts.data_root, batch_size=opts.batch_size, lr=opts.lr, precision=opts.precision,
                generator_overrides={**opts.overrides.get(v.generator, {}), **v.overrides},
                pretrain_base_steps=(opts.pretrain_steps or opts.steps) if v.pretrain_base else 0,
                variant=v.label, group=spec.name))
    return plans


def check_overrides(plans: Sequence[RunPlan], what: str) -> None:
    """Fail early (before any training) if a plan sets a config key its generator does not have."""
    import dataclasses

    from vfbench.registry import GENERATORS

    for p in plans:
        if not p.generator_overrides:
            continue
        cls = GENERATORS.get(p.generator)
        fields = {f.name for f in dataclasses.fields(cls.Config)} if hasattr(cls, "Config") else set(p.generator_overrides)
        missing = sorted(set(p.generator_overrides) - fields)
        if missing:
            raise UsageError(f"{what} needs {p.generator} config keys {', '.join(missing)}, which this version"
                             f" of {p.generator} lacks; update vfbench or drop that variant")


def run_table(store, spec_name: str, opts: ExpandOptions, ev, *, spec_kwargs: Optional[Dict[str, Any]] = None,
              progress: bool = True, log=lambda s: None):
    """Expand a spec, run every plan through the pipeline (skipping what is done), write its table.

    Returns ``(table, paths)``; the table files land in ``<results>/tables/``.
    """
    from dataclasses import asdict

    from vfbench.pipeline import execute_all, metric_specs, protocol_metrics
    from vfbench.reports.tables import build_table, table_name, write_table

    spec_kwargs = dict(spec_kwargs or {})
    spec = get_spec(spec_name, **spec_kwargs)
    plans = expand(spec, opts)
    check_overrides(plans, f"the {spec.name} table")
    ev.metrics = list(ev.metrics or protocol_metrics(ev.protocol, opts.dataset, opts.size))
    metrics = [m.name for m in metric_specs(ev.metrics, ev.num_samples)]
    execute_all(store, plans, ev, desc=f"{spec.name} ({len(plans)} runs)", progress=progress, log=log)
    prefix = opts.prefix or ("compare" if spec.name == "compare" else f"ablate-{spec.name}")
    name = table_name(prefix, opts.dataset, ev.protocol)
    table = build_table(spec, plans, list(store.iter_records()), metrics, ev.protocol, name=name)
    recipe = {"name": name, "spec": spec.name, "spec_kwargs": spec_kwargs, "plans": [asdict(p) for p in plans],
              "metrics": metrics, "protocol": ev.protocol}
    paths = write_table(store.root / "tables", table, recipe)
    return table, paths


@dataclass
class AblateConfig(ExpandOptions):
    """Everything ``vfbench ablate`` / ``vfbench compare`` take (defaults < --config file < flags)."""

    protocol: str = "mini"
    num_samples: Optional[int] = None         # None: the protocol's own counts (256 for mini)
    sample_seed: int = 0
    sample_batch: int = 16
    sampling_steps: Optional[int] = None      # sampling steps of each run's own sampler (None: each run's own config)
    values: Optional[List[float]] = None      # lambda ablation: the lambdas (default the paper's four)

    def split(self):
        """(ExpandOptions, EvalPlan) for ``run_table``."""
        import dataclasses

        from vfbench.pipeline import EvalPlan

        if self.protocol not in ("mini", "paper"):
            raise UsageError(f"--protocol must be 'mini' or 'paper', got {self.protocol!r}")
        if self.num_samples is not None:
            check_positive("--num-samples", self.num_samples)
        check_positive("--sample-batch", self.sample_batch)
        if self.sampling_steps is not None:
            check_positive("--sampling-steps", self.sampling_steps)
        check_seed(self.sample_seed, "sample_seed")
        names = {f.name for f in dataclasses.fields(ExpandOptions)}
        opts = ExpandOptions(**{k: getattr(self, k) for k in names}).validate()
        ev = EvalPlan(protocol=self.protocol, num_samples=self.num_samples, sample_seed=self.sample_seed,
                      sample_batch=self.sample_batch, sampling_steps=self.sampling_steps)
        return opts, ev


@dataclass
class DemoConfig:
    """``vfbench demo``: the three generators on shapes (VideoFusion from a pretrained base), the
    report, and a lambda ablation when ``lambdas`` are given.

    The defaults are sized for a 2-core CPU (about 8 minutes); ``--quick`` is a
    smoke test. With fewer samples than the mini protocol's 256, the metrics are resized copies
    with their own names (``fvd_shapes64``), never confused with the protocol's numbers.
    """

    quick: bool = False
    preset: Optional[str] = None           # default: tiny (both modes; small is for longer runs)
    steps: Optional[int] = None            # default: 250 (quick: 10)
    size: Optional[int] = None             # default: 16 (quick: 16)
    frames: int = 16                       # the shapes metrics score 16-frame clips
    num_samples: Optional[int] = None      # default: 64 (quick: 8); metrics renamed accordingly
    sampling_steps: Optional[int] = None   # sampling steps of every generator (its own sampler) (default 10, quick 4)
    lambdas: Optional[List[float]] = None  # a lambda ablation beside the compare run's 0.5 (default none: 8-minute budget)
    pretrain_steps: Optional[int] = None   # VideoFusion's base pretraining (default 1000; quick 10)
    batch_size: Optional[int] = None       # training batch (default 8, quick 4)
    lr: Optional[float] = None             # default 2e-3: tiny x0-predicting models learn visibly in 250 steps
    precision: str = "auto"                # bf16 autocast where the CPU/GPU runs it natively, else fp32
    report: bool = True

    def resolved(self) -> "DemoConfig":
        q = self.quick
        out = DemoConfig(
            quick=q, preset=self.preset or "tiny", steps=self.steps or (10 if q else 250),
            size=self.size or 16, frames=self.frames,
            num_samples=self.num_samples if self.num_samples is not None else (8 if q else 64),
            sampling_steps=self.sampling_steps or (4 if q else 10),
            pretrain_steps=self.pretrain_steps if self.pretrain_steps is not None else (10 if q else 1000),
            lambdas=list(self.lambdas) if self.lambdas else [],
            batch_size=self.batch_size or (4 if q else 8), lr=2e-3 if self.lr is None else self.lr,
            precision=self.precision, report=self.report)
        check_positive("--sampling-steps", out.sampling_steps)
        check_lr(out.lr)
        return out


def run_demo(store, cfg: DemoConfig, *, progress: bool = True, log=print, status=lambda s: None):
    """Everything a newcomer needs to see, resumable: compare the three generators on ``shapes``
    (mini protocol), a short lambda ablation, then the report. Returns the report path (or None)."""
    from tqdm.auto import tqdm

    from vfbench.pipeline import EvalPlan

    cfg = cfg.resolved()
    prefix = "demo-quick" if cfg.quick else "demo"
    steps_over = {g: {"sampling_steps": cfg.sampling_steps} for g in ("videofusion", "vdm", "vidm")}
    base = dict(dataset="shapes", preset=cfg.preset, steps=cfg.steps, pretrain_steps=cfg.pretrain_steps, seeds=1,
                frames=cfg.frames, size=cfg.size,
                batch_size=cfg.batch_size, lr=cfg.lr, precision=cfg.precision, overrides=steps_over)
    ev = lambda: EvalPlan(protocol="mini", num_samples=cfg.num_samples, sample_batch=8)  # noqa: E731
    stages = ["compare VideoFusion / VDM / VIDM", "content/motion disentanglement"]
    stages += ["lambda ablation"] if cfg.lambdas else []
    stages += ["report"] if cfg.report else []
    bar = tqdm(stages, desc="demo", unit="stage", disable=not progress)
    path = None
    for stage in bar:
        bar.set_postfix_str(stage)
        if stage.startswith("compare"):
            table, paths = run_table(store, "compare", ExpandOptions(**base, prefix=prefix), ev(),
                                     spec_kwargs={"dataset": "shapes"}, progress=progress, log=status)
        elif stage.startswith("content/motion"):
            vf_run = run_name(prefix, compare_spec("shapes").variants[0], "shapes", 0)
            disentanglement(store, vf_run, quick=cfg.quick, steps=cfg.sampling_steps, log=status)
            continue
        elif stage == "lambda ablation":
            table, paths = run_table(store, "lambda", ExpandOptions(**base, prefix=f"{prefix}-lambda"), ev(),
                                     spec_kwargs={"values": cfg.lambdas}, progress=progress, log=status)
        else:
            from vfbench.reports.html import write_report

            path = write_report(store, title="vfbench demo" + (" (quick)" if cfg.quick else ""), control_grid=True,
                                log=bar.write if progress else (lambda s: None))
            continue
        log(table.to_markdown())
        log(f"table: {paths['md']}")
    return path


def disentanglement(store, run: str, *, quick: bool, steps: int, log=print) -> Optional[Dict[str, Any]]:
    """Score VideoFusion's content/motion control on ``run`` (Sec. 4.7) unless a record exists."""
    from vfbench.disentangle import METRIC, evaluate_disentanglement
    from vfbench.pipeline import find_records, latest_record, trained_step

    # A record counts only for the checkpoint it scored (an extended run is scored again).
    step = trained_step(store.run_dir(run))
    done = [r for r in find_records(store, run, METRIC, "mini")
            if isinstance(r.get("config"), dict) and r["config"].get("step") == step]
    if done:
        log(f"{run}: {METRIC} already evaluated, skipping")
        return latest_record(done)
    groups, per_group = (2, 2) if quick else (4, 3)
    rec = evaluate_disentanglement(run, store, groups=groups, per_group=per_group, seed=0, steps=steps)
    log(f"{run}: {METRIC} = {rec['value']:.3f}")
    return rec
