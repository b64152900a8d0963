"""Build the topology dataclasses from parsed JSON/YAML, checking every field's type.

A hand-edited topology file is user input: a wrong type or an unknown key must come back as
one sentence naming the field, not as a TypeError deep inside the planner.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any

from holo_jax.errors import HoloError


def parse_text(text: str, path: Path) -> Any:
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml  # optional: only YAML topology files need it
        except ImportError:
            raise HoloError(f"{path} is YAML but PyYAML is not installed; `pip install pyyaml` or use JSON.") from None
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise HoloError(f"{path} is not valid YAML: {str(e).splitlines()[0]}.") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise HoloError(f"{path} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}.") from None


def build(tp: Any, value: Any, where: str) -> Any:
    """`value` (from JSON) as an instance of the type `tp`, or a HoloError naming `where`."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build_dataclass(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return None
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return build(inner, value, where)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list):
            raise HoloError(f"{where} must be a list.")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(build(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise HoloError(f"{where} must be a list of {len(args)} values, got {len(value)}.")
        return tuple(build(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict:
        key_tp, value_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise HoloError(f"{where} must be an object.")
        return {build(key_tp, k, where): build(value_tp, v, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise HoloError(f"{where} must be a number, got {value!r}.")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise HoloError(f"{where} must be an integer, got {value!r}.")
        return value
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise HoloError(f"{where} must be a {tp.__name__}, got {value!r}.")
        return value
    raise TypeError(f"serialize.build does not handle {tp}")  # a programming error, not user input


def _build_dataclass(cls: Any, value: Any, where: str) -> Any:
    if not isinstance(value, dict):
        raise HoloError(f"{where} must be an object with fields {', '.join(f.name for f in dataclasses.fields(cls))}.")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise HoloError(f"{where} has unknown field `{unknown[0]}`; known fields are {', '.join(fields)}.")
    missing = [
        name for name, f in fields.items()
        if name not in value and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise HoloError(f"{where} is missing the field `{missing[0]}`.")
    hints = typing.get_type_hints(cls)
    return cls(**{name: build(hints[name], v, f"{where}.{name}") for name, v in value.items()})
