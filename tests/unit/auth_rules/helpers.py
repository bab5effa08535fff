"""Assertions and per-version tables for the authorization rule tests.

Rule numbers move between room versions (v1-v5 have the aliases rule 4, v12 inserts rule 2),
so the tables spell out each version's number rather than deriving it.
"""
from __future__ import annotations

from collections.abc import Mapping

import pytest

from homeserver.auth_rules import check_auth_rules
from homeserver.errors import AuthError
from homeserver.events.event import Event, StateKey

VERSIONS = [str(v) for v in range(1, 13)]

ALICE = "@alice:a.test"  # same server as the creator
BOB = "@bob:b.test"
CAROL = "@carol:c.test"

# The top-level number of the m.room.member rule, and of each later rule, per version.
MEMBER_RULE = {v: 5 if v in ("1", "2", "3", "4", "5", "12") else 4 for v in VERSIONS}


def rule_after_member(version: str, steps: int) -> int:
    """The number `steps` rules after the member rule: 1 = sender joined, 2 = third party
    invite, 3 = required power level, 4 = state_key '@', 5 = power levels."""
    return MEMBER_RULE[version] + steps


def versions_from(first: int, last: int = 12) -> list[str]:
    return [str(v) for v in range(first, last + 1)]


def allowed(event: Event, state: Mapping[StateKey, Event]) -> None:
    check_auth_rules(event, state)


def rejected(event: Event, state: Mapping[StateKey, Event], rule: str | int) -> str:
    """Assert the event fails rule `rule` (the number before the colon); return the message."""
    with pytest.raises(AuthError) as info:
        check_auth_rules(event, state)
    message = info.value.message
    assert message.partition(":")[0] == str(rule), message
    return message
