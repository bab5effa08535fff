"""`*` wildcards as filters use them (event_filter.yaml: "A `*` can be used as a wildcard to
match any sequence of characters"), matched in linear time: a regular expression built from
a user's pattern can backtrack exponentially and freeze the server."""

from __future__ import annotations

from collections.abc import Sequence


def glob_match(pattern: str, value: str) -> bool:
    parts = pattern.split("*")
    if len(parts) == 1:
        return pattern == value
    first, *middle, last = parts
    if not value.startswith(first) or not value.endswith(last):
        return False
    if len(first) + len(last) > len(value):
        return False
    # Greedy left-to-right search for each middle piece is enough: any match of a piece can
    # be moved to its leftmost occurrence without losing a match for the pieces after it.
    position, end = len(first), len(value) - len(last)
    for piece in middle:
        found = value.find(piece, position, end)
        if found < 0:
            return False
        position = found + len(piece)
    return True


def glob_any(patterns: Sequence[str], value: str) -> bool:
    return any(glob_match(p, value) for p in patterns)
