"""The metric definitions: every choice that changes a number is part of a metric's name.

A ``MetricSpec`` fixes the kind of score, the extractor and its preset, the sample counts, the
clip length and resolution, and a ``version`` that is bumped whenever the computation changes
(so cached statistics and old results can never be confused with new ones).

Protocols map (protocol, dataset) -> metric names:

* ``paper``: 16 x 128 x 128 clips, 2048 real vs 2048 generated, I3D FVD/KVD (spec/metrics.md),
  plus the C3D video IS (TGANv2 protocol) on ``ucf101``.
* ``mini``: the same code at CPU scale (256 clips): the built-in ``shapes-net`` extractor for
  ``shapes``, I3D ``fvd256_16f`` / ``kvd256_16f`` for real datasets. Always labelled ``mini``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Dict, List, Optional

from vfbench.errors import UsageError, did_you_mean
from vfbench.registry import METRICS

KINDS = ("fvd", "kvd", "is", "disentangle")


@dataclass(frozen=True)
class MetricSpec:
    """One metric under one protocol (a frozen, recorded definition)."""

    name: str
    kind: str                      # fvd | kvd | is | disentangle
    extractor: str                 # registered extractor name
    preset: str = "reference"      # extractor preset
    num_real: int = 2048           # real clips (0 for IS)
    num_fake: int = 2048           # generated clips per trial
    frames: int = 16
    resolution: int = 128          # clips are brought to resolution x resolution before the extractor
    higher_is_better: bool = False
    version: int = 1
    trials: int = 1                # default number of independent sample sets (IS TGANv2: 10 rounds)
    splits: int = 1                # IS splits within one sample set
    unbiased_cov: Optional[bool] = None  # FVD covariance: None = the extractor preset's convention
    #                                      (I3D reference/tats: N - 1; stylegan-v: N), else forced
    kvd_block_size: int = 0        # 0: all samples at once; >0: tf-gan blocks
    real_selection: Optional[str] = None  # None = from the extractor preset: "stylegan-v" for I3D's
    #                                       stylegan-v preset, else "reference" (shuffled train split)
    description: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise UsageError(f"metric {self.name!r}: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.kind in ("fvd", "kvd") and self.num_real < 2:
            raise UsageError(f"metric {self.name!r} needs num_real >= 2 real clips")
        if self.num_fake < 2:
            raise UsageError(f"metric {self.name!r} needs num_fake >= 2 generated clips")

    @property
    def needs_real(self) -> bool:
        return self.kind in ("fvd", "kvd")

    @property
    def output(self) -> str:
        """The extractor output this metric reads."""
        return "probs" if self.kind == "is" else "features"

    def with_preset(self, preset: str) -> "MetricSpec":
        """The same metric under another extractor preset; the name says so (``fvd2048_16f-stylegan-v``)."""
        if preset == self.preset:
            return self
        return replace(self, preset=preset, name=f"{self.name}-{preset}")

    def resolved(self, extractor_description: Dict[str, Any]) -> "MetricSpec":
        """Fill the conventions left to the extractor preset (covariance, real clip selection)."""
        cov = str(extractor_description.get("covariance", "")).lower()
        unbiased = self.unbiased_cov if self.unbiased_cov is not None else not cov.startswith("biased")
        sel = self.real_selection
        if sel is None:
            sel = "stylegan-v" if "first n videos" in str(extractor_description.get("real_clips", "")).lower() \
                else "reference"
        return replace(self, unbiased_cov=unbiased, real_selection=sel)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


_SPECS = [
    MetricSpec("fvd2048_16f", "fvd", "i3d", description="FVD, I3D (TF-Hub reference), 2048 vs 2048 16x128x128 clips"),
    MetricSpec("kvd2048_16f", "kvd", "i3d", description="KVD (cubic-kernel unbiased MMD^2, raw), I3D, 2048 vs 2048"),
    MetricSpec("fvd256_16f", "fvd", "i3d", num_real=256, num_fake=256,
               description="FVD, I3D, 256 vs 256 16x128x128 clips (quick; not comparable to fvd2048)"),
    MetricSpec("kvd256_16f", "kvd", "i3d", num_real=256, num_fake=256,
               description="KVD, I3D, 256 vs 256 (quick)"),
    MetricSpec("is2048_ucf_tganv2", "is", "c3d-ucf101", preset="tganv2", num_real=0, num_fake=2048,
               resolution=128, higher_is_better=True, trials=10,
               description="video IS, C3D UCF-101, TGANv2 protocol: bilinear 112, 10 rounds of 2048"),
    MetricSpec("is10k_ucf_tgan", "is", "c3d-ucf101", preset="tgan", num_real=0, num_fake=10000,
               resolution=128, higher_is_better=True,
               description="video IS, C3D UCF-101, TGAN v1 protocol: cubic 128 + crop 112, 10,000 samples"),
    MetricSpec("fvd_shapes256", "fvd", "shapes-net", num_real=256, num_fake=256, resolution=32,
               description="FVD with the built-in shapes-net features, 256 vs 256 shapes clips"),
    MetricSpec("kvd_shapes256", "kvd", "shapes-net", num_real=256, num_fake=256, resolution=32,
               description="KVD with the built-in shapes-net features, 256 vs 256 shapes clips"),
    MetricSpec("is_shapes256", "is", "shapes-net", num_real=0, num_fake=256, resolution=32,
               higher_is_better=True, description="IS of shapes-net content posteriors (120 classes), 256 clips"),
    MetricSpec("disentangle_shapes", "disentangle", "shapes-net", num_real=0, num_fake=64, resolution=32,
               higher_is_better=True,
               description="VideoFusion content/motion control: chance-corrected label agreement under shared base / residual noise"),
]
SPECS: Dict[str, MetricSpec] = {s.name: s for s in _SPECS}

PROTOCOLS = ("mini", "paper")


def protocol_metrics(protocol: str, dataset: str) -> List[str]:
    """The metric names a protocol computes for a dataset."""
    if protocol == "paper":
        names = ["fvd2048_16f", "kvd2048_16f"]
        if dataset == "ucf101":
            names.append("is2048_ucf_tganv2")
        return names
    if protocol == "mini":
        if dataset == "shapes":
            return ["fvd_shapes256", "kvd_shapes256", "is_shapes256"]
        return ["fvd256_16f", "kvd256_16f"]
    raise UsageError(did_you_mean("protocol", protocol, PROTOCOLS))


def protocol_of(metric: str) -> Optional[str]:
    """The protocol a built-in metric belongs to (``None`` for a metric outside both)."""
    for p in PROTOCOLS:
        for ds in ("shapes", "ucf101", "taichi"):
            if metric in protocol_metrics(p, ds):
                return p
    return None


def get_spec(name) -> MetricSpec:
    """A ``MetricSpec`` by name (from the metric registry), or the spec itself."""
    if isinstance(name, MetricSpec):
        return name
    obj = METRICS.get(name)
    if not isinstance(obj, MetricSpec):
        raise UsageError(f"metric {name!r} is not a MetricSpec and cannot be evaluated by vfbench evaluate")
    return obj


for _s in _SPECS:
    METRICS.add(_s.name, _s, description=_s.description, higher_is_better=_s.higher_is_better,
                kind=_s.kind, extractor=_s.extractor)
