"""Who may read what in a room: history visibility per event (C-S API "Room History
Visibility", "Server behaviour") and access to a room's timeline and state as a whole."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from homeserver.errors import Forbidden
from homeserver.events.event import HISTORY_VISIBILITY, MEMBER, Event, StateKey
from homeserver.storage import Storage
from homeserver.storage.stores.events import EventMeta
from homeserver.storage.stores.room_extras import RoomExtrasStore

WORLD_READABLE = "world_readable"
SHARED = "shared"
INVITED = "invited"
JOINED = "joined"
_KNOWN = frozenset({WORLD_READABLE, SHARED, INVITED, JOINED})


@dataclass(frozen=True)
class RoomAccess:
    """A user's standing in a room now: their membership (None if they never had one), the
    event that set it, and whether the room is world readable."""

    room_id: str
    membership: str | None
    member_event_id: str | None
    world_readable: bool

    @property
    def can_read_timeline(self) -> bool:
        """Whether the user may read the room's timeline at all; each event is then filtered
        by `HistoryVisibility.filter_events`. Anyone who ever had a membership may try (they
        see what the rules allow them, e.g. up to their leave), as may anyone in a world
        readable room."""
        return self.world_readable or self.membership is not None


@dataclass(frozen=True)
class VisibleEvents:
    events: list[Event]
    # The user's membership after each visible event ("leave" if they had none): the
    # `unsigned.membership` clients are given.
    memberships: dict[str, str]


def visibility_of(event: Event | None) -> str:
    """The history_visibility an m.room.history_visibility event sets; `shared` when there is
    none or the value is not understood ("Server behaviour")."""
    if event is None:
        return SHARED
    value = event.content.get("history_visibility")
    return value if isinstance(value, str) and value in _KNOWN else SHARED


class HistoryVisibility:
    def __init__(self, storage: Storage, extras: RoomExtrasStore) -> None:
        self.storage = storage
        self.extras = extras

    async def room_access(self, user_id: str, room_id: str) -> RoomAccess:
        keys = [(MEMBER, user_id), (HISTORY_VISIBILITY, "")]
        state = await self.storage.rooms.get_current_state_for_keys(room_id, keys)
        events = await self.storage.events.get_events(state.values())
        member = events.get(state.get((MEMBER, user_id), ""))
        hv = events.get(state.get((HISTORY_VISIBILITY, ""), ""))
        return RoomAccess(
            room_id,
            member.membership if member is not None else None,
            member.event_id if member is not None else None,
            visibility_of(hv) == WORLD_READABLE,
        )

    async def require_timeline_access(self, user_id: str, room_id: str) -> RoomAccess:
        """403 unless the user may read the room's timeline (an unknown room included, so
        the answer does not reveal which rooms exist)."""
        access = await self.room_access(user_id, room_id)
        if not access.can_read_timeline:
            raise Forbidden(f"User {user_id} is not in room {room_id}")
        return access

    async def state_event_for_reads(self, user_id: str, room_id: str) -> str | None:
        """Which state a user may read: None for the current state (members, and anyone in a
        world readable room), or the event after which it froze for a user who has left or was
        banned (what they saw last, as Synapse does). 403 for anyone else."""
        access = await self.room_access(user_id, room_id)
        if access.membership == "join" or access.world_readable:
            return None
        if access.membership in ("leave", "ban") and access.member_event_id is not None:
            history = await self.extras.get_user_memberships(room_id, user_id)
            if any(row.membership == "join" for row in history):
                return access.member_event_id
        raise Forbidden(f"User {user_id} is not in room {room_id}")

    async def filter_events(
        self,
        user_id: str,
        events: Sequence[Event],
        metas: Mapping[str, EventMeta] | None = None,
    ) -> VisibleEvents:
        """The events `user_id` may see, in their order (see `visible_memberships`)."""
        if not events:
            return VisibleEvents([], {})
        if metas is None:
            metas = await self.storage.events.get_event_metas([e.event_id for e in events])
        memberships = await self.visible_memberships(
            user_id, [metas[e.event_id] for e in events if e.event_id in metas]
        )
        visible = [e for e in events if e.event_id in memberships]
        return VisibleEvents(visible, {e.event_id: memberships[e.event_id] for e in visible})

    async def visible_memberships(self, user_id: str, metas: Sequence[EventMeta]) -> dict[str, str]:
        """Of the events described by `metas`, those `user_id` may see, each with the user's
        membership after it; what the rules need is in the metadata, so the events
        themselves are not read. The rules read the state before and after each event: an
        event is visible if either allows it. For most events the two agree on what matters;
        they differ exactly for m.room.history_visibility events and the user's own member
        events, where the spec allows either."""
        if not metas:
            return {}
        groups = {
            g for m in metas for g in (m.state_group_before, m.state_group_after) if g is not None
        }
        keys: list[StateKey] = [(HISTORY_VISIBILITY, ""), (MEMBER, user_id)]
        states = await self.extras.get_state_at_groups(groups, keys)
        state_events = await self.storage.events.get_events(
            {eid for s in states.values() for eid in s.values()}
        )
        joins: defaultdict[str, list[int]] = defaultdict(list)
        joins.update(await self.extras.get_user_joins_in_rooms({m.room_id for m in metas}, user_id))

        def decide(group: int | None, stream: int, room_id: str) -> tuple[bool, str]:
            state = states.get(group, {}) if group is not None else {}
            hv = visibility_of(state_events.get(state.get((HISTORY_VISIBILITY, ""), "")))
            member = state_events.get(state.get((MEMBER, user_id), ""))
            membership = (member.membership if member is not None else None) or "leave"
            # "Server behaviour", rules 1 to 5.
            if hv == WORLD_READABLE or membership == "join":
                return True, membership
            if hv == SHARED and any(pos > stream for pos in joins[room_id]):
                return True, membership
            return hv == INVITED and membership == "invite", membership

        memberships: dict[str, str] = {}
        for meta in metas:
            if meta.outlier:
                continue  # no state known at it: nothing says the user may see it
            before, _ = decide(meta.state_group_before, meta.stream_ordering, meta.room_id)
            after, membership_after = decide(
                meta.state_group_after, meta.stream_ordering, meta.room_id
            )
            if before or after:
                memberships[meta.event_id] = membership_after
        return memberships
