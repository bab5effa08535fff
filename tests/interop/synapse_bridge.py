"""The Synapse side of the differential tests: our events as Synapse events, the fake stores its
auth checks and state resolution read, and each side's verdict in one comparable shape.

Imports Synapse: import this module only after `availability.require_synapse()`. Nothing here
is copied from Synapse; it only calls Synapse's public functions.
"""
from __future__ import annotations

import warnings
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tests.interop.availability import keeping_pillow_settings

# Synapse's imports raise DeprecationWarnings from Twisted and jsonschema; not ours to fix.
with warnings.catch_warnings(), keeping_pillow_settings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import synapse  # noqa: E402
    from synapse.api.errors import SynapseError  # noqa: E402
    from synapse.api.room_versions import KNOWN_ROOM_VERSIONS as SYNAPSE_ROOM_VERSIONS  # noqa: E402
    from synapse.crypto.event_signing import (  # noqa: E402
        add_hashes_and_signatures,
        check_event_content_hash,
        compute_content_hash,
        compute_event_reference_hash,
        compute_event_signature,
    )
    from synapse.event_auth import (  # noqa: E402
        check_state_dependent_auth_rules,
        check_state_independent_auth_rules,
    )
    from synapse.events import EventBase, make_event_from_dict  # noqa: E402
    from synapse.state import v1 as synapse_state_v1  # noqa: E402
    from synapse.state import v2 as synapse_state_v2  # noqa: E402
    from synapse.storage.databases.main.event_federation import StateDifference  # noqa: E402
    from synapse.synapse_rust.events import redact_event_dict  # noqa: E402

from homeserver.auth_rules import check_auth_events_list, check_auth_rules  # noqa: E402
from homeserver.errors import AuthError  # noqa: E402
from homeserver.events.event import CREATE, Event, StateKey, StateMap  # noqa: E402
from homeserver.events.room_versions import StateResAlgorithm  # noqa: E402
from homeserver.state import InMemoryStateResolutionStore, resolve_state  # noqa: E402
from tests.interop.rooms import run_sync  # noqa: E402

SYNAPSE_VERSION: str = synapse.__version__

__all__ = [
    "SYNAPSE_VERSION",
    "SynapseError",
    "Verdict",
    "add_hashes_and_signatures",
    "check_event_content_hash",
    "compute_content_hash",
    "compute_event_reference_hash",
    "compute_event_signature",
    "make_event_from_dict",
    "our_verdict",
    "redact_event_dict",
    "resolve_ours",
    "resolve_synapse",
    "synapse_event",
    "synapse_room_version",
    "synapse_verdict",
]


def synapse_room_version(identifier: str) -> Any:
    return SYNAPSE_ROOM_VERSIONS[identifier]


def synapse_event(event: Event) -> EventBase:
    """Our event as a Synapse (Rust) event of the same room version."""
    room_version = synapse_room_version(event.room_version.identifier)
    return make_event_from_dict(dict(event.pdu), room_version)


# --- auth rules ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """`allowed`; otherwise `reason`. `crashed` marks a Synapse exception that is not a
    SynapseError (AuthError is one): Synapse would not accept the event either, but it did not
    reach a verdict."""

    allowed: bool
    reason: str = ""
    crashed: bool = False

    def __str__(self) -> str:
        if self.allowed:
            return "allowed"
        return ("CRASHED: " if self.crashed else "rejected: ") + self.reason


def our_verdict(event: Event, events_by_id: Mapping[str, Event]) -> Verdict:
    """Our S2S step 4: the rules on the listed auth events, then the auth rules against them
    (v12: plus the create event the room ID names), as handlers/remote_events.py does."""
    try:
        auth_events = [events_by_id[i] for i in event.auth_event_ids]
        check_auth_events_list(event, auth_events)
        auth_state: dict[StateKey, Event] = {
            e.state_key_tuple: e for e in auth_events if e.is_state()
        }
        if (
            event.room_version.room_id_from_create_event
            and event.type != CREATE
            and (CREATE, "") not in auth_state
        ):
            create = events_by_id.get("$" + event.room_id[1:])
            if create is not None:
                auth_state[(CREATE, "")] = create
        check_auth_rules(event, auth_state)
    except AuthError as e:
        return Verdict(False, e.message)
    return Verdict(True)


class _SynapseEventSource:
    """What check_state_independent_auth_rules reads: get_events by ID (rejected ones too)."""

    def __init__(self, events: Mapping[str, EventBase]) -> None:
        self._events = events

    async def get_events(
        self,
        event_ids: Collection[str],
        redact_behaviour: Any = None,
        get_prev_content: bool = False,
        allow_rejected: bool = False,
    ) -> dict[str, EventBase]:
        return {i: self._events[i] for i in event_ids if i in self._events}


def synapse_verdict(event: Event, events_by_id: Mapping[str, Event]) -> Verdict:
    """Synapse's S2S step 4 (handlers/federation_event.py `_check_event_auth`): the state
    independent rules, then the state dependent ones against the event's claimed auth events."""
    converted = {i: synapse_event(e) for i, e in events_by_id.items()}
    try:
        syn = synapse_event(event)
        run_sync(check_state_independent_auth_rules(_SynapseEventSource(converted), syn))
        claimed = [converted[i] for i in syn.auth_event_ids() if i in converted]
        check_state_dependent_auth_rules(syn, claimed)
    except SynapseError as e:
        return Verdict(False, f"{type(e).__name__}: {e.msg}")
    except Exception as e:  # noqa: BLE001 - any other exception is Synapse failing to decide
        return Verdict(False, f"{type(e).__name__}: {e}", crashed=True)
    return Verdict(True)


