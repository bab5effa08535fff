"""FederationSender: delivers local PDUs and EDUs to other servers (S-S API "Transactions").

It follows the event stream: every live local event after its stored position is queued, in
one transaction with the position, for each other server in the event's room; EDUs are
queued as they are sent. Each destination has a worker that sends its queue in order, as
transactions of at most 50 PDUs and 100 EDUs, deleting what a 200 acknowledges. A
destination that fails is retried with exponential back-off (kept in the database, so a
restart does not hammer it), and when it answers again it gets everything queued meanwhile,
in order. A restart loses nothing: the queue and the position are in the database.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any, Protocol

from homeserver.clock import Clock
from homeserver.storage.stores.federation_outbox import Backoff, FederationOutboxStore

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]
MAX_PDUS, MAX_EDUS = 50, 100  # per transaction (S-S API "Transactions")
# Events read from the stream per queueing step.
STREAM_BATCH = 500
FIRST_RETRY_MS = 10_000
MAX_RETRY_MS = 24 * 60 * 60 * 1000


class TransactionTransport(Protocol):
    """PUT /_matrix/federation/v1/send/{txnId} on `destination`; returns the response body.
    Raises PermanentFailure when resending the same transaction cannot succeed, anything
    else when it may (the destination is down, busy or broken for now)."""

    async def send_transaction(self, destination: str, txn_id: str, body: JsonDict) -> JsonDict: ...


class PermanentFailure(Exception):
    """The destination refused the transaction itself (a 4xx other than 429)."""


# pdus_for(event_ids) -> the PDUs in federation format, in the order asked, leaving out any
# no longer stored.
PduLoader = Callable[[Sequence[str]], Awaitable[list[JsonDict]]]


class FederationSender:
    def __init__(
        self,
        outbox: FederationOutboxStore,
        transport: TransactionTransport,
        pdus_for: PduLoader,
        server_name: str,
        clock: Clock,
        stream_position: Callable[[], int],
    ) -> None:
        self.outbox = outbox
        self.transport = transport
        self.pdus_for = pdus_for
        self.server_name = server_name
        self.clock = clock
        self.stream_position = stream_position
        self._new_events = asyncio.Event()
        self._follower: asyncio.Task[None] | None = None
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._rekick: set[str] = set()
        # Destinations waiting out a back-off, each with what ends the wait early.
        self._backing_off: dict[str, asyncio.Event] = {}
        # Transaction IDs must differ from every earlier transaction to the destination
        # (the receiver deduplicates by origin and ID), across restarts too.
        self._txn_prefix = f"{clock.time_ms()}"
        self._txn_counter = 0

    async def start(self) -> None:
        if await self.outbox.sender_position() is None:
            await self.outbox.start_at(self.stream_position())
        self._follower = asyncio.create_task(self._follow_stream())
        for destination in await self.outbox.destinations_with_items():
            self._kick(destination)

    async def close(self) -> None:
        tasks = [t for t in (self._follower, *self._workers.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._workers.clear()

    def on_new_events(self, _position: int = 0) -> None:
        """The event stream moved (the notifier calls this)."""
        self._new_events.set()

    async def send_edu(
        self, destinations: Collection[str], edu_type: str, content: JsonDict
    ) -> None:
        remote = {d for d in destinations if d != self.server_name}
        await self.outbox.queue_edu(remote, {"edu_type": edu_type, "content": content})
        for destination in remote:
            self._kick(destination)

    async def send_event(self, event_id: str, room_id: str, skip: Collection[str] = ()) -> None:
        """Pass an event on to every other server in the room but those in `skip`."""
        servers = await self.outbox.servers_in_room(room_id, self.server_name)
        destinations = servers - set(skip)
        await self.outbox.queue_event(destinations, event_id)
        for destination in destinations:
            self._kick(destination)

    async def retry_now(self, destination: str) -> None:
        """The destination is back (it just talked to us): forget its back-off. Costs
        nothing for destinations that are not backing off."""
        waiting = self._backing_off.pop(destination, None)
        if waiting is None:
            return
        await self.outbox.clear_backoff(destination)
        waiting.set()
        self._kick(destination)

    # -- following the event stream -------------------------------------------------------------

    async def _follow_stream(self) -> None:
        while True:
            self._new_events.clear()
            try:
                await self._queue_new_events()
            except Exception:
                logger.exception("queueing events for federation failed")
                await asyncio.sleep(1)
                self._new_events.set()
            await self._new_events.wait()

    async def _queue_new_events(self) -> None:
        position = await self.outbox.sender_position() or 0
        while position < (upto := self.stream_position()):
            position, counts = await self.outbox.queue_local_events(
                self.server_name, position, upto, STREAM_BATCH
            )
            for destination in counts:
                self._kick(destination)

    # -- one worker per destination -------------------------------------------------------------

    def _kick(self, destination: str) -> None:
        worker = self._workers.get(destination)
        if worker is None or worker.done():
            self._workers[destination] = asyncio.create_task(self._drain(destination))
        else:
            # New items while the worker sends: it looks again before it stops.
            self._rekick.add(destination)

    async def _drain(self, destination: str) -> None:
        try:
            while True:
                self._rekick.discard(destination)
                backoff = await self.outbox.get_backoff(destination)
                if backoff is not None:
                    wait_ms = backoff.retry_at_ts - self.clock.time_ms()
                    if wait_ms > 0:
                        woken = self._backing_off.setdefault(destination, asyncio.Event())
                        try:
                            await asyncio.wait_for(woken.wait(), wait_ms / 1000)
                            backoff = None  # the destination is back: a fresh start
                        except TimeoutError:
                            pass
                batch = await self.outbox.next_batch(destination, MAX_PDUS, MAX_EDUS)
                if not batch.queue_ids:
                    if destination in self._rekick:
                        continue
                    return
                if not await self._send(destination, batch.event_ids, batch.edus):
                    await self._back_off(destination, backoff)
                    continue
                await self.outbox.remove(destination, batch.queue_ids)
                self._backing_off.pop(destination, None)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("destination=%s federation worker failed", destination)

    async def _send(self, destination: str, event_ids: Sequence[str], edus: list[JsonDict]) -> bool:
        """Send one transaction; True when it is done with (acknowledged, or refused for
        good), False to retry it later."""
        self._txn_counter += 1
        txn_id = f"{self._txn_prefix}.{self._txn_counter}"
        body: JsonDict = {
            "origin": self.server_name,
            "origin_server_ts": self.clock.time_ms(),
            "pdus": await self.pdus_for(event_ids),
        }
        if edus:
            body["edus"] = edus
        try:
            response = await self.transport.send_transaction(destination, txn_id, body)
        except PermanentFailure as e:
            logger.warning(
                "destination=%s txn_id=%s transaction refused, dropped: %s", destination, txn_id, e
            )
            return True
        except Exception as e:
            logger.info("destination=%s txn_id=%s not delivered: %s", destination, txn_id, e)
            return False
        results = response.get("pdus") if isinstance(response, dict) else None
        if isinstance(results, dict):
            for event_id, result in results.items():
                if isinstance(result, dict) and result.get("error"):
                    logger.info(
                        "destination=%s event_id=%s refused: %s",
                        destination,
                        event_id,
                        str(result["error"])[:200],
                    )
        return True

    async def _back_off(self, destination: str, previous: Backoff | None) -> None:
        interval = FIRST_RETRY_MS if previous is None else previous.retry_interval_ms * 2
        interval = min(interval, MAX_RETRY_MS)
        # Jitter, so destinations that failed together do not all retry together.
        jittered = int(interval * random.uniform(0.8, 1.2))
        await self.outbox.set_backoff(
            destination, Backoff(self.clock.time_ms() + jittered, interval)
        )
