"""The metric definitions: every choice that changes a number is part of a metric's name.

A ``MetricSpec`` fixes the kind of score, the extractor and its preset, the sample counts, the
clip length and resolution, and a ``version`` that is bumped whenever the computation changes
(so cached statistics and old results can never be confused with new ones).

Protocols map (protocol, dataset) -> metric names:

* ``paper``: 16 x 128 x 128 clips, 2048 real vs 2048 generated, I3D FVD/KVD (spec/metrics.md),
  plus the C3D video IS (TGANv2 protocol) on ``ucf101``; for 64-px generators the same metrics at
  16 x 64 x 64 (``fvd2048_16f_64``...: the VideoFusion paper's UCF-101 ablations, Tables 5-7, and
  half of Table 1).
* ``mini``: the same code at CPU scale (256 clips): the built-in ``shapes-net`` extractor for
  ``shapes``, I3D ``fvd256_16f`` / ``kvd256_16f`` (``_64`` at 64 px) for real datasets. Always
  labelled ``mini``.

Resolution (``MetricSpec.resolution``). A metric scores clips at the size its protocol names: the
real clips are prepared at that size from the source videos, and both sides go to the extractor's
input by the extractor's own resize only (I3D: TF1 legacy bilinear straight to 224, as the
reference FVD code does; C3D: its TGAN/TGANv2 upsampling to 112, which *is* those protocols for
64-px generators). Generated clips of another size are refused unless the user asks for the
resize (``evaluate --fit``), which is then printed and recorded. ``resolution=None`` (the shapes
protocol) scores clips at their own size, real clips rendered at that size: shapes-net's own
resize to 32 is part of its protocol.
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
    resolution: Optional[int] = 128  # the clip size the protocol scores (None: the clips' own size)
    higher_is_better: bool = False
    version: int = 1
    trials: int = 1                # default number of independent sample sets (IS TGANv2: 10 rounds)
    splits: int = 1                # IS splits within one sample set
    unbiased_cov: Optional[bool] = None  # FVD covariance: None = the extractor preset's convention
    #                                      (I3D reference/tats: N - 1; stylegan-v: N), else forced
    kvd_block_size: int = 0        # 0: all samples at once; >0: tf-gan blocks
    real_selection: Optional[str] = None  # None = from the extractor preset: "stylegan-v" for I3D's
    #                                       stylegan-v preset, else "reference" (shuffled train split)
    real_stride: Optional[int] = None     # real-data frame stride; None = the extractor preset's, else the
    #                                       dataset's own default (TaiChi 4, others 1)
    published_count: int = 0       # the clip count the protocol publishes (0: num_fake itself); fewer is flagged
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

    @property
    def protocol_count(self) -> int:
        """The number of generated clips the protocol's published numbers use."""
        return self.published_count or self.num_fake

    def resolved(self, extractor_description: Dict[str, Any], dataset: Optional[str] = None) -> "MetricSpec":
        """Fill the conventions left to the extractor preset (covariance, real clip selection, and the
        real-data frame stride of ``dataset`` where the preset names one)."""
        cov = str(extractor_description.get("covariance", "")).lower()
        unbiased = self.unbiased_cov if self.unbiased_cov is not None else not cov.startswith("biased")
        sel = self.real_selection
        if sel is None:
            sel = "stylegan-v" if "first n videos" in str(extractor_description.get("real_clips", "")).lower() \
                else "reference"
        stride = self.real_stride
        strides = extractor_description.get("real_stride")
        if stride is None and isinstance(strides, dict) and dataset is not None:
            stride = strides.get(dataset, strides.get("*"))
        return replace(self, unbiased_cov=unbiased, real_selection=sel, real_stride=stride)

    def at_count(self, num: int) -> "MetricSpec":
        """The same metric on ``num`` clips, under its own name (``fvd256_16f`` -> ``fvd16_16f``): a name
        pins its count, so a resized copy never passes for the protocol's number. Its records carry a
        warning (``published_count``)."""
        if num == self.num_fake:
            return self
        if num < 2:
            raise UsageError(f"--num-samples must be at least 2 for {self.name}, got {num}")
        return replace(self, name=resized_name(self, num), num_fake=num, num_real=num if self.needs_real else 0,
                       published_count=self.protocol_count,
                       description=f"{self.description} (resized to {num} clips)")

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def resized_name(spec: "MetricSpec", num: int) -> str:
    """``fvd256_16f`` at 16 clips -> ``fvd16_16f``; a name without its count gets ``_n16``."""
    old = str(spec.num_fake)
    return spec.name.replace(old, str(num), 1) if old in spec.name else f"{spec.name}_n{num}"