# --- state resolution ---------------------------------------------------------------------------


class _Clock:
    async def sleep(self, duration: Any) -> None:
        return None


def _with_auth_chain(events: Mapping[str, EventBase], ids: Iterable[str]) -> set[str]:
    """The events and everything reachable through their auth events."""
    found = set(ids)
    stack = list(found)
    while stack:
        event = events.get(stack.pop())
        if event is None:
            continue
        for auth_id in event.auth_event_ids():
            if auth_id not in found:
                found.add(auth_id)
                stack.append(auth_id)
    return found


class _SynapseStateResStore:
    """The StateResolutionStore of synapse/state/v2.py over a fixed set of events: the auth
    difference over the state sets' events plus their auth chains (as Synapse's database does),
    and for v2.1 the conflicted state subgraph (rooms/v12.md): the events on auth paths between
    conflicted events, endpoints included."""

    def __init__(self, events: Mapping[str, EventBase]) -> None:
        self._events = events

    async def get_events(
        self, event_ids: Collection[str], allow_rejected: bool = False
    ) -> dict[str, EventBase]:
        return {i: self._events[i] for i in event_ids if i in self._events}

    async def get_auth_chain_difference(
        self,
        room_id: str,
        state_sets: list[set[str]],
        conflicted_state: set[str] | None,
        additional_backwards_reachable_conflicted_events: set[str] | None,
    ) -> StateDifference:
        chains = [_with_auth_chain(self._events, s) for s in state_sets]
        difference = set().union(*chains) - chains[0].intersection(*chains[1:])
        subgraph: set[str] | None = None
        if conflicted_state is not None:
            seeds = set(conflicted_state)
            seeds |= set(additional_backwards_reachable_conflicted_events or ())
            below = _with_auth_chain(self._events, seeds)
            # Walk back up from the conflicted events, through citing events below them.
            cited_by: dict[str, set[str]] = {}
            for event_id in below:
                event = self._events.get(event_id)
                if event is not None:
                    for auth_id in event.auth_event_ids():
                        cited_by.setdefault(auth_id, set()).add(event_id)
            subgraph = set(seeds)
            stack = list(seeds)
            while stack:
                for citer in cited_by.get(stack.pop(), ()):
                    if citer not in subgraph:
                        subgraph.add(citer)
                        stack.append(citer)
        return StateDifference(auth_difference=difference, conflicted_subgraph=subgraph)


def resolve_synapse(
    room_id: str, version: str, state_sets: Sequence[StateMap], events: Iterable[Event]
) -> dict[StateKey, str]:
    """Synapse's resolve_events_with_store (v1 for room v1, else v2/v2.1) over the events."""
    converted = {e.event_id: synapse_event(e) for e in events}
    rv = synapse_room_version(version)
    if version == "1":
        async def factory(ids: Collection[str]) -> dict[str, EventBase]:
            return {i: converted[i] for i in ids if i in converted}

        result = run_sync(synapse_state_v1.resolve_events_with_store(
            room_id, rv, list(state_sets), None, factory))
    else:
        result = run_sync(synapse_state_v2.resolve_events_with_store(
            _Clock(), room_id, rv, list(state_sets), None, _SynapseStateResStore(converted)))
    return dict(result)


def resolve_ours(
    room_id: str, version: str, state_sets: Sequence[StateMap], events: Iterable[Event]
) -> dict[StateKey, str]:
    events = list(events)
    rv = events[0].room_version
    assert rv.identifier == version
    assert (version == "1") == (rv.state_res is StateResAlgorithm.V1)
    return dict(run_sync(resolve_state(
        room_id, rv, list(state_sets), InMemoryStateResolutionStore(events))))


