"""Parts of a /sync room entry that read current state rather than the timeline: the room
summary (sync.yaml RoomSummary: m.heroes and member counts) and the stripped state of invites
and knocks (C-S API "Stripped state")."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from homeserver.events.client_format import strip_state_event
from homeserver.events.event import CREATE, JOIN_RULES, MEMBER
from homeserver.storage import Storage
from homeserver.storage.stores.sync_reads import SyncReadsStore

NAME = "m.room.name"
CANONICAL_ALIAS = "m.room.canonical_alias"
# C-S API "Stripped state": the events a potential joiner is shown.
STRIPPED_STATE_TYPES = frozenset(
    {
        CREATE,
        NAME,
        "m.room.avatar",
        "m.room.topic",
        JOIN_RULES,
        CANONICAL_ALIAS,
        "m.room.encryption",
    }
)
MAX_HEROES = 5


async def room_summaries(
    storage: Storage, reads: SyncReadsStore, user_id: str, room_ids: Collection[str]
) -> dict[str, dict[str, Any]]:
    """sync.yaml RoomSummary per room. m.heroes only where the room has neither a name nor a
    canonical alias: the first 5 joined or invited members by stream order other than the
    user, else (nobody left) the first banned or departed ones."""
    if not room_ids:
        return {}
    counts = await reads.get_member_counts(room_ids)
    naming = await reads.get_current_state_of_types(room_ids, (NAME, CANONICAL_ALIAS))
    naming_events = await storage.events.get_events(
        {e for state in naming.values() for e in state.values()}
    )
    unnamed = []
    for room_id in room_ids:
        state = naming.get(room_id, {})
        name = naming_events.get(state.get((NAME, ""), ""))
        alias = naming_events.get(state.get((CANONICAL_ALIAS, ""), ""))
        named = (name is not None and _non_empty(name.content.get("name"))) or (
            alias is not None and _non_empty(alias.content.get("alias"))
        )
        if not named:
            unnamed.append(room_id)
    heroes = await reads.get_first_members(unnamed, ("join", "invite"), user_id, MAX_HEROES)
    lonely = [r for r in unnamed if not heroes.get(r)]
    heroes.update(await reads.get_first_members(lonely, ("leave", "ban"), user_id, MAX_HEROES))
    out: dict[str, dict[str, Any]] = {}
    for room_id in room_ids:
        summary: dict[str, Any] = {
            "m.joined_member_count": counts.get(room_id, {}).get("join", 0),
            "m.invited_member_count": counts.get(room_id, {}).get("invite", 0),
        }
        if room_id in unnamed:
            summary["m.heroes"] = heroes.get(room_id, [])
        out[room_id] = summary
    return out


def _non_empty(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


async def stripped_states(
    storage: Storage, member_events: Mapping[str, str], carried_key: str
) -> dict[str, list[dict[str, Any]]]:
    """room_id -> the stripped state shown with the user's invite (or knock) `member_events`:
    what the event carries in `unsigned[carried_key]` when it came over federation with it
    (invite_room_state / knock_room_state), else the room's state at the event with the
    sender's own member event (clients show the inviter's name and avatar from it); then the
    user's member event itself, whose sender is the inviter."""
    events = await storage.events.get_events(member_events.values())
    senders = {
        room_id: events[event_id].sender
        for room_id, event_id in member_events.items()
        if event_id in events and events[event_id].sender != events[event_id].state_key
    }
    metas = await storage.events.get_event_metas(list(member_events.values()))
    groups = [m.state_group_after for m in metas.values() if m.state_group_after is not None]
    states = await storage.state.get_states(groups)
    wanted: dict[str, list[str]] = {}
    for room_id, event_id in member_events.items():
        meta = metas.get(event_id)
        state = states.get(meta.state_group_after) if meta and meta.state_group_after else None
        if state is not None:
            wanted[room_id] = [
                e
                for (t, k), e in state.items()
                if (t in STRIPPED_STATE_TYPES and k == "")
                or (t == MEMBER and k == senders.get(room_id))
            ]
    state_events = await storage.events.get_events({e for ids in wanted.values() for e in ids})
    out: dict[str, list[dict[str, Any]]] = {}
    for room_id, event_id in member_events.items():
        member = events.get(event_id)
        if member is None:
            continue
        carried = member.unsigned.get(carried_key)
        stripped: list[dict[str, Any]]
        if room_id not in wanted and isinstance(carried, list):
            stripped = [s for s in carried if isinstance(s, dict)]
        else:
            stripped = [
                strip_state_event(state_events[e])
                for e in wanted.get(room_id, [])
                if e in state_events
            ]
        stripped.append(strip_state_event(member))
        out[room_id] = stripped
    return out


async def current_stripped_state(
    storage: Storage, room_id: str, member: str
) -> list[dict[str, Any]]:
    """The room's stripped state now (C-S API "Stripped state"), with `member`'s member event:
    what an invite or a knock carries to a server that is not in the room."""
    state = await storage.rooms.get_current_state_ids(room_id)
    wanted = [
        e
        for (t, k), e in state.items()
        if (t in STRIPPED_STATE_TYPES and k == "") or (t == MEMBER and k == member)
    ]
    events = await storage.events.get_events(wanted)
    return [strip_state_event(e) for e in events.values()]
