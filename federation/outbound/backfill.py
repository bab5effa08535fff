"""Backfiller: fetching a room's history older than what this server holds (S-S API
"Backfilling and retrieving missing events"): /backfill from the room's earliest events we
lack on a server in the room, signatures checked, the state before events whose prev events
we lack from /state_ids, then stored below the timeline by RemoteEventHandler."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from urllib.parse import quote

from federation.discovery import FederationError
from federation.outbound.missing_events import MissingEventsFetcher, parse_pdus
from federation.transport import FederationTransport
from homeserver.core import Core
from homeserver.crypto.event_signatures import EventSignatureChecker
from homeserver.errors import MatrixError
from homeserver.events.event import Event
from homeserver.events.room_versions import RoomVersion
from homeserver.lru import LruCache

logger = logging.getLogger(__name__)

V1 = "/_matrix/federation/v1"
# Events one /backfill asks for (the most a server of ours answers with).
BACKFILL_LIMIT = 100
# How long edges no server could fill are left alone.
RETRY_AFTER_MS = 60_000


class Backfiller:
    """room_reads.RemoteBackfill over federation."""

    def __init__(
        self, core: Core, transport: FederationTransport, signatures: EventSignatureChecker
    ) -> None:
        self.storage = core.storage
        self.remote_events = core.remote_events
        self.transport = transport
        self.signatures = signatures
        self.server_name = core.server.server_name
        self.states = MissingEventsFetcher(core, transport, signatures)
        # Edge events a server sent us that we could not store (a bad signature, no state to
        # place them in): not asked for again, or the history behind them, which we hold,
        # would take up every answer and keep the room's other edges from being fetched.
        self._unobtainable: LruCache[str, bool] = LruCache(10_000)
        # Edges the servers that answered had nothing behind (history hidden from us): not
        # asked for again for a while, or every page read across them would ask again. (A
        # server that did not answer is asked again next time: it may be back.)
        self._tried_at: LruCache[str, int] = LruCache(10_000)
        self.clock = core.clock

    async def backfill(self, room_id: str, extremities: Sequence[str]) -> int:
        room_version = await self.storage.rooms.get_room_version(room_id)
        if room_version is None:
            return 0
        now = self.clock.time_ms()
        extremities = [e for e in extremities if not self._tried_lately(e, now)]
        if not extremities:
            return 0
        servers = await self.storage.federation_outbox.servers_in_room(room_id, self.server_name)
        answered = False
        for server in sorted(servers):
            # Each pass that stores nothing drops the edge events the server sent us but we
            # refused, whose older history took up the answer: a few passes at most.
            while wanted := [e for e in extremities if self._unobtainable.get_hit(e) is None]:
                try:
                    stored, refused = await self._backfill_from(
                        server, room_version, room_id, wanted
                    )
                except (FederationError, MatrixError, ValueError, KeyError, TypeError) as e:
                    logger.info("room_id=%s backfill from %s failed: %s", room_id, server, e)
                    break
                answered = True
                for event_id in refused:
                    self._unobtainable.put(event_id, True)
                if stored:
                    return stored
                if not refused:
                    break  # this server has nothing more for us
        if answered:
            for event_id in extremities:
                self._tried_at.put(event_id, now)
        return 0

    def _tried_lately(self, event_id: str, now: int) -> bool:
        tried = self._tried_at.get_hit(event_id)
        return tried is not None and now - tried < RETRY_AFTER_MS

    async def _backfill_from(
        self, server: str, room_version: RoomVersion, room_id: str, wanted: Sequence[str]
    ) -> tuple[int, list[str]]:
        """Backfill from `server`: how many events were stored, and which of `wanted` it sent
        that could not be."""
        answer = await self.transport.request(
            server,
            "GET",
            f"{V1}/backfill/{quote(room_id, safe='')}",
            query={"v": list(wanted), "limit": str(BACKFILL_LIMIT)},
        )
        pdus = answer.get("pdus") if isinstance(answer, dict) else None
        received = {e.event_id: e for e in parse_pdus(room_version, room_id, pdus)}
        held = await self.storage.events.get_event_metas(received)
        fresh = [
            e for e in received.values() if e.event_id not in held or held[e.event_id].outlier
        ][:BACKFILL_LIMIT]
        failed = await self.signatures.failures(fresh)
        for event_id, reason in failed.items():
            logger.info("event_id=%s from %s: bad signature: %s", event_id, server, reason)
        kept = [e for e in fresh if e.event_id not in failed]
        states_before = {
            e.event_id: await self.states.state_before(server, e)
            for e in await self._without_state_before(kept)
        }
        placed = await self.remote_events.persist_backfilled(room_id, kept, states_before)
        placed_ids = {p.event.event_id for p in placed}
        refused = [i for i in wanted if i in received and i not in placed_ids]
        return len(placed), refused

    async def _without_state_before(self, events: Sequence[Event]) -> list[Event]:
        """Those of `events` with a prev event neither among `events` nor stored with state:
        nothing here tells the state before them."""
        batch = {e.event_id for e in events}
        outside = {p for e in events for p in e.prev_event_ids if p not in batch}
        metas = await self.storage.events.get_event_metas(outside)
        known = batch | {i for i, m in metas.items() if m.state_group_after is not None}
        return [e for e in events if any(p not in known for p in e.prev_event_ids)]
