"""PusherPool: one worker per pusher (C-S API "Pushers"), each delivering its user's
notifications in order from a position stored with the pusher.

Durable by construction: the notification rows are written in the transaction that stores
their event, and a worker moves its pusher's stored position past a row only once the row
was delivered (or skipped: read meanwhile, or undeliverable for a day). After a restart every
worker resumes right after its position, so nothing is lost and, short of a crash between a
delivery and the position write, nothing is sent twice. A wake-up is only a hint that rows
may be waiting; the rows themselves are always read back from the database.
"""

from __future__ import annotations

import asyncio
import logging
import random
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Collection

from homeserver.clock import Clock
from homeserver.storage.stores.push import Pusher, PushStore

logger = logging.getLogger(__name__)

# Retries of a failing delivery back off from a second to an hour; a notification that
# could not be delivered for a day is skipped so the ones after it still go out.
INITIAL_BACKOFF_S = 1.0
MAX_BACKOFF_S = 3600.0
GIVE_UP_AFTER_MS = 24 * 3600 * 1000
# How long a worker whose process() raised (a database hiccup) waits before trying again.
ERROR_RETRY_S = 30.0

PusherKey = tuple[str, str, str]  # (user_id, app_id, pushkey)


def key_of(pusher: Pusher) -> PusherKey:
    return (pusher.user_id, pusher.app_id, pusher.pushkey)


class PusherWorker(ABC):
    """Runs `process` when woken and when the delay it asked for has passed."""

    def __init__(self, pusher: Pusher, store: PushStore, clock: Clock) -> None:
        self.pusher = pusher
        self.store = store
        self.clock = clock
        self.position = pusher.last_stream_ordering
        self.failing_since = pusher.failing_since
        self.gone = False
        self._attempts = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @abstractmethod
    async def process(self) -> float | None:
        """Handle whatever is due; return the seconds until it should run again without
        being woken (0: at once, there is more), or None to wait for a wake-up."""

    def wake(self) -> None:
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                # The pusher may have gone meanwhile (deleted by its user, by the logout of
                # its device, by another process): nothing more is sent for it.
                if not await self.store.pusher_exists(self.pusher):
                    self.gone = True
                    return
                delay = await self.process()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("pusher %s/%s failed", self.pusher.user_id, self.pusher.app_id)
                delay = ERROR_RETRY_S
            if delay is None:
                await self._wake.wait()
            elif delay > 0:
                await asyncio.sleep(delay)

    # -- helpers for subclasses ------------------------------------------------------------

    async def delivered(self, up_to: int) -> None:
        """Rows up to stream position `up_to` were delivered or deliberately skipped."""
        self.position = max(self.position, up_to)
        self.failing_since = None
        self._attempts = 0
        await self.store.set_pusher_position(self.pusher, self.position, None)

    async def failed(self, row_position: int) -> float:
        """Delivery of the row at `row_position` failed: the seconds to wait before the next
        attempt, or 0 once it has failed for too long and was skipped."""
        now = self.clock.time_ms()
        if self.failing_since is None:
            self.failing_since = now
            await self.store.set_pusher_position(self.pusher, self.position, now)
        elif now - self.failing_since >= GIVE_UP_AFTER_MS:
            logger.warning(
                "pusher %s/%s: giving up on a notification after a day of failures",
                self.pusher.user_id,
                self.pusher.app_id,
            )
            await self.delivered(row_position)
            return 0
        self._attempts += 1
        backoff = min(INITIAL_BACKOFF_S * 2.0 ** (self._attempts - 1), MAX_BACKOFF_S)
        return backoff * random.uniform(0.8, 1.2)


WorkerFactory = Callable[[Pusher], PusherWorker]


class PusherPool:
    """The workers of every pusher this server holds, by kind ("http", "email")."""

    def __init__(self, store: PushStore) -> None:
        self.store = store
        self._factories: dict[str, WorkerFactory] = {}
        self._workers: dict[PusherKey, PusherWorker] = {}
        self._by_user: dict[str, set[PusherKey]] = {}
        self._closers: list[Callable[[], Awaitable[None]]] = []

    def add_kind(
        self,
        kind: str,
        factory: WorkerFactory,
        close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Workers of `kind` come from `factory`; `close` releases what they share (a
        client session) when the pool closes."""
        self._factories[kind] = factory
        if close is not None:
            self._closers.append(close)

    @property
    def kinds(self) -> Collection[str]:
        return self._factories.keys()

    async def start(self) -> None:
        """Start a worker for every stored pusher; each first delivers what it missed while
        the server was down."""
        for pusher in await self.store.get_all_pushers():
            self._add(pusher)

    def on_notified(self, user_ids: Collection[str]) -> None:
        """New notification rows for these users have committed."""
        for user_id in self._by_user.keys() & user_ids:
            for key in list(self._by_user[user_id]):
                worker = self._workers[key]
                if worker.gone:
                    self._forget(key)
                else:
                    worker.wake()

    async def pusher_set(self, pusher: Pusher) -> None:
        """A pusher was created or changed: (re)start its worker from what is stored."""
        await self.pusher_removed(pusher.user_id, pusher.app_id, pusher.pushkey)
        for stored in await self.store.get_pushers([pusher.user_id]):
            if key_of(stored) == key_of(pusher):
                self._add(stored)

    async def pusher_removed(self, user_id: str, app_id: str, pushkey: str) -> None:
        worker = self._forget((user_id, app_id, pushkey))
        if worker is not None:
            await worker.stop()

    def _forget(self, key: PusherKey) -> PusherWorker | None:
        worker = self._workers.pop(key, None)
        if worker is not None:
            self._by_user[key[0]].discard(key)
            if not self._by_user[key[0]]:
                del self._by_user[key[0]]
        return worker

    def _add(self, pusher: Pusher) -> None:
        factory = self._factories.get(pusher.kind)
        if factory is None:
            # An email pusher kept from when SMTP was configured, say: it waits, unused.
            logger.warning("pusher kind %r is not configured: not started", pusher.kind)
            return
        worker = self._workers[key_of(pusher)] = factory(pusher)
        self._by_user.setdefault(pusher.user_id, set()).add(key_of(pusher))
        worker.wake()

    async def close(self) -> None:
        for worker in list(self._workers.values()):
            await worker.stop()
        self._workers.clear()
        self._by_user.clear()
        for close in self._closers:
            await close()
