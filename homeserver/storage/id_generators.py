"""Stream position allocation such that a reader never sees a position before every lower one
has committed.

Positions are handed out in order, but transactions may commit out of order on PostgreSQL;
`current` advances only past positions whose transactions have finished, so a /sync token
never skips an event that commits later with a lower position. One process allocates a given
stream (the event persister); other processes learn positions through the notifier.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from contextlib import contextmanager


class StreamIdGenerator:
    def __init__(self, current: int, step: int = 1) -> None:
        # step -1 serves the backfill/outlier stream, which grows downwards from 0.
        self._step = step
        self._last_allocated = current
        self._current = current
        self._in_flight: list[int] = []  # heap of |position| still being persisted
        self._finished: set[int] = set()

    @property
    def current(self) -> int:
        return self._current

    @contextmanager
    def allocate(self, n: int = 1) -> Iterator[list[int]]:
        """Allocate `n` positions; they count as persisted when the block exits, whether it
        committed or failed (a failed position is simply a gap)."""
        ids = [self._last_allocated + self._step * (i + 1) for i in range(n)]
        if ids:
            self._last_allocated = ids[-1]
        for i in ids:
            heapq.heappush(self._in_flight, abs(i))
        try:
            yield ids
        finally:
            self._finished.update(abs(i) for i in ids)
            while self._in_flight and self._in_flight[0] in self._finished:
                done = heapq.heappop(self._in_flight)
                self._finished.discard(done)
                self._current = done * self._step
