"""State resolution v1 (room version 1, rooms/v1.md "State resolution").

Known to reset state; kept only so that v1 rooms resolve as every other server resolves them.
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence

from homeserver.auth_rules import auth_types_for_event, check_auth_rules
from homeserver.errors import AuthError
from homeserver.events.event import JOIN_RULES, MEMBER, Event, StateKey, StateMap
from homeserver.events.room_versions import RoomVersion
from homeserver.state.common import CREATE_KEY, POWER_LEVELS_KEY
from homeserver.state.store import EventCache, StateResolutionStore

logger = logging.getLogger(__name__)


def _split_v1(state_sets: Sequence[StateMap]) -> tuple[StateMap, dict[StateKey, set[str]]]:
    """v1 "conflict": states holding different events for the same key. Unlike v2, a key that
    only some states hold is not a conflict."""
    unconflicted: StateMap = {}
    conflicted: dict[StateKey, set[str]] = {}
    for key in set().union(*state_sets):
        ids = {s[key] for s in state_sets if key in s}
        if len(ids) == 1:
            unconflicted[key] = ids.pop()
        else:
            conflicted[key] = ids
    return unconflicted, conflicted


def _sha1(event_id: str) -> str:
    return hashlib.sha1(event_id.encode("utf-8")).hexdigest()


def _deepest_first(events: Iterable[Event]) -> list[Event]:
    """Descending depth, then ascending sha1(event_id)."""
    return sorted(events, key=lambda e: (-e.depth, _sha1(e.event_id)))


def _auth_keys(room_version: RoomVersion, event: Event) -> set[StateKey]:
    keys = auth_types_for_event(
        room_version, event.type, event.sender, event.state_key, event.content)
    return keys | {CREATE_KEY}


def _allowed(event: Event, auth_state: dict[StateKey, Event]) -> bool:
    try:
        check_auth_rules(event, auth_state)
    except AuthError as e:
        logger.debug("state res v1: not allowed event_id=%s reason=%s", event.event_id, e.message)
        return False
    return True


def _resolve_auth_conflict(
    room_version: RoomVersion, candidates: list[Event], r: dict[StateKey, Event]
) -> Event:
    """Power levels, join rules and member conflicts: sort by ascending depth then descending
    sha1(event_id), take the first, then each next one while the auth rules allow it in R."""
    keys = set().union(*(_auth_keys(room_version, e) for e in candidates))
    auth_state = {k: r[k] for k in keys if k in r}
    ordered = _deepest_first(candidates)[::-1]
    accepted = ordered[0]
    for event in ordered[1:]:
        auth_state[accepted.state_key_tuple] = accepted
        if not _allowed(event, auth_state):
            break
        accepted = event
    return accepted


def _resolve_other_conflict(
    room_version: RoomVersion, candidates: list[Event], r: dict[StateKey, Event]
) -> Event:
    """Other conflicts: the event with the highest depth and lowest sha1(event_id) that the auth
    rules allow in R. The spec leaves the case where none is allowed open; like Synapse we take
    the last in that order so every server picks the same one."""
    ordered = _deepest_first(candidates)
    for event in ordered:
        auth_state = {k: r[k] for k in _auth_keys(room_version, event) if k in r}
        if _allowed(event, auth_state):
            return event
    return ordered[-1]


async def resolve_v1(
    room_id: str,
    room_version: RoomVersion,
    state_sets: Sequence[StateMap],
    store: StateResolutionStore,
) -> StateMap:
    unconflicted, conflicted = _split_v1(state_sets)
    if not conflicted:
        return unconflicted
    events = EventCache(store, room_id)
    await events.load(set().union(*conflicted.values()))
    candidates: dict[StateKey, list[Event]] = {}
    for key, ids in conflicted.items():
        present = [events[i] for i in ids if i in events]
        if len(present) == 1:
            # The others could not be loaded (EventCache logged them): nothing to resolve.
            unconflicted[key] = present[0].event_id
        elif present:
            candidates[key] = present

    # R starts as the unconflicted state; load the part of it the auth rules will read.
    keys_read = set().union(*(_auth_keys(room_version, e) for c in candidates.values() for e in c))
    await events.load(unconflicted[k] for k in keys_read if k in unconflicted)
    r: dict[StateKey, Event] = {
        k: event for k in keys_read
        if k in unconflicted and (event := events.get(unconflicted[k])) is not None
    }

    # Power levels, then join rules, then memberships, each resolved in R as updated by the
    # previous passes. As in Synapse, every key of one pass is resolved against the same R (so
    # the outcome does not depend on the order keys are visited in), and passes select keys by
    # event type except the power levels pass, which takes ("m.room.power_levels", "") only.
    resolved: dict[StateKey, Event] = {}
    for pass_keys in (
        [k for k in candidates if k == POWER_LEVELS_KEY],
        [k for k in candidates if k[0] == JOIN_RULES],
        [k for k in candidates if k[0] == MEMBER],
    ):
        winners = {k: _resolve_auth_conflict(room_version, candidates[k], r) for k in pass_keys}
        r.update(winners)
        resolved.update(winners)
    for key, events_for_key in candidates.items():
        if key not in resolved:
            resolved[key] = _resolve_other_conflict(room_version, events_for_key, r)

    return {**unconflicted, **{k: e.event_id for k, e in resolved.items()}}
