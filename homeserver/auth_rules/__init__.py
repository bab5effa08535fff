"""Event authorization: the pure spec core that says whether an event is allowed in its room
(rooms/v1.md ... v12.md "Authorisation rules"; S2S "Auth events selection", "Checks performed
on receipt of a PDU", "Soft failure"). No I/O: callers fetch events and check signatures.

- `auth_types_for_event`: which state an event's auth_events may name.
- `check_auth_events_list`: the rules on the event's listed auth events (v1-v11 rule 2,
  v12 rule 3), except their rejected-ness, which is storage metadata the caller checks.
- `check_auth_rules`: every other rule, against a state map (auth events, state before the
  event, or current state); `is_soft_failed` is the last against the current state.
"""
from homeserver.auth_rules.power_levels import (
    parse_power_level,
    required_power_level,
    user_power_level,
)
from homeserver.auth_rules.rules import check_auth_rules, is_soft_failed
from homeserver.auth_rules.selection import auth_types_for_event, check_auth_events_list

__all__ = [
    "auth_types_for_event",
    "check_auth_events_list",
    "check_auth_rules",
    "is_soft_failed",
    "parse_power_level",
    "required_power_level",
    "user_power_level",
]
