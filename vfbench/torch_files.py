"""Loading .pt files (checkpoints, pretrained bases, weights): safely, sizes checked first, one-sentence errors.

Every torch file vfbench loads goes through ``load_torch_file``:

* the bytes of its tensors are summed from what the file declares, before torch allocates any of
  them, and checked against a limit the caller derives from the model that will receive them (a
  training checkpoint holds the weights four times: model, EMA and Adam's two moments). The zip
  format (``torch.save`` since 1.6) declares each tensor's bytes in its zip directory; the older
  format declares them in its pickle, which is surveyed here by an unpickler that imports and calls
  nothing (every global becomes an inert stand-in) and only records the storages' sizes;
* the file is then read with ``torch.load(weights_only=True)``: a pickle that asks for anything but
  tensors and plain data is refused, so a crafted file never runs code;
* every failure is one ``WeightsError`` naming the file, what is wrong and the fix. torch's own
  multi-paragraph messages (which suggest loading with ``weights_only=False``) are cut to what
  happened, never passed on.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Optional

from vfbench.errors import WeightsError

# torch.save's legacy format starts with the pickled magic number 0x1950a86a20f9469cfc6c
_LEGACY_MAGIC = bytes.fromhex("80028a0a6cfc9c46f9206aa85019")
_ITEMSIZE = {"DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2, "LongStorage": 8,
             "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1, "BoolStorage": 1,
             "ComplexDoubleStorage": 16, "ComplexFloatStorage": 8}


def module_state_bytes(module) -> int:
    """Bytes of a module's parameters and buffers (what one copy of its state dict holds)."""
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


def checkpoint_limit(module) -> int:
    """The most tensor bytes a training checkpoint of ``module`` can hold: the weights four times (model,
    EMA, Adam's two moments), with a quarter to spare and 16 MiB for RNG states and small tensors."""
    return int(4 * module_state_bytes(module) * 1.25) + (16 << 20)


def weights_limit(module) -> int:
    """The most tensor bytes a weights file for ``module`` can hold: its state dict twice over (a file may
    also carry an EMA copy) and 16 MiB to spare."""
    return 2 * module_state_bytes(module) + (16 << 20)


class _Inert:
    """What every global of a surveyed pickle becomes: accepts any construction, does nothing."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        return _Inert()

    def __setstate__(self, state):
        pass

    def __setitem__(self, key, value):
        pass

    def append(self, value):
        pass

    def extend(self, values):
        pass


class _StorageType:
    def __init__(self, itemsize: int):
        self.itemsize = itemsize


class _SizeSurvey(pickle.Unpickler):
    """Unpickles the legacy format's pickles with inert globals, recording each storage's declared bytes."""

    def __init__(self, fh):
        super().__init__(fh)
        self.storages = {}

    def find_class(self, module, name):
        if module == "torch" and name in _ITEMSIZE:
            return _StorageType(_ITEMSIZE[name])
        return _Inert  # never imported, never called for real

    def persistent_load(self, pid):
        if isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage":
            stype, key, numel = pid[1], pid[2], pid[4]
            size = stype.itemsize if isinstance(stype, _StorageType) else 8
            if not isinstance(numel, int) or numel < 0:
                raise ValueError(f"a storage declares {numel!r} elements")
            self.storages[str(key)] = numel * size
        return _Inert()


def declared_tensor_bytes(path: Path) -> int:
    """The tensor bytes a torch file declares, read without allocating them (ValueError if unreadable)."""
    with open(path, "rb") as fh:
        head = fh.read(len(_LEGACY_MAGIC))
    if head[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as zf:  # every record: data/N tensors, data.pkl, version, ...
                return sum(info.file_size for info in zf.infolist())
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise ValueError(f"it is not a complete torch zip file: {exc}") from None
    if head == _LEGACY_MAGIC:
        with open(path, "rb") as fh:
            survey = _SizeSurvey(fh)
            try:
                for _ in range(4):  # magic number, protocol version, system info, the object itself
                    survey.load()
            except Exception as exc:  # noqa: BLE001 - any malformed pickle: the file cannot be loaded
                raise ValueError(f"its pickle is damaged: {type(exc).__name__}: {str(exc)[:120]}") from None
        total = sum(survey.storages.values())
        if total > Path(path).stat().st_size:
            raise ValueError(f"its storages declare {total:,} bytes but the file holds {Path(path).stat().st_size:,}"
                             " (it is truncated or crafted)")
        return total
    raise ValueError("it is not a torch file (neither torch.save's zip format nor its legacy pickle format)")


def torch_load_detail(exc: BaseException) -> str:
    """What went wrong in a ``torch.load(weights_only=True)``, in one phrase, without torch's advice."""
    text = str(exc)
    glob = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if glob:
        return (f"its pickle asks for {glob.group(1)}, which is not a tensor or plain data (it could run code);"
                " vfbench loads torch files with weights_only=True only")
    if "WeightsUnpickler error:" in text:  # not a pickle of plain data: say what the unpickler met
        detail = text.split("WeightsUnpickler error:", 1)[1].strip().splitlines()
        return "not a plain-data pickle: " + (detail[0].strip().split(". ")[0][:160] if detail else "")
    first = (text.strip().splitlines() or [""])[0].split(". ")[0][:200]  # torch appends paragraphs of advice
    return f"{type(exc).__name__}: {first}"


def load_torch_file(path, *, what: str, fix: str, max_bytes: Optional[int] = None, limit_what: str = "",
                    map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` after the size check; WeightsError(one sentence) on any failure.

    ``what`` names the file's role ("checkpoint", "pretrained base"), ``fix`` says what to do, and
    ``max_bytes`` (derived from the receiving model; ``limit_what`` explains it) bounds the declared
    tensor bytes."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{what} {path} does not exist; {fix}")
    try:
        declared = declared_tensor_bytes(path)
    except (ValueError, OSError) as exc:
        raise WeightsError(f"{what} {path} cannot be loaded ({exc}); it is truncated or not a torch file: {fix}") \
            from None
    if max_bytes is not None and declared > max_bytes:
        raise WeightsError(f"{what} {path} declares {declared:,} bytes of tensors, more than the {max_bytes:,} bytes"
                           f" {limit_what or 'it can hold'}; it is corrupt or not meant for this model: {fix}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated zip, refused pickle, allocation failure, ...
        detail = torch_load_detail(exc)
        if "could run code" in detail:
            raise WeightsError(f"{what} {path} is refused: {detail}: {fix}") from None
        raise WeightsError(f"{what} {path} cannot be loaded ({detail}); it is truncated or damaged: {fix}") from None
