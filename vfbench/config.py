"""Typed configs: dataclasses with one precedence rule, defaults < config file < CLI flags.

``resolve(Cls, config_file, overrides)`` builds a validated instance: unknown keys and wrong types
are user errors that name the key, the file and the expected type. The resolved config is saved
with every run (``to_dict``), so a result can always be traced back to every setting.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Type, TypeVar

from vfbench.errors import UsageError

C = TypeVar("C")


def load_config_file(path: Any) -> Dict[str, Any]:
    """Read a YAML, TOML or JSON mapping."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"config file {path} does not exist; pass an existing YAML/TOML/JSON file to --config")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix in (".toml",):
            import tomllib

            data = tomllib.loads(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:
        raise UsageError(f"config file {path} could not be parsed: {_one_line_parse_error(exc)};"
                         " fix the syntax (YAML, TOML or JSON by its extension)") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UsageError(f"config file {path} must contain a mapping of keys to values at the top level")
    return data



def _one_line_parse_error(exc: Exception) -> str:
    """A parser's message on one line (PyYAML's spans several, with a caret drawing)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is not None and problem:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(exc).split())


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check (and gently coerce) ``value`` to the annotated type ``tp``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except UsageError as exc:
                errors.append(str(exc))
        raise UsageError(f"{where} must be {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise UsageError(f"{where} must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise UsageError(f"{where} must be a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, where=where)
    if origin in (list, tuple) or tp in (list, tuple):
        if isinstance(value, str) and "," in value:
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            value = [value]
        if args and origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(value):
                raise UsageError(f"{where} must have {len(args)} items, got {value!r}")
            items = [_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            item_tp = args[0] if args else Any
            items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else list(items)
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise UsageError(f"{where} must be a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise UsageError(f"{where} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise UsageError(f"{where} must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise UsageError(f"{where} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise UsageError(f"{where} must be a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise UsageError(f"{where} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, Path)):
            return str(value)
        raise UsageError(f"{where} must be a string, got {value!r}")
    return value


def from_dict(cls: Type[C], data: Mapping[str, Any], *, where: str = "config") -> C:
    """Build ``cls`` from a mapping; unknown keys and wrong types raise a UsageError."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        from vfbench.errors import did_you_mean

        msg = "; ".join(did_you_mean(f"key in {where}", k, fields).replace("unknown ", "", 1) for k in unknown)
        raise UsageError(f"unknown {msg}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{where}: {exc}") from None
    return obj


def to_dict(obj: Any) -> Dict[str, Any]:
    """A JSON-safe dict of a (nested) dataclass config."""
    def conv(v):
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v

    return conv(obj)


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> Dict[str, Any]:
    """Recursive dict merge; ``None`` in ``over`` means "not given" and keeps the base value."""
    out = dict(base)
    for k, v in over.items():
        if v is None:
            continue
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def resolve(cls: Type[C], config_file: Optional[Any] = None,
            overrides: Optional[Mapping[str, Any]] = None, *, base: Optional[Mapping[str, Any]] = None) -> C:
    """defaults (the dataclass, optionally updated by ``base``) < config file < CLI overrides."""
    data: Dict[str, Any] = dict(base or {})
    where = "config"
    if config_file is not None:
        data = merge(data, load_config_file(config_file))
        where = str(config_file)
    data = merge(data, overrides or {})
    return from_dict(cls, data, where=where)


def config_hash(obj: Any) -> str:
    import hashlib

    blob = json.dumps(to_dict(obj) if dataclasses.is_dataclass(obj) else obj, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
