"""MissingEventsFetcher: filling the gap before a PDU whose prev_events we lack (S-S API
"Backfilling and retrieving missing events"): /get_missing_events on the server that sent it,
then, for what that leaves unconnected, the state before the event from /state_ids with the
events we lack fetched by /event or /state and stored as outliers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import quote

from federation.discovery import FederationError
from federation.transport import FederationTransport
from homeserver.core import Core
from homeserver.crypto.event_signatures import EventSignatureChecker
from homeserver.errors import Codes, MatrixError
from homeserver.events.event import Event, StateKey
from homeserver.events.room_versions import RoomVersion

logger = logging.getLogger(__name__)

V1 = "/_matrix/federation/v1"
# How many missing events one /get_missing_events asks for (the spec's default).
MISSING_EVENTS_LIMIT = 10
# Past this many events lacking from a state, one /state beats an /event per event.
FETCH_ONE_BY_ONE_MAX = 20
CONCURRENT_FETCHES = 10


class MissingEventsFetcher:
    """transactions.PrevEventsFetcher over federation."""

    def __init__(
        self, core: Core, transport: FederationTransport, signatures: EventSignatureChecker
    ) -> None:
        self.storage = core.storage
        self.remote_events = core.remote_events
        self.transport = transport
        self.signatures = signatures

    async def fill_gap(self, origin: str, event: Event) -> Mapping[StateKey, str] | None:
        try:
            await self._fetch_missing_events(origin, event)
            if not await self._prevs_without_state(event):
                return None
            return await self.state_before(origin, event)
        except (FederationError, ValueError, KeyError, TypeError) as e:
            logger.info("origin=%s event_id=%s gap not filled: %s", origin, event.event_id, e)
            raise MatrixError(
                f"The events before {event.event_id} could not be fetched from {origin}",
                Codes.UNKNOWN,
                status=502,
            ) from None

    async def _fetch_missing_events(self, origin: str, event: Event) -> None:
        """Ask `origin` for the events between our forward extremities and `event`, and
        persist them oldest first: each fills part of the gap for the next."""
        room_id = event.room_id
        extremities = await self.storage.events.get_forward_extremities(room_id)
        metas = await self.storage.events.get_event_metas(extremities)
        answer = await self.transport.request(
            origin,
            "POST",
            f"{V1}/get_missing_events/{quote(room_id, safe='')}",
            content={
                "earliest_events": extremities,
                "latest_events": [event.event_id],
                "limit": MISSING_EVENTS_LIMIT,
                # Nothing older than what we already hold can connect the gap.
                "min_depth": min((m.depth for m in metas.values()), default=0),
            },
        )
        events = parse_pdus(event.room_version, room_id, _list(answer, "events"))
        have = await self.storage.events.have_events([e.event_id for e in events])
        fresh = [e for e in events if e.event_id not in have and e.event_id != event.event_id]
        failed = await self.signatures.failures(fresh)
        for missing in sorted(fresh, key=lambda e: (e.depth, e.event_id)):
            if missing.event_id in failed:
                logger.info(
                    "event_id=%s from %s: bad signature: %s",
                    missing.event_id,
                    origin,
                    failed[missing.event_id],
                )
                continue
            state = None
            if await self._prevs_without_state(missing):
                # More was missing than one answer holds: start from this event's state.
                state = await self.state_before(origin, missing)
            try:
                await self.remote_events.persist_event(missing, state)
            except MatrixError as e:
                logger.info("event_id=%s from %s refused: %s", missing.event_id, origin, e)

    async def _prevs_without_state(self, event: Event) -> set[str]:
        """The prev events we lack, or hold only as outliers (without state after them)."""
        metas = await self.storage.events.get_event_metas(event.prev_event_ids)
        return {
            p for p in event.prev_event_ids if p not in metas or metas[p].state_group_after is None
        }

    async def state_before(self, origin: str, event: Event) -> dict[StateKey, str]:
        """The state before `event` as `origin` knows it (the server that sent the event has
        it, and /state_ids at the event itself needs no state resolution here), with the
        events of that state and their auth chains stored as outliers where we lack them."""
        room_id = event.room_id
        answer = await self.transport.request(
            origin,
            "GET",
            f"{V1}/state_ids/{quote(room_id, safe='')}",
            query={"event_id": event.event_id},
        )
        state_ids = _id_list(answer, "pdu_ids")
        wanted = {*state_ids, *_id_list(answer, "auth_chain_ids")}
        lacking = wanted - await self.storage.events.have_events(wanted)
        if lacking:
            fetched = await self._fetch_events(origin, event, lacking)
            failed = await self.signatures.failures(fetched)
            kept = [e for e in fetched if e.event_id not in failed]
            if len(kept) < len(lacking):
                logger.warning(
                    "room_id=%s state at %s: %d of %d events lacking could not be had",
                    room_id,
                    event.event_id,
                    len(lacking) - len(kept),
                    len(lacking),
                )
            await self.remote_events.persist_outliers(room_id, kept)
        state_events = await self.storage.events.get_events(state_ids)
        return {
            e.state_key_tuple: e.event_id
            for e in state_events.values()
            if e.room_id == room_id and e.is_state()
        }

    async def _fetch_events(
        self, origin: str, at: Event, event_ids: Collection[str]
    ) -> list[Event]:
        room_version, room_id = at.room_version, at.room_id
        if len(event_ids) > FETCH_ONE_BY_ONE_MAX:
            answer = await self.transport.request(
                origin,
                "GET",
                f"{V1}/state/{quote(room_id, safe='')}",
                query={"event_id": at.event_id},
            )
            pdus = [*_list(answer, "pdus"), *_list(answer, "auth_chain")]
            return [e for e in parse_pdus(room_version, room_id, pdus) if e.event_id in event_ids]
        slots = asyncio.Semaphore(CONCURRENT_FETCHES)

        async def fetch(event_id: str) -> Event | None:
            async with slots:
                try:
                    answer = await self.transport.request(
                        origin, "GET", f"{V1}/event/{quote(event_id, safe='')}"
                    )
                except FederationError as e:
                    logger.info("event_id=%s not fetched from %s: %s", event_id, origin, e)
                    return None
            found = parse_pdus(room_version, room_id, _list(answer, "pdus"))
            # The ID is the event's hash (room versions 3+): another event cannot pass as it.
            return next((e for e in found if e.event_id == event_id), None)

        results = await asyncio.gather(*(fetch(i) for i in sorted(event_ids)))
        return [e for e in results if e is not None]


def _list(answer: Any, key: str) -> list[Any]:
    value = answer.get(key) if isinstance(answer, dict) else None
    if not isinstance(value, list):
        raise ValueError(f"the answer has no list {key}")
    return value


def _id_list(answer: Any, key: str) -> list[str]:
    return [i for i in _list(answer, key) if isinstance(i, str)]


def parse_pdus(room_version: RoomVersion, room_id: str, pdus: Any) -> list[Event]:
    """The events of the room among `pdus`; anything else, or malformed, is left out."""
    events = []
    for pdu in pdus if isinstance(pdus, list) else []:
        if not isinstance(pdu, dict):
            continue
        # `unsigned` is covered by neither hashes nor signatures: nothing in it is kept.
        pdu = {k: v for k, v in pdu.items() if k != "unsigned"}
        try:
            event = Event(pdu, room_version)
        except (ValueError, TypeError, KeyError) as e:
            logger.info("room_id=%s malformed PDU left out: %s", room_id, e)
            continue
        # Event.room_id, not the PDU's field: a v12 create event has none, its ID names the room.
        if event.room_id == room_id:
            events.append(event)
    return events
