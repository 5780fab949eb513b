"""The reusable train -> sample -> evaluate step, skipping whatever is already done.

Ablations, ``vfbench compare`` and ``vfbench demo`` describe their work as ``RunPlan`` objects and
hand them to ``execute``. Each stage first looks at the results directory:

* training is skipped when the run's newest checkpoint has reached ``plan.steps`` (a shorter run
  is resumed and extended, never restarted);
* sampling is skipped when ``samples/<tag>/manifest.json`` says the set is complete with at least
  the requested number of clips (the sampler itself resumes an interrupted set shard by shard);
* an evaluation is skipped when a record for (run, metric, protocol, sample set) exists.

So any of these commands can be interrupted and rerun: it picks up where it stopped. A run's
``plan.json`` pins what the run is (generator, its config overrides, dataset, preset, seed, base
pretraining); reusing a run name for a different plan is refused instead of silently mixing them.

The three stage functions (``train_step``, ``sample_step``, ``evaluate_step``) are module
attributes so that tests can count calls by replacing them.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from vfbench.atomic import atomic_write_json, read_json
from vfbench.errors import UsageError, VfbenchError
from vfbench.readback import json_object_or_none, read_json_object
from vfbench.results import ResultsStore, check_run_name

PLAN_FILE = "plan.json"


@dataclass
class RunPlan:
    """One training run of a table: what to train, for how long, and which table row it fills."""

    name: str
    generator: str
    dataset: str = "shapes"
    preset: str = "small"
    steps: int = 300
    seed: int = 0
    frames: int = 16
    size: int = 64
    data_root: Optional[str] = None
    batch_size: Optional[int] = None          # None: the trainer's default
    lr: Optional[float] = None                # None: the trainer's default
    precision: Optional[str] = None           # None: the trainer's default (fp32); "auto", "bf16", ...
    generator_overrides: Dict[str, Any] = field(default_factory=dict)
    pretrain_base_steps: int = 0              # image-DPM pretraining first (VideoFusion's base, shared by VDM; VIDM's content net)
    variant: str = ""                         # the table row this run fills (label)
    group: str = ""                           # the table (ablation name, "compare", ...)

    def __post_init__(self):
        check_run_name(self.name)
        # the CLI refuses this too (`train --residual-init base` without an image DPM): without pretraining the
        # widened residual net would train from a random init while the plan says it started from the base
        if self.generator_overrides.get("residual_init") == "base" and self.pretrain_base_steps <= 0:
            raise UsageError(f"run {self.name!r} sets residual_init 'base' (the residual generator starts from the "
                             f"pretrained image DPM) but pretrain_base_steps is {self.pretrain_base_steps}; give it "
                             "pretrain_base_steps > 0 or drop residual_init")

    def identity(self) -> Dict[str, Any]:
        """Everything that defines the run except its length (a run may be extended)."""
        d = asdict(self)
        for k in ("steps", "variant", "group", "batch_size", "precision"):
            d.pop(k)
        # the resolved generator config too: when a default changes between versions (prediction, residual
        # conditioning), a run trained under the old default is not silently reused as if it were the new one
        from vfbench.config import to_dict

        d["generator_config"] = to_dict(generator_config(self))
        return d

    def dataset_kwargs(self) -> Dict[str, Any]:
        # The dataset stays the same for every seed of a table (seed 0, the dataset default): a
        # repeat varies the training randomness (initialisation, data order, noise), not the data.
        kw: Dict[str, Any] = {"name": self.dataset, "frames": self.frames, "size": self.size, "seed": 0}
        if self.data_root:
            kw["data_root"] = self.data_root
        return kw

    @property
    def pretraining_generator(self) -> str:
        """Whose image DPM this plan starts from: VideoFusion's base (for VideoFusion and VDM, whose U-Net
        has the base's spatial layers) or the generator's own (VIDM's content generator)."""
        return "videofusion" if self.generator in ("videofusion", "vdm") else self.generator

    @property
    def base_run_name(self) -> Optional[str]:
        """The shared pretrained-base run this plan starts from (one per image DPM/dataset/preset/length/seed)."""
        if self.pretrain_base_steps <= 0:
            return None
        kind = "base" if self.pretraining_generator == "videofusion" else f"{self.pretraining_generator}-base"
        return (f"pretrained-{kind}-{self.dataset}-{self.preset}-{self.frames}x{self.size}"
                f"-p{self.pretrain_base_steps}-s{self.seed}")


@dataclass
class EvalPlan:
    """How every run of a table is sampled and scored."""

    protocol: str = "mini"
    metrics: Optional[List[str]] = None       # None: the protocol's metrics for the dataset
    num_samples: Optional[int] = None         # None: the metrics' own counts; else resized copies
    sample_seed: int = 0
    sample_batch: int = 16
    sampling_steps: Optional[int] = None      # None: each run's own config (its sampling_steps)

    def tag(self, num: int, steps: int) -> str:
        # The checkpoint step is part of the tag: extending a run makes a new sample set and so
        # new records, instead of reusing samples from the shorter run. So are the sampling steps
        # when given: samples drawn with other steps are another sample set, not the same one.
        ss = "" if self.sampling_steps is None else f"-ss{self.sampling_steps}"
        return f"{self.protocol}-n{num}-seed{self.sample_seed}-step{steps}{ss}"


@dataclass
class Outcome:
    plan: RunPlan
    run_dir: Path
    samples_dir: Optional[Path]
    records: List[Dict[str, Any]]
    trained: bool = False      # whether this call did any training (False: skipped, already done)
    sampled: bool = False
    evaluated: List[str] = field(default_factory=list)


# -- what the protocols need ------------------------------------------------------------------------
def protocol_metrics(protocol: str, dataset: str, size: Optional[int] = None) -> List[str]:
    """The metric names of ``protocol`` for ``dataset`` at clip size ``size`` (owned by the evaluation
    subsystem: ``metrics/protocols.py``)."""
    from vfbench.evaluation import protocol_metrics as pm

    return list(pm(protocol, dataset, size))


def metric_specs(names: Sequence[str], num_samples: Optional[int]) -> List[Any]:
    """The metric definitions to evaluate; with ``num_samples``, resized copies under new names.

    A metric's name pins its sample count (``fvd_shapes256``), so scoring fewer clips (the quick
    demo) must not reuse that name: the copy is called ``fvd_shapes64`` (``MetricSpec.at_count``),
    ``vfbench evaluate --metrics fvd_shapes64`` accepts that name, and its records warn that it
    has fewer clips than the protocol publishes.
    """
    from vfbench.metrics.protocols import get_spec

    specs = []
    for name in names:
        spec = get_spec(name)
        if num_samples is not None and num_samples != spec.num_fake:
            spec = spec.at_count(num_samples)
        specs.append(spec)
    return specs


def check_sizes(specs: Sequence[Any], plan: "RunPlan", protocol: str) -> None:
    """Refuse, before any training, a table whose metrics cannot score its runs' clips (64 or 128 px
    for the real-video protocols): the evaluation would refuse the samples after hours of training."""
    from vfbench.metrics.protocols import REAL_SIZES

    for s in specs:
        res = getattr(s, "resolution", None)
        if res is not None and res != plan.size:
            sizes = " or ".join(f"--size {k}" for k in REAL_SIZES)
            raise UsageError(f"{s.name} of the {protocol} protocol scores {res}x{res} clips but this table trains"
                             f" {plan.size}x{plan.size} ones; pass {sizes}")


def samples_needed(specs: Sequence[Any]) -> int:
    """Generated clips the metric set needs (trials x clips per trial, the largest)."""
    return max(int(s.num_fake) * int(getattr(s, "trials", 1) or 1) for s in specs)


# -- done-ness checks ------------------------------------------------------------------------------
def trained_step(run_dir: Path) -> int:
    """The step of the run's newest complete checkpoint (0 if none).

    A checkpoint counts only if its zip container is whole (the central directory is written last,
    so a torn file fails ``is_zipfile``): otherwise the pipeline would skip training and sample an
    older checkpoint. Cheaper than loading what may be gigabytes of weights.
    """
    import zipfile

    ckpt_dir = Path(run_dir) / "checkpoints"
    steps = []
    pointer = ckpt_dir / "latest.json"
    if pointer.is_file():
        try:
            info = read_json(pointer)
            if zipfile.is_zipfile(ckpt_dir / str(info.get("file", ""))):
                steps.append(int(info["step"]))
        except (VfbenchError, KeyError, TypeError, ValueError, OSError):
            pass  # a damaged pointer: fall back to the file names
    for p in ckpt_dir.glob("step-*.pt") if ckpt_dir.is_dir() else ():
        m = re.match(r"^step-(\d+)\.pt$", p.name)
        if m and zipfile.is_zipfile(p):
            steps.append(int(m.group(1)))
    return max(steps, default=0)


def samples_complete(samples_dir: Path, num: int) -> bool:
    manifest = Path(samples_dir) / "manifest.json"
    if not manifest.is_file():
        return False
    info = json_object_or_none(manifest, "samples manifest", "the sample set is drawn again", warn=False)
    n = (info or {}).get("num", 0)
    return bool((info or {}).get("complete")) and isinstance(n, int) and n >= num


def find_records(store: ResultsStore, run: str, metric: str, protocol: str,
                 samples_dir: Optional[Path] = None) -> List[Dict[str, Any]]:
    """Existing records of ``metric`` for ``run`` under ``protocol`` (and that sample set, if given)."""
    out = []
    for rec in store.iter_records():
        if rec.get("run") != run or rec.get("metric") != metric or rec.get("protocol") != protocol:
            continue
        if samples_dir is not None and rec.get("samples_dir"):
            if Path(str(rec["samples_dir"])).name != Path(samples_dir).name:
                continue
        out.append(rec)
    return out


def check_plan(store: ResultsStore, plan: RunPlan) -> Path:
    """Refuse to reuse a run directory that was made for a different plan; record the plan."""
    run_dir = store.run_dir(plan.name)
    pinned = run_dir / PLAN_FILE
    if pinned.is_file():
        old = read_json_object(pinned, "run plan", f"delete {run_dir} or pass another --prefix").get("identity")
        old = old if isinstance(old, dict) else None
        if old is not None:
            from vfbench.runs import legacy_filled

            old = dict(old, generator_config=legacy_filled(plan.generator, old.get("generator_config")))
        if old != plan.identity():
            diff = sorted(k for k in set(old or {}) | set(plan.identity())
                          if (old or {}).get(k) != plan.identity().get(k))
            raise UsageError(f"run {plan.name!r} in {store.root} was made with different settings"
                             f" ({', '.join(diff)}) (a default of this vfbench version may have changed); pass"
                             f" another --prefix (ablate, compare) or --results DIR, or delete {run_dir}")
    elif (run_dir / "config.json").is_file():
        raise UsageError(f"run {plan.name!r} already exists in {store.root} but was not made by this"
                         f" command; pass another --prefix (ablate, compare) or --results DIR, or delete {run_dir}")
    return run_dir


def _pin_plan(run_dir: Path, plan: RunPlan) -> None:
    atomic_write_json(Path(run_dir) / PLAN_FILE, {"identity": plan.identity(), "plan": asdict(plan)})


# -- the three stages (real work; replaced by counting fakes in tests) ---------------------------------
def generator_config(plan: RunPlan, with_overrides: bool = True):
    """The generator config of ``plan``: the preset at the plan's clip shape, plus its overrides."""
    from vfbench.config import from_dict, merge, to_dict
    from vfbench.registry import GENERATORS

    cls = GENERATORS.get(plan.generator)
    cfg = cls.config_for(plan.preset, plan.frames, plan.size, num_classes=0)
    if with_overrides and plan.generator_overrides:
        cfg = from_dict(type(cfg), merge(to_dict(cfg), plan.generator_overrides),
                        where=f"{plan.generator} config of run {plan.name}")
    return cfg


def _dataset(plan: RunPlan):
    from vfbench.data import build_dataset

    kw = plan.dataset_kwargs()
    return build_dataset(kw.pop("name"), split="train", **kw)


def _train_config(plan: RunPlan, steps: int):
    from vfbench.config import from_dict, merge, to_dict
    from vfbench.training import TrainConfig

    over: Dict[str, Any] = {"steps": steps, "seed": plan.seed, "ckpt_every": min(500, steps)}
    if plan.batch_size:
        over["batch_size"] = plan.batch_size
    if plan.lr:
        over["lr"] = plan.lr
    if plan.precision:
        over["precision"] = plan.precision
    return from_dict(TrainConfig, merge(to_dict(TrainConfig()), over), where=f"training config of {plan.name}")


def pretrained_base(store: ResultsStore, plan: RunPlan, dataset, progress: bool = True) -> Path:
    """The shared image-DPM pretraining ``plan`` starts from (trained once, resumable): VideoFusion's base,
    for VideoFusion and VDM plans, or VIDM's content generator.

    It lives where ``vfbench pretrain base`` puts artefacts (``<results>/pretrained/<name>/``) and
    is made from the preset's default config: the base U-Net does not depend on lambda or the
    training mode, so every variant of a table starts from the same weights.
    """
    from vfbench.runs import adopt_recorded_sampling, build_generator, prepare_run_dir
    from vfbench.training import pretrain_base

    out_dir = store.root / "pretrained" / plan.base_run_name
    # a VDM plan starts its U-Net's spatial layers from VideoFusion's base (VDM.load_base_state), so the two
    # rows of a table share one pretraining; VIDM pretrains its own content generator
    who = plan.pretraining_generator
    cfg = generator_config(replace(plan, generator=who), with_overrides=False)
    tcfg = _train_config(plan, plan.pretrain_base_steps)
    prepare_run_dir(out_dir, who, cfg, plan.dataset_kwargs(), tcfg, resume=True,
                    extra={"kind": "base-pretrain", "preset": plan.preset})
    gen = build_generator(who, cfg, seed=plan.seed)
    adopt_recorded_sampling(gen, out_dir)
    return Path(pretrain_base(out_dir, gen, dataset, tcfg, resume=True, progress=progress,
                              dataset_info=plan.dataset_kwargs()))


def train_step(store: ResultsStore, plan: RunPlan, progress: bool = True) -> Path:
    """Train ``plan`` to ``plan.steps`` (resuming from its newest checkpoint if there is one)."""
    from vfbench.runs import adopt_recorded_sampling, build_generator, create_run, read_base_state
    from vfbench.training import train

    run_dir = store.run_dir(plan.name)
    _pin_plan(run_dir, plan)  # first: a run dir is never left without its plan
    dataset = _dataset(plan)
    cfg = generator_config(plan)
    tcfg = _train_config(plan, plan.steps)
    extra = {"pipeline": plan.group, "variant": plan.variant, "pretrained_base": plan.base_run_name}
    run_dir = Path(create_run(store, plan.name, plan.generator, cfg, plan.dataset_kwargs(), tcfg,
                              resume=True, extra=extra))
    gen = build_generator(plan.generator, cfg, seed=plan.seed)
    adopt_recorded_sampling(gen, run_dir)  # a run resumed across a change of the default sampler keeps its own
    if plan.base_run_name and trained_step(run_dir) == 0:
        artefact = pretrained_base(store, plan, dataset, progress)
        state, _desc = read_base_state(artefact, generator=gen)
        gen.load_base_state(state)
    train(run_dir, gen, dataset, tcfg, resume=True, progress=progress)
    return run_dir


def sample_step(run_dir: Path, num: int, seed: int, batch_size: int, tag: str, progress: bool = True,
                **controls) -> Path:
    from vfbench.sampling import sample_run

    return Path(sample_run(run_dir, num=num, seed=seed, batch_size=batch_size, tag=tag, progress=progress,
                           **controls))


def evaluate_step(store: ResultsStore, run_dir: Path, samples_dir: Path, specs: Sequence[Any],
                  protocol: str, progress: bool = True) -> List[Dict[str, Any]]:
    """Score the sample set under ``specs``; the evaluation runner writes one record per metric."""
    from vfbench.evaluation import evaluate

    return list(evaluate(metrics=list(specs), store=store, protocol=protocol, run=str(run_dir),
                         samples_dir=samples_dir, progress=progress) or [])


# -- the step with skip-if-done ------------------------------------------------------------------------
def execute(store: ResultsStore, plan: RunPlan, ev: EvalPlan,
            log: Callable[[str], None] = lambda s: None, progress: bool = False) -> Outcome:
    """Train, sample and evaluate one plan, doing only what is not done yet."""
    run_dir = check_plan(store, plan)
    specs = metric_specs(ev.metrics or protocol_metrics(ev.protocol, plan.dataset, plan.size), ev.num_samples)
    check_sizes(specs, plan, ev.protocol)
    metrics = [s.name for s in specs]
    num = samples_needed(specs)
    out = Outcome(plan=plan, run_dir=run_dir, samples_dir=None, records=[])

    have = trained_step(run_dir)
    if have >= plan.steps:
        log(f"{plan.name}: trained ({have} steps), skipping training")
    else:
        log(f"{plan.name}: training {plan.generator} to {plan.steps} steps"
            + (f" (resuming at {have})" if have else ""))
        run_dir = Path(train_step(store, plan, progress))
        out.run_dir, out.trained = run_dir, True
        if not (run_dir / PLAN_FILE).is_file():
            _pin_plan(run_dir, plan)
    step = trained_step(run_dir)

    tag = ev.tag(num, step)
    samples_dir = run_dir / "samples" / tag
    if samples_complete(samples_dir, num):
        log(f"{plan.name}: {num} samples exist ({tag}), skipping sampling")
    else:
        log(f"{plan.name}: sampling {num} clips ({tag})")
        controls = {} if ev.sampling_steps is None else {"steps": ev.sampling_steps}
        samples_dir = Path(sample_step(run_dir, num, ev.sample_seed, ev.sample_batch, tag, progress, **controls))
        out.sampled = True
    out.samples_dir = samples_dir

    todo = [s for s in specs if not find_records(store, plan.name, s.name, ev.protocol, samples_dir)]
    if todo:
        log(f"{plan.name}: evaluating {', '.join(s.name for s in todo)} ({ev.protocol} protocol)")
        evaluate_step(store, run_dir, samples_dir, todo, ev.protocol, progress)
        out.evaluated = [s.name for s in todo]
    else:
        log(f"{plan.name}: {', '.join(metrics)} already evaluated, skipping")
    for m in metrics:
        recs = find_records(store, plan.name, m, ev.protocol, samples_dir)
        if not recs:
            raise VfbenchError(f"evaluating {m} for run {plan.name} wrote no result record;"
                               " rerun with --debug to see why")
        out.records.append(latest_record(recs))
    return out


def latest_record(records: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """The most recent of several records of the same evaluation (re-evaluations supersede)."""
    return max(records, key=lambda r: (str((r.get("provenance") or {}).get("created", "")), str(r.get("id", ""))))


def execute_all(store: ResultsStore, plans: Sequence[RunPlan], ev: EvalPlan, *, desc: str = "runs",
                progress: bool = True, log: Callable[[str], None] = lambda s: None) -> List[Outcome]:
    """``execute`` every plan in order, with one overall progress bar (messages go above the bar,
    or to ``log`` without bars)."""
    from tqdm.auto import tqdm

    outcomes = []
    bar = tqdm(plans, desc=desc, unit="run", disable=not progress, leave=True)
    for plan in bar:
        bar.set_postfix_str(plan.name)
        outcomes.append(execute(store, plan, ev, log=bar.write if progress else log, progress=progress))
    return outcomes
