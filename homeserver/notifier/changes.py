"""Which rooms and users changed after a stream position, kept in memory from what the notifier
is told, so that /sync can skip the reads for everything that did not.

A long-polling client syncs again right after every response, so most syncs ask "anything
since the position I just saw?" about rooms where nothing happened. Without this each of those
questions is a database read per sync; with it, only the rooms that changed are read.
"""

from __future__ import annotations

from collections.abc import Iterable


class StreamChangeCache:
    """The last position at which each entity (a room ID, a user ID) changed.

    Only changes after `earliest` are known: the cache starts empty at the stream position of
    the process's start, and forgets its oldest entries beyond `max_entries` by raising
    `earliest` past them. A question about an earlier position answers "changed" (the caller
    reads the database), never a wrong "unchanged"."""

    def __init__(self, position: int, max_entries: int = 100_000) -> None:
        self.earliest = position
        self._max_entries = max_entries
        self._last: dict[str, int] = {}

    def record(self, entity: str, position: int) -> None:
        if position > self._last.get(entity, self.earliest):
            self._last[entity] = position
        if len(self._last) > self._max_entries:
            self._forget_oldest()

    def changed_since(self, entity: str, position: int) -> bool:
        return position < self.earliest or self._last.get(entity, self.earliest) > position

    def changed_entities(self, entities: Iterable[str], position: int) -> set[str]:
        """Those of `entities` changed after `position` (all of them if it is too old)."""
        if position < self.earliest:
            return set(entities)
        last = self._last
        return {e for e in entities if last.get(e, position) > position}

    def _forget_oldest(self) -> None:
        # Halving at once keeps the cost per record constant over time.
        by_age = sorted(self._last.values())
        self.earliest = max(self.earliest, by_age[len(by_age) // 2])
        self._last = {e: p for e, p in self._last.items() if p > self.earliest}
