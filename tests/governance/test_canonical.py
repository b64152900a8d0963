"""Canonical JSON against RFC 8785's own examples."""
import json
import struct

import pytest

from holo_jax.governance.canonical import canonical_json

# RFC 8785 Appendix B: IEEE-754 bit patterns and their ECMAScript serialisation.
NUMBERS = [
    ("0000000000000000", "0"), ("8000000000000000", "0"), ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"), ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"), ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"), ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"), ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"), ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"), ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"), ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"), ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"), ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"), ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


@pytest.mark.parametrize("bits, text", NUMBERS)
def test_numbers(bits, text):
    value = struct.unpack(">d", bytes.fromhex(bits))[0]
    assert canonical_json(value) == text.encode()
    assert float(text) == value  # and it round-trips


def test_key_order_is_utf16():
    # RFC 8785 3.2.3's sorting example: U+1F600 (surrogates D83D DE00) sorts before U+FB33.
    keys = ["\u20ac", "\r", "\ufb33", "1", "\U0001F600", "\u0080", "\u00f6"]
    got = json.loads(canonical_json({k: i for i, k in enumerate(keys)}))
    assert list(got) == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001F600", "\ufb33"]


def test_structure_whitespace_and_strings():
    value = {"b": [1, 2.5, None, True, False], "a": {"y": "é\n\"\\", "x": -0.0}, "c": "\u2028"}
    assert canonical_json(value) == '{"a":{"x":0,"y":"é\\n\\"\\\\"},"b":[1,2.5,null,true,false],"c":"\u2028"}'.encode()
    assert canonical_json((1, 2)) == b"[1,2]"
    assert canonical_json("\x1f") == b'"\\u001f"'


def test_refuses_what_json_cannot_say():
    for bad in (float("nan"), float("inf"), {1: "x"}, object()):
        with pytest.raises((TypeError, ValueError)):
            canonical_json(bad)
