"""The schema of a result record, checked whenever a record is read back.

``records/<id>.json`` is written by ``vfbench evaluate`` (and the disentanglement score), and read by
``evaluate --all``, the report, the ablation tables and the pipeline. A file there that is not a
record (hand-edited, ``[1, 2]``, ``null``, a value that is text) must cost one warning naming it, not
take down every reader of the store: ``record_problem`` says what is wrong with one record, and
``ResultsStore.iter_records`` skips the records it finds a problem with. ``vfbench records check``
lists them all.

Only the fields the readers use are typed; any other field is kept as it is (newer versions may add
fields, and an older reader must not drop their records).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from vfbench.errors import VfbenchError
from vfbench.readback import read_json_object

_NUMBER = "a number"
_TEXT = "text"
_OBJECT = "a JSON object"
_NAME_OR_OBJECT = "a name or a JSON object"  # an external tool may record just the extractor's name

# field -> (expected, may it be null)
FIELDS: Dict[str, Tuple[str, bool]] = {
    "metric": (_TEXT, False),
    "value": (_NUMBER, True),
    "run": (_TEXT, True), "protocol": (_TEXT, True), "dataset": (_TEXT, True), "generator": (_TEXT, True),
    "samples_dir": (_TEXT, True), "tag": (_TEXT, True), "id": (_TEXT, True), "cache_key": (_TEXT, True),
    "std": (_NUMBER, True), "ci_low": (_NUMBER, True), "ci_high": (_NUMBER, True), "elapsed": (_NUMBER, True),
    "trials": ("a count", True), "num_real": ("a count", True), "num_fake": ("a count", True),
    "bootstrap": ("a count", True), "world_size": ("a count", True),
    "higher_is_better": ("true or false", True),
    "values": ("a list of numbers", True),
    "provenance": (_OBJECT, True), "config": (_OBJECT, True), "extractor": (_NAME_OR_OBJECT, True),
    "seeds": (_OBJECT, True), "metric_spec": (_OBJECT, True), "real": (_OBJECT, True),
    "samples": (_OBJECT, True), "details": (_OBJECT, True),
}
REQUIRED = ("metric", "value")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _fits(v: Any, expected: str) -> bool:
    if expected == _NUMBER:
        return _is_number(v)
    if expected == _TEXT:
        return isinstance(v, str)
    if expected == _OBJECT:
        return isinstance(v, dict)
    if expected == _NAME_OR_OBJECT:
        return isinstance(v, (str, dict))
    if expected == "a count":
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0
    if expected == "true or false":
        return isinstance(v, bool)
    if expected == "a list of numbers":
        return isinstance(v, list) and all(_is_number(x) for x in v)
    raise AssertionError(expected)


def record_problem(obj: Any) -> Optional[str]:
    """What makes ``obj`` not a result record (one phrase), or None when it is one."""
    if not isinstance(obj, dict):
        return "it is not a JSON object"
    missing = [k for k in REQUIRED if k not in obj]
    if missing:
        return f"it has no {' or '.join(repr(k) for k in missing)} field"
    if not obj["metric"]:
        return "its 'metric' is empty"
    for key, (expected, nullable) in FIELDS.items():
        if key not in obj or (obj[key] is None and nullable):
            continue
        if not _fits(obj[key], expected):
            return f"its {key!r} is {type(obj[key]).__name__} {str(obj[key])[:40]!r}, not {expected}"
    for key in ("std", "ci_low", "ci_high"):  # NaN is a legitimate value (a diverged score); inf is not a spread
        v = obj.get(key)
        if _is_number(v) and math.isinf(v):
            return f"its {key!r} is infinite"
    return None


def read_record(path: Path) -> Dict[str, Any]:
    """One record file, checked; VfbenchError naming the file and the problem otherwise."""
    fix = "fix or delete it (vfbench records check lists every bad record)"
    rec = read_json_object(path, "record", fix)
    problem = record_problem(rec)
    if problem:
        raise VfbenchError(f"record {path} is not a result record: {problem}; {fix}")
    return rec


def record_files(records_dir: Path) -> List[Path]:
    records_dir = Path(records_dir)
    return sorted(records_dir.glob("*.json")) if records_dir.is_dir() else []


def check_records(records_dir: Path) -> Iterator[Tuple[Path, Optional[str]]]:
    """``(file, problem or None)`` for every record file of a store."""
    for p in record_files(records_dir):
        try:
            read_record(p)
        except VfbenchError as exc:
            yield p, str(exc)
        else:
            yield p, None