_I3D64 = "16x64x64 clips, I3D's own TF1 bilinear resize 64 -> 224 (VideoFusion Tables 5-7, UCF-101 at 64 px)"
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
    MetricSpec("fvd2048_16f_64", "fvd", "i3d", resolution=64, description=f"FVD, I3D, 2048 vs 2048 {_I3D64}"),
    MetricSpec("kvd2048_16f_64", "kvd", "i3d", resolution=64, description=f"KVD, I3D, 2048 vs 2048 {_I3D64}"),
    MetricSpec("fvd256_16f_64", "fvd", "i3d", num_real=256, num_fake=256, resolution=64,
               description="FVD, I3D, 256 vs 256 16x64x64 clips (quick; not comparable to fvd2048)"),
    MetricSpec("kvd256_16f_64", "kvd", "i3d", num_real=256, num_fake=256, resolution=64,
               description="KVD, I3D, 256 vs 256 16x64x64 clips (quick)"),
    MetricSpec("is2048_ucf_tganv2_64", "is", "c3d-ucf101", preset="tganv2", num_real=0, num_fake=2048,
               resolution=64, higher_is_better=True, trials=10,
               description="video IS of 64-px generators, C3D UCF-101, TGANv2 protocol: 64 -> 112 bilinear"
                           " upsampling (part of the protocol), 10 rounds of 2048"),
    MetricSpec("is10k_ucf_tgan_64", "is", "c3d-ucf101", preset="tgan", num_real=0, num_fake=10000,
               resolution=64, higher_is_better=True,
               description="video IS of 64-px generators, C3D UCF-101, TGAN v1 protocol: 64 -> 128 cubic"
                           " upsampling + crop 112 (part of the protocol), 10,000 samples"),
    # shapes: scored at the clips' own size (resolution None), real clips rendered at that size; shapes-net
    # resizes both to 32 itself. Version 2: version 1 resized generated clips to 32 first (uint8-rounded).
    MetricSpec("fvd_shapes256", "fvd", "shapes-net", num_real=256, num_fake=256, resolution=None, version=2,
               description="FVD with the built-in shapes-net features, 256 vs 256 shapes clips"),
    MetricSpec("kvd_shapes256", "kvd", "shapes-net", num_real=256, num_fake=256, resolution=None, version=2,
               description="KVD with the built-in shapes-net features, 256 vs 256 shapes clips"),
    MetricSpec("is_shapes256", "is", "shapes-net", num_real=0, num_fake=256, resolution=None, version=2,
               higher_is_better=True, description="IS of shapes-net content posteriors (120 classes), 256 clips"),
    MetricSpec("disentangle_shapes", "disentangle", "shapes-net", num_real=0, num_fake=64, resolution=32,
               higher_is_better=True,
               description="VideoFusion content/motion control: chance-corrected label agreement under shared base / residual noise"),
]
SPECS: Dict[str, MetricSpec] = {s.name: s for s in _SPECS}

PROTOCOLS = ("mini", "paper")
#: the clip sizes the real-video protocols are defined at (suffix of the metric names; 128 has none)
REAL_SIZES = {128: "", 64: "_64"}


def protocol_metrics(protocol: str, dataset: str, size: Optional[int] = None) -> List[str]:
    """The metric names a protocol computes for a dataset whose clips are ``size`` pixels square.

    Real datasets: the 16x128x128 metrics (``size`` 128 or None) or the 16x64x64 ones (``size`` 64).
    Any other size gets the 128-px names; evaluating them then refuses the clips and says what fits.
    ``shapes`` is scored at any size (shapes-net resizes to 32 itself).
    """
    if protocol not in PROTOCOLS:
        raise UsageError(did_you_mean("protocol", protocol, PROTOCOLS))
    if protocol == "mini" and dataset == "shapes":
        return ["fvd_shapes256", "kvd_shapes256", "is_shapes256"]
    suffix = REAL_SIZES.get(size, "") if size is not None else ""
    if protocol == "paper":
        names = ["fvd2048_16f", "kvd2048_16f"]
        if dataset == "ucf101":
            names.append("is2048_ucf_tganv2")
    else:
        names = ["fvd256_16f", "kvd256_16f"]
    return [n + suffix for n in names]


