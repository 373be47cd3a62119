"""Build nested dataclass configs from YAML values and `key=value` overrides.

YAML files hold only values; each stage's dataclass (next to its code) holds the defaults and
validates itself in `__post_init__`. Overrides use dotted paths (`weak.models.0.spec=tiny:llama`)
and win over the file. Unknown keys, wrong types and bad values raise `ValueError` naming the
field by its full dotted path.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config: file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"config: {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"config: {path} must hold a mapping at top level, got {type(data).__name__}")
    return data


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `a.b.0.c=value` overrides (value parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ValueError(f"override {item!r}: empty key segment")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw  # not YAML (e.g. "Question: {prompt}"): the plain string
        if isinstance(value, dict) and raw.strip()[:1] not in "{":
            value = raw  # "a: b" parses as a mapping; an override of a string field meant the text
        node: Any = data
        for i, part in enumerate(parts[:-1]):
            nxt = parts[i + 1]
            node = _child(node, part, default=[] if nxt.isdigit() else {}, where=".".join(parts[: i + 1]))
        _set(node, parts[-1], value, where=key)
    return data


def _child(node: Any, part: str, default: Any, where: str) -> Any:
    if isinstance(node, list):
        idx = _index(part, node, where)
        if idx == len(node):
            node.append(default)
        return node[idx]
    if not isinstance(node, dict):
        raise ValueError(f"override {where}: parent is not a mapping or list")
    if node.get(part) is None:
        node[part] = default
    return node[part]


def _set(node: Any, part: str, value: Any, where: str) -> None:
    if isinstance(node, list):
        idx = _index(part, node, where)
        if idx == len(node):
            node.append(value)
        else:
            node[idx] = value
    elif isinstance(node, dict):
        node[part] = value
    else:
        raise ValueError(f"override {where}: parent is not a mapping or list")


def _index(part: str, node: list, where: str) -> int:
    if not part.isdigit() or int(part) > len(node):
        raise ValueError(f"override {where}: index {part!r} out of range (list has {len(node)} items)")
    return int(part)


def build(cls: type[T], data: Any, path: str = "") -> T:
    """Recursively build dataclass `cls` from a dict, checking keys and scalar types."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"{path or cls.__name__}: expected a mapping, got {type(data).__name__}")
    if hasattr(cls, "select"):  # a family of root configs: the mapping says which one
        cls = cls.select(data)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{_join(path, unknown[0])}: unknown field (known: {', '.join(sorted(fields))})")
    kwargs = {name: _convert(hints[name], data[name], _join(path, name)) for name in data}
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required field is missing
        raise ValueError(f"{path or cls.__name__}: {e}") from None
    except ValueError as e:
        raise ValueError(_keyed(path, str(e), fields)) from None


def _keyed(path: str, msg: str, fields) -> str:
    """A dataclass's error under its dotted path: 'lr: must be > 0' at 'strong.train' reads
    'strong.train.lr: must be > 0'; a message that does not start with one of the class's
    fields (an error from deeper code) is put after the path as 'path: message'."""
    head = msg.split(":", 1)[0].split(".", 1)[0].split(" ", 1)[0]
    if not path:
        return msg
    if head in fields:
        return f"{path}.{msg}"
    return msg if msg.startswith((path + ".", path + ":")) else f"{path}: {msg}"


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        errors = []
        for a in non_none:
            try:
                return _convert(a, value, path)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError(errors[0])
    if dataclasses.is_dataclass(tp):
        return build(tp, value, path)
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"{path}: expected a list, got {type(value).__name__}")
        (item_tp,) = typing.get_args(tp) or (Any,)
        return [_convert(item_tp, v, f"{path}.{i}") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{path}: expected a mapping, got {type(value).__name__}")
        _, val_tp = typing.get_args(tp) or (Any, Any)
        return {k: _convert(val_tp, v, f"{path}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise ValueError(f"{path}: expected {tp.__name__}, got {value!r}")
        return value
    if typing.get_origin(tp) is typing.Literal:
        if value not in typing.get_args(tp):
            raise ValueError(f"{path}: must be one of {list(typing.get_args(tp))}, got {value!r}")
        return value
    return value


def load_config(cls: type[T], path: str | Path | None, overrides: list[str] | None = None) -> T:
    data = load_yaml(path) if path else {}
    apply_overrides(data, list(overrides or []))
    return build(cls, data)


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)
