"""Filter wildcards: the same answers as a regular expression, in linear time."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from homeserver.glob import glob_match

ALPHABET = st.text(alphabet="ab.*", max_size=8)


@given(pattern=ALPHABET, value=st.text(alphabet="ab.", max_size=10))
def test_agrees_with_a_regular_expression(pattern: str, value: str) -> None:
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    assert glob_match(pattern, value) == (re.fullmatch(regex, value, re.DOTALL) is not None)


def test_examples() -> None:
    assert glob_match("m.room.*", "m.room.message")
    assert not glob_match("m.room.*", "m.call.invite")
    assert glob_match("*", "")
    assert glob_match("a*b*a", "aba") and not glob_match("a*b*a", "ab")
    # The pattern that makes a backtracking regex take minutes answers at once.
    assert not glob_match("*a" * 30 + "b", "a" * 200)
