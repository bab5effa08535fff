"""FederationReads: what a resident server hands other servers of a room's history and state
(S-S API "Retrieving events", "Backfilling and retrieving missing events", "Retrieving event
authorisation information"). Every read is for a server with a user joined to the room now
and let in by its server ACL; events its users could not see go out redacted."""

from __future__ import annotations

import heapq
from collections.abc import Collection, Sequence
from typing import Any

from federation.inbound.acl import require_server_allowed
from homeserver.core import Core
from homeserver.errors import Forbidden, NotFound
from homeserver.events.event import HISTORY_VISIBILITY, MEMBER, Event, StateKey
from homeserver.handlers.visibility import INVITED, JOINED, visibility_of
from homeserver.identifiers import domain_of
from homeserver.storage import Storage
from homeserver.storage.stores.room_extras import RoomExtrasStore

JsonDict = dict[str, Any]
# The most events one /backfill or /get_missing_events answer holds, whatever was asked.
MAX_EVENTS = 100


class ServerVisibility:
    """Which events a server may read: those that one of its users could see by the room's
    history visibility at the event (C-S API "Room History Visibility", "Server behaviour",
    taken for a server as a whole). `shared` and `world_readable` history is open to every
    server in the room; `invited` history to servers with a user invited or joined at the
    event, `joined` history to servers with a user joined at it. As for clients, the state
    before or after the event may allow it, so a server sees its own users' membership
    changes and the visibility changes themselves."""

    def __init__(self, storage: Storage, extras: RoomExtrasStore) -> None:
        self.storage = storage
        self.extras = extras

    async def hidden_from(self, server_name: str, events: Sequence[Event]) -> set[str]:
        """The IDs of those of `events` (all of one room) that `server_name` may not read."""
        if not events:
            return set()
        room_id = events[0].room_id
        members = await self.storage.rooms.get_current_state_ids(room_id, [MEMBER])
        # A member key, once in the state, stays: current state names every user of the
        # server who ever had a membership in the room.
        users = [k for _, k in members if domain_of(k) == server_name]
        metas = await self.storage.events.get_event_metas([e.event_id for e in events])
        groups = {
            g
            for m in metas.values()
            for g in (m.state_group_before, m.state_group_after)
            if g is not None
        }
        keys: list[StateKey] = [(HISTORY_VISIBILITY, ""), *((MEMBER, u) for u in users)]
        states = await self.extras.get_state_at_groups(groups, keys)
        state_events = await self.storage.events.get_events(
            {eid for s in states.values() for eid in s.values()}
        )

        def allows(group: int | None) -> bool:
            state = states.get(group, {}) if group is not None else {}
            hv = visibility_of(state_events.get(state.get((HISTORY_VISIBILITY, ""), "")))
            if hv not in (INVITED, JOINED):
                return True  # shared, world_readable
            memberships = {
                m.membership
                for u in users
                if (m := state_events.get(state.get((MEMBER, u), ""))) is not None
            }
            return "join" in memberships or (hv == INVITED and "invite" in memberships)

        hidden: set[str] = set()
        for event in events:
            meta = metas.get(event.event_id)
            if meta is None or meta.outlier:
                # No state known here (a joined room's auth chain and state): the servers in
                # the room are given those whole by /send_join and /state anyway.
                continue
            if not (allows(meta.state_group_before) or allows(meta.state_group_after)):
                hidden.add(event.event_id)
        return hidden


