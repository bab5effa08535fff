"""appendices "Canonical JSON" > "Examples": every spec example, byte-exact through
canonicaljson.encode_canonical_json, and each one accepted by our Canonical JSON check."""
from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from canonicaljson import encode_canonical_json

from homeserver.events.validation import validate_canonical_json_value

VECTORS = Path(__file__).resolve().parents[2] / "fixtures" / "spec_vectors" / "canonical_json.txt"


def _load() -> list[tuple[str, str, str]]:
    cases = []
    lines = [
        line
        for line in VECTORS.read_text(encoding="utf-8").splitlines()
        if not line.startswith("#")
    ]
    for block in "\n".join(lines).split("=== ")[1:]:
        name, _, rest = block.partition("\n")
        given, sep, expected = rest.partition("\n---\n")
        assert sep, f"case {name!r} has no '---' separator"
        cases.append((name, given, expected.strip("\n")))
    return cases


CASES = _load()


def _parse_number(text: str) -> Any:
    """JSON numbers as the spec reads them: a number with an integral value (`1e10`) is an
    integer. Python's json module would give a float, which canonicaljson prints as
    `10000000000.0`; that is the parser's choice, not the encoder's."""
    d = Decimal(text)
    return int(d) if d == d.to_integral_value() else float(text)


def test_all_ten_spec_examples_are_present() -> None:
    assert len(CASES) == 10


@pytest.mark.parametrize(("name", "given", "expected"), CASES, ids=[c[0] for c in CASES])
def test_spec_example_encodes_byte_exact(name: str, given: str, expected: str) -> None:
    value = json.loads(given, parse_float=_parse_number)
    assert encode_canonical_json(value) == expected.encode("utf-8")


@pytest.mark.parametrize(("name", "given", "expected"), CASES, ids=[c[0] for c in CASES])
def test_spec_example_is_valid_strict_canonical_json(name: str, given: str, expected: str) -> None:
    validate_canonical_json_value(json.loads(given, parse_float=_parse_number), strict=True)
    # The canonical output parses back to itself.
    assert encode_canonical_json(json.loads(expected)) == expected.encode("utf-8")


def test_python_floats_from_exponents_are_not_canonical() -> None:
    # Why the parser matters: json.loads gives 1e10 as a float, and a strict room version
    # rejects it instead of hashing `10000000000.0`.
    value = json.loads('{"b": 1e10}')
    assert encode_canonical_json(value) == b'{"b":10000000000.0}'
    with pytest.raises(Exception, match=r"content\.b: float"):
        validate_canonical_json_value(value, strict=True)


def test_encoding_is_utf8_not_escaped_and_sorted_by_code_point() -> None:
    # Sorted by code point: "Z" (U+005A) < "a" (U+0061) < "é" (U+00E9) < "日" (U+65E5).
    value = {"日": 1, "é": 2, "a": 3, "Z": 4}
    assert encode_canonical_json(value) == '{"Z":4,"a":3,"é":2,"日":1}'.encode()
    # Control characters use the short escapes where they exist, \u00XX otherwise.
    assert encode_canonical_json("\n\t\x01\"\\") == b'"\\n\\t\\u0001\\"\\\\"'