def protocol_of(metric: str) -> Optional[str]:
    """The protocol a built-in metric belongs to (``None`` for a metric outside both)."""
    for p in PROTOCOLS:
        for ds in ("shapes", "ucf101", "taichi"):
            for size in REAL_SIZES:
                if metric in protocol_metrics(p, ds, size):
                    return p
    return None


def _registered_specs() -> List["MetricSpec"]:
    out = []
    for name in METRICS.names():
        try:
            obj = METRICS.get(name)
        except Exception:  # noqa: BLE001 - a broken plugin entry is neither a suggestion nor a base
            continue
        if isinstance(obj, MetricSpec):
            out.append(obj)
    return out


def fitting_metric(spec: "MetricSpec", size: int) -> Optional[str]:
    """The name of ``spec`` at clip size ``size``: the registered metric of the same kind, extractor,
    preset, frames and published count at that resolution (resized to ``spec``'s count when ``spec`` is a
    resized copy), or None. What an error suggests when clips do not fit ``spec``."""
    for other in _registered_specs():
        if other.resolution == size and (other.kind, other.extractor, other.frames, other.protocol_count) == (
                spec.kind, spec.extractor, spec.frames, spec.protocol_count):
            other = other.at_count(spec.num_fake)
            return other.with_preset(spec.preset).name if other.extractor == "i3d" else other.name
    return None


def derived_spec(name: str) -> Optional["MetricSpec"]:
    """A metric that vfbench builds from a registered one, by name: a resized copy (``fvd16_16f`` of
    ``fvd256_16f``, ``fvd_shapes8`` of ``fvd_shapes256``, ``..._n16`` for a name without its count) and/or
    an I3D preset suffix (``fvd2048_16f-tats``). None when ``name`` is neither."""
    import re

    from vfbench.metrics.i3d_extractor import PRESETS as I3D_PRESETS

    base, preset = name, None
    for p in sorted(I3D_PRESETS, key=len, reverse=True):
        if name.endswith(f"-{p}"):
            base, preset = name[: -len(p) - 1], p
            break
    found = None
    for spec in _registered_specs():
        if spec.name == base:
            found = spec
            break
        count = str(spec.num_fake)
        if count in spec.name:
            head, _, tail = spec.name.partition(count)
            m = re.fullmatch(re.escape(head) + r"([1-9][0-9]*)" + re.escape(tail), base)
        else:
            m = re.fullmatch(re.escape(spec.name) + r"_n([1-9][0-9]*)", base)
        if m and int(m.group(1)) >= 2:
            found = spec.at_count(int(m.group(1)))
            break
    if found is None:
        return None
    if preset is not None:
        if found.extractor != "i3d":
            return None
        found = found.with_preset(preset)
    return found if found.name == name else None


def check_metric_name(name: str) -> str:
    """``name`` if it is registered or derived (``derived_spec``), else the registry's did-you-mean error."""
    if name in METRICS or derived_spec(name) is not None:
        return name
    return METRICS.check(name)


def get_spec(name) -> MetricSpec:
    """A ``MetricSpec`` by name (registered, or derived from a registered one), or the spec itself."""
    if isinstance(name, MetricSpec):
        return name
    if name not in METRICS:
        spec = derived_spec(name)
        if spec is not None:
            return spec
    obj = METRICS.get(name)
    if not isinstance(obj, MetricSpec):
        raise UsageError(f"metric {name!r} is not a MetricSpec and cannot be evaluated by vfbench evaluate;"
                         " pick one listed by `vfbench ls metrics`")
    return obj


for _s in _SPECS:
    METRICS.add(_s.name, _s, description=_s.description, higher_is_better=_s.higher_is_better,
                kind=_s.kind, extractor=_s.extractor)