class FederationReads:
    def __init__(self, core: Core) -> None:
        self.storage = core.storage
        self.state = core.state
        self.clock = core.clock
        self.serializer = core.room_api.serializer
        self.server_name = core.server.server_name
        self.visibility = ServerVisibility(core.storage, core.room_api.extras)

    async def get_event(self, origin: str, event_id: str) -> JsonDict:
        """GET /event/{eventId}: one event, as a transaction of one PDU."""
        event = await self.storage.events.get_event(event_id)
        if event is None:
            raise NotFound(f"Event {event_id} not found")
        await self._require_access(origin, event.room_id)
        return self._transaction(await self._pdus(origin, [event]))

    async def get_state_ids(self, origin: str, room_id: str, event_id: str) -> JsonDict:
        """GET /state_ids/{roomId}: the state before the event and its auth chain, as IDs."""
        state_ids, chain_ids = await self._state_and_chain(origin, room_id, event_id)
        return {"pdu_ids": sorted(state_ids), "auth_chain_ids": sorted(chain_ids)}

    async def get_state(self, origin: str, room_id: str, event_id: str) -> JsonDict:
        """GET /state/{roomId}: the same as /state_ids, with the events themselves."""
        state_ids, chain_ids = await self._state_and_chain(origin, room_id, event_id)
        events = await self.storage.events.get_events([*state_ids, *chain_ids])
        serialize = self.serializer.federation_format
        return {
            "pdus": await serialize([events[i] for i in state_ids if i in events]),
            "auth_chain": await serialize([events[i] for i in chain_ids if i in events]),
        }

    async def get_event_auth(self, origin: str, room_id: str, event_id: str) -> JsonDict:
        """GET /event_auth/{roomId}/{eventId}: the event's auth chain."""
        await self._require_access(origin, room_id)
        await self._require_event_in_room(room_id, event_id)
        chain_ids = await self.storage.events.get_auth_chain_ids([event_id])
        chain = await self.storage.events.get_events(chain_ids)
        return {"auth_chain": await self.serializer.federation_format(list(chain.values()))}

    async def backfill(
        self, origin: str, room_id: str, event_ids: Sequence[str], limit: int
    ) -> JsonDict:
        """GET /backfill/{roomId}: the given events and those before them, newest first."""
        await self._require_access(origin, room_id)
        events = await self._walk_back(room_id, event_ids, min(limit, MAX_EVENTS), set(), 0, True)
        return self._transaction(await self._pdus(origin, events))

    async def get_missing_events(
        self,
        origin: str,
        room_id: str,
        earliest: Collection[str],
        latest: Sequence[str],
        limit: int,
        min_depth: int,
    ) -> JsonDict:
        """POST /get_missing_events/{roomId}: the events before `latest` back to `earliest`
        (neither included), at least `min_depth` deep, oldest first."""
        await self._require_access(origin, room_id)
        events = await self._walk_back(
            room_id, latest, min(limit, MAX_EVENTS), set(earliest), min_depth, False
        )
        return {"events": await self._pdus(origin, events[::-1])}

    # -- the checks every read makes ---------------------------------------------------------

    async def _require_access(self, origin: str, room_id: str) -> None:
        await require_server_allowed(self.storage, room_id, origin)
        if not await self.storage.rooms.is_server_in_room(room_id, origin):
            raise Forbidden(f"Server {origin} is not in room {room_id}")

    async def _require_event_in_room(self, room_id: str, event_id: str) -> None:
        metas = await self.storage.events.get_event_metas([event_id])
        if event_id not in metas or metas[event_id].room_id != room_id:
            raise NotFound(f"Event {event_id} not found in room {room_id}")

    async def _state_and_chain(
        self, origin: str, room_id: str, event_id: str
    ) -> tuple[list[str], set[str]]:
        """The state before the event ("prior to considering any state changes induced by
        the requested event") and the auth chain of that state."""
        await self._require_access(origin, room_id)
        await self._require_event_in_room(room_id, event_id)
        state = await self.state.get_state_before(event_id)
        state_ids = list(state.values())
        return state_ids, await self.storage.events.get_auth_chain_ids(state_ids)

    # -- walking the DAG ---------------------------------------------------------------------

    async def _walk_back(
        self,
        room_id: str,
        start: Sequence[str],
        limit: int,
        stop: set[str],
        min_depth: int,
        include_start: bool,
    ) -> list[Event]:
        """Events reached through prev_events from `start`, deepest first, up to `limit`;
        never entering `stop` or going below `min_depth`. Each round loads the prev events of
        what it took in one read."""
        seen = set(stop) | set(start)
        queue: list[tuple[int, str, Event]] = []
        found: list[Event] = []

        def push(events: dict[str, Event], ids: Sequence[str]) -> None:
            for i in ids:
                event = events.get(i)
                if event is not None and event.room_id == room_id and event.depth >= min_depth:
                    heapq.heappush(queue, (-event.depth, event.event_id, event))

        starting = await self.storage.events.get_events(start)
        if include_start:
            push(starting, start)
        else:
            first = [p for e in starting.values() if e.room_id == room_id for p in e.prev_event_ids]
            first = [p for p in dict.fromkeys(first) if p not in seen]
            seen.update(first)
            push(await self.storage.events.get_events(first), first)
        while queue and len(found) < limit:
            # Take every event of the deepest level at once, then read their parents together.
            depth = queue[0][0]
            taken: list[Event] = []
            while queue and queue[0][0] == depth and len(found) + len(taken) < limit:
                taken.append(heapq.heappop(queue)[2])
            found += taken
            parents = [p for e in taken for p in e.prev_event_ids if p not in seen]
            parents = list(dict.fromkeys(parents))
            seen.update(parents)
            push(await self.storage.events.get_events(parents), parents)
        return found

    # -- answers -----------------------------------------------------------------------------

    async def _pdus(self, origin: str, events: Sequence[Event]) -> list[JsonDict]:
        """The PDUs of `events`, each redacted where the origin may not read it (S-S API: a
        server may still need the event's place in the DAG, never its content)."""
        hidden = await self.visibility.hidden_from(origin, events)
        return await self.serializer.federation_format(
            [e.redacted() if e.event_id in hidden else e for e in events]
        )

    def _transaction(self, pdus: list[JsonDict]) -> JsonDict:
        return {"origin": self.server_name, "origin_server_ts": self.clock.time_ms(), "pdus": pdus}
