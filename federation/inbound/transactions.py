"""TransactionHandler: PUT /_matrix/federation/v1/send/{txnId} (S-S API "Transactions").

A transaction is answered once per origin and transaction ID; a retry gets the same answer
without being processed again. Each PDU goes through the checks on receipt of a PDU: format
and room version (step 1), signatures (step 2, EventSignatureChecker), then hashes and auth
(steps 3-6, RemoteEventHandler); its result is reported per event, and one failing PDU does
not fail the others. EDUs go to the handler registered for their type; unknown types are
ignored, as the spec asks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from federation.inbound.acl import is_server_allowed
from homeserver.clock import Clock
from homeserver.crypto.event_signatures import EventSignatureChecker
from homeserver.errors import Codes, MatrixError
from homeserver.events.event import Event
from homeserver.events.validation import validate_pdu
from homeserver.handlers.remote_events import RemoteEventHandler
from homeserver.storage import Storage

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]
MAX_PDUS, MAX_EDUS = 50, 100
# How long answers are kept for retried transactions, and how often old ones are dropped.
KEEP_ANSWERS_MS = 24 * 60 * 60 * 1000
CLEANUP_EVERY_MS = 60 * 60 * 1000

# edu handler(origin, content): raises to log a bad EDU; never fails the transaction.
EduHandler = Callable[[str, Any], Awaitable[None]]


class PrevEventsFetcher(Protocol):
    """Fills the gap before a PDU whose prev_events we lack (S-S API "Backfilling and
    retrieving missing events": /get_missing_events, then /state_ids). Returns the state
    before the event when it had to be fetched, None when the gap is now filled; raises
    MatrixError when it cannot be filled."""

    async def fill_gap(self, origin: str, event: Event) -> Mapping[tuple[str, str], str] | None: ...


class TransactionHandler:
    def __init__(
        self,
        storage: Storage,
        signatures: EventSignatureChecker,
        remote_events: RemoteEventHandler,
        clock: Clock,
    ) -> None:
        self.storage = storage
        self.signatures = signatures
        self.remote_events = remote_events
        self.clock = clock
        self.edu_handlers: dict[str, EduHandler] = {}
        # Until federation's outbound side sets one, a PDU after a gap is refused.
        self.prev_events: PrevEventsFetcher | None = None
        self._last_cleanup = 0
        # One transaction per origin at a time: the spec has senders wait for each answer,
        # and a retry arriving while the first is still processed must not run twice.
        self._origin_locks: dict[str, asyncio.Lock] = {}

    def register_edu(self, edu_type: str, handler: EduHandler) -> None:
        self.edu_handlers[edu_type] = handler

    async def on_transaction(self, origin: str, txn_id: str, body: Mapping[str, Any]) -> JsonDict:
        pdus = body.get("pdus", [])
        edus = body.get("edus", [])
        if not isinstance(pdus, list) or not isinstance(edus, list):
            raise MatrixError("pdus and edus must be lists", Codes.BAD_JSON)
        if len(pdus) > MAX_PDUS or len(edus) > MAX_EDUS:
            raise MatrixError(
                f"A transaction holds at most {MAX_PDUS} PDUs and {MAX_EDUS} EDUs",
                Codes.TOO_LARGE,
                status=400,
            )
        lock = self._origin_locks.setdefault(origin, asyncio.Lock())
        async with lock:
            done = await self.storage.federation_txns.get_response(origin, txn_id)
            if done is not None:
                return done
            response = {"pdus": await self._pdus(origin, pdus)}
            await self._edus(origin, edus)
            now = self.clock.time_ms()
            await self.storage.federation_txns.set_response(origin, txn_id, response, now)
        if not lock.locked():
            self._origin_locks.pop(origin, None)
        if now - self._last_cleanup > CLEANUP_EVERY_MS:
            self._last_cleanup = now
            await self.storage.federation_txns.forget_before(now - KEEP_ANSWERS_MS)
        return response

    # -- PDUs ----------------------------------------------------------------------------------

    async def _pdus(self, origin: str, pdus: Sequence[Any]) -> dict[str, JsonDict]:
        results: dict[str, JsonDict] = {}
        by_room: dict[str, list[Event]] = {}
        for pdu in pdus:
            event, error = await self._parse(pdu)
            if event is None:
                logger.info("origin=%s unusable PDU: %s", origin, error)
                continue  # no event ID to report a result under
            if error is not None:
                results[event.event_id] = {"error": error}
            else:
                by_room.setdefault(event.room_id, []).append(event)
        failed = await self.signatures.failures([e for es in by_room.values() for e in es])
        for event_id, reason in failed.items():
            results[event_id] = {"error": f"Signature check failed: {reason}"}

        async def room(events: list[Event]) -> None:
            if not await is_server_allowed(self.storage, events[0].room_id, origin):
                for event in events:
                    results[event.event_id] = {"error": "The room's server ACL denies you"}
                return
            # In the order of the DAG, so an event's parents from the same transaction
            # are stored before it.
            for event in sorted(events, key=lambda e: e.depth):
                if event.event_id not in failed:
                    results[event.event_id] = await self._persist(origin, event)

        await asyncio.gather(*(room(events) for events in by_room.values()))
        return results

    async def _parse(self, pdu: Any) -> tuple[Event | None, str | None]:
        """The event of a PDU (step 1), or why it cannot be used."""
        if not isinstance(pdu, dict) or not isinstance(pdu.get("room_id"), str):
            return None, "not a PDU"
        room_version = await self.storage.rooms.get_room_version(pdu["room_id"])
        if room_version is None:
            return None, f"unknown room {pdu['room_id'][:100]}"
        # `unsigned` is covered by neither hashes nor signatures: any server on the way may
        # have written in it, so nothing in it is kept but the age.
        unsigned = pdu.get("unsigned")
        age = unsigned.get("age") if isinstance(unsigned, dict) else None
        pdu = {k: v for k, v in pdu.items() if k != "unsigned"}
        if isinstance(age, int) and not isinstance(age, bool):
            pdu["unsigned"] = {"age": age}
        try:
            event = Event(pdu, room_version)
        except (ValueError, TypeError, KeyError) as e:
            return None, f"malformed PDU: {e}"
        try:
            validate_pdu(room_version, pdu)
        except MatrixError as e:
            return event, e.message
        return event, None

    async def _persist(self, origin: str, event: Event) -> JsonDict:
        try:
            state_before = None
            have = await self.storage.events.have_events(event.prev_event_ids)
            if set(event.prev_event_ids) - set(have):
                if self.prev_events is None:
                    return {"error": "prev_events are missing and cannot be fetched yet"}
                state_before = await self.prev_events.fill_gap(origin, event)
            await self.remote_events.persist_event(event, state_before)
            if await self.storage.events.get_rejected_event_ids([event.event_id]):
                return {"error": "The event failed the authorization rules"}
        except MatrixError as e:
            return {"error": e.message}
        except Exception:
            logger.exception("origin=%s event_id=%s failed", origin, event.event_id)
            return {"error": "internal error"}
        return {}

    # -- EDUs ----------------------------------------------------------------------------------

    async def _edus(self, origin: str, edus: Sequence[Any]) -> None:
        for edu in edus:
            if not isinstance(edu, dict):
                continue
            handler = self.edu_handlers.get(str(edu.get("edu_type")))
            if handler is None:
                continue
            try:
                await handler(origin, edu.get("content"))
            except MatrixError as e:
                logger.info("origin=%s edu_type=%s refused: %s", origin, edu["edu_type"], e)
            except Exception:
                logger.exception("origin=%s edu_type=%s failed", origin, edu["edu_type"])
