"""Stream position allocation such that a reader never sees a position before every lower one
has committed, nor a position that never committed.

Positions are handed out in order, but transactions may commit out of order on PostgreSQL;
`current` advances only past positions whose transactions have finished, so a /sync token
never skips an event that commits later with a lower position. One process allocates a given
stream (the event persister, see `Database.lock_single_writer`); other processes learn
positions through the notifier.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Iterator
from contextlib import contextmanager

from homeserver.storage.database import Database


class StreamIdGenerator:
    """Allocates positions `current + step`, `current + 2 * step`, ...; `current` is the
    furthest committed position with no position before it still in flight.

    A failed position (its block raised) is a gap: `current` does not stop at it, since it
    never committed. After a restart the generator is seeded from the highest stored position,
    which may be lower than a failed one and so hands that failed position out again. That is
    safe only because `current` never named a failed position: no token can point past the
    highest committed one, so no client can hold a token that the reused position falls under.
    """

    def __init__(self, current: int, step: int = 1) -> None:
        # step -1 serves the backfill/outlier stream, which grows downwards from 0.
        if step not in (1, -1) or current * step < 0:
            raise ValueError(f"a stream with step {step} cannot start at {current}")
        self._step = step
        self._last_allocated = current
        self._current = current
        # Positions are kept as position * step (= |position|), so both directions pop in order.
        self._in_flight: list[int] = []
        self._finished: dict[int, bool] = {}  # position * step -> committed

    @property
    def current(self) -> int:
        return self._current

    @contextmanager
    def allocate(self, n: int = 1) -> Iterator[list[int]]:
        """Allocate `n` positions for one transaction, run inside the block.

        Leaving the block normally means the positions committed; leaving it with an exception
        (including a cancellation) means they did not, and they become a gap."""
        ids = [self._last_allocated + self._step * (i + 1) for i in range(n)]
        if ids:
            self._last_allocated = ids[-1]
        for i in ids:
            heapq.heappush(self._in_flight, i * self._step)
        committed = False
        try:
            yield ids
            committed = True
        finally:
            self._finish(ids, committed)

    def _finish(self, ids: list[int], committed: bool) -> None:
        for i in ids:
            self._finished[i * self._step] = committed
        while self._in_flight and self._in_flight[0] in self._finished:
            done = heapq.heappop(self._in_flight)
            if self._finished.pop(done):
                self._current = done * self._step


class LazyStream:
    """A stream position generator seeded, on first use, by `seed_sql` (the highest position
    stored). Storage seeds the event streams at start-up; the smaller streams (account data,
    receipts, presence, to-device, device lists) load lazily so that their stores need no
    change to the Storage facade."""

    def __init__(self, db: Database, seed_sql: str) -> None:
        self._db = db
        self._seed_sql = seed_sql
        self._gen: StreamIdGenerator | None = None
        self._lock = asyncio.Lock()

    async def generator(self) -> StreamIdGenerator:
        if self._gen is None:
            async with self._lock:
                if self._gen is None:
                    top = await self._db.fetchval(self._seed_sql)
                    self._gen = StreamIdGenerator(top or 0)
        return self._gen

    async def current(self) -> int:
        return (await self.generator()).current
