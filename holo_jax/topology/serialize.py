"""Build the topology dataclasses from parsed JSON/YAML, checking every field's type.

A hand-edited topology file is user input: a wrong type or an unknown key must come back as
one sentence naming the field, not as a TypeError deep inside the planner. The same holds for
the bytes under it (`read_text`): every topology input, JSON/YAML or pasted `nvidia-smi topo -m`,
is read through one decoder so that a binary or mis-encoded file is one sentence too.
"""
from __future__ import annotations

import codecs
import dataclasses
import json
import math
import types
import typing
from pathlib import Path
from typing import Any

from holo_jax.errors import HoloError


# Encodings a text file announces with a byte-order mark. Windows PowerShell's `>` writes
# UTF-16LE with a BOM, so `nvidia-smi topo -m > topo.txt` there gives one of these.
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def decode_text(data: bytes, where: str) -> str:
    """`data` as text: UTF-8, or the UTF-8/UTF-16 its byte-order mark names; HoloError otherwise."""
    encoding = next((name for bom, name in _BOMS if data.startswith(bom)), "utf-8")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise HoloError(f"{where} is not {encoding.removesuffix('-sig').upper()} text (byte 0x{data[e.start]:02x} "
                        f"at line {line} cannot be decoded); save it as UTF-8 text, e.g. with "
                        f"`iconv -t utf-8`.") from None
    if "\0" in text:  # valid UTF-8, but no text file holds NULs: binary, or UTF-16 without a BOM
        line = text[:text.index("\0")].count("\n") + 1
        raise HoloError(f"{where} holds a NUL byte at line {line}, so it is not a text file (UTF-16 without a "
                        f"byte-order mark?); save it as UTF-8 text.")
    return text


def read_text(path: Path, what: str) -> str:
    """The text of the file `path` (a `what`, for the error sentence), decoded by `decode_text`."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise HoloError(f"cannot read {what} {path}: {e.strerror}.") from None
    return decode_text(data, f"{what} {path}")


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
    except RecursionError:  # json recurses once per nesting level; no topology nests deeply
        raise HoloError(f"{path} nests its JSON too deeply to be a topology file.") from None


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
        # Python's json reads NaN and Infinity, which are not JSON and no figure may be.
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise HoloError(f"{where} must be a finite number, got {value!r}.")
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
