"""Canonical JSON (RFC 8785, the JSON Canonicalization Scheme): one byte string per value.

Every hash and signature in the audit log is over these bytes, so anyone who re-serialises a
record (another language, another JSON library) gets the same digest. The rules that matter:
object keys sorted by their UTF-16 code units, no whitespace, strings escaped as ECMAScript's
`JSON.stringify` does (only `"`, `\\` and control characters; everything else as UTF-8), and
numbers in ECMAScript's shortest round-trip form (`1e+21`, `1e-7`, `0.000001`, `2` for 2.0).

Python's `json` module gets strings right (with `ensure_ascii=False`) and its `float.__repr__`
gives the same shortest digits as ECMAScript, only laid out differently; `_es_number` re-lays
them out. NaN and infinities are not JSON and are refused (the train loop already spells them
"nan"/"inf", see holo_jax.train.jsonl.jsonable).
"""
from __future__ import annotations

import json
import math
from typing import Any

_string = json.JSONEncoder(ensure_ascii=False).encode


def canonical_json(value: Any) -> bytes:
    """RFC 8785 bytes of `value` (dicts with str keys, lists/tuples, str, int, float, bool, None)."""
    parts: list[str] = []
    _encode(value, parts)
    return "".join(parts).encode("utf-8")


def _encode(x: Any, out: list[str]) -> None:
    if x is None:
        out.append("null")
    elif x is True:
        out.append("true")
    elif x is False:
        out.append("false")
    elif isinstance(x, str):
        out.append(_string(x))
    elif isinstance(x, int):
        out.append(str(int(x)))
    elif isinstance(x, float):
        out.append(_es_number(x))
    elif isinstance(x, dict):
        # RFC 8785 3.2.3: sort by UTF-16 code units (differs from code-point order only above U+FFFF).
        items = sorted(x.items(), key=lambda kv: _utf16_key(kv[0]))
        out.append("{")
        for i, (k, v) in enumerate(items):
            if i:
                out.append(",")
            out.append(_string(k))
            out.append(":")
            _encode(v, out)
        out.append("}")
    elif isinstance(x, (list, tuple)):
        out.append("[")
        for i, v in enumerate(x):
            if i:
                out.append(",")
            _encode(v, out)
        out.append("]")
    else:
        raise TypeError(f"canonical JSON has no form for {type(x).__name__} ({x!r})")


def _utf16_key(k: Any) -> bytes:
    if not isinstance(k, str):
        raise TypeError(f"canonical JSON object keys must be strings, got {type(k).__name__} ({k!r})")
    return k.encode("utf-16-be", "surrogatepass")


def _es_number(f: float) -> str:
    """ECMAScript Number::toString of a finite double (ECMA-262 7.1.12.1), from Python's shortest
    round-trip digits."""
    if not math.isfinite(f):
        raise ValueError(f"canonical JSON has no form for the non-finite number {f!r}")
    if f == 0:
        return "0"  # also -0
    sign = "-" if f < 0 else ""
    mantissa, _, exp = repr(abs(f)).partition("e")
    int_part, _, frac = mantissa.partition(".")
    digits = (int_part + frac).lstrip("0")
    # n: position of the decimal point relative to the first significant digit (ECMA-262's n).
    n = len(int_part.lstrip("0")) if int_part.strip("0") else -(len(frac) - len(frac.lstrip("0")))
    n += int(exp) if exp else 0
    digits = digits.rstrip("0") or "0"
    k = len(digits)
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * (-n) + digits
    e = n - 1
    exp_text = f"e+{e}" if e >= 0 else f"e-{-e}"
    return sign + digits[0] + ("." + digits[1:] if k > 1 else "") + exp_text
