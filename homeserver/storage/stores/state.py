"""State groups: room state stored as snapshots and bounded chains of deltas.

A message event adds no state group; a state event adds a one-entry delta on the group before
it; a resolved state is stored as a delta on one of its inputs. Chains are cut at
MAX_DELTA_DEPTH with a full snapshot, so reading a group walks at most that many rows of
`state_groups`, and a room with 10k members and 100k events stores no full copy per event.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from homeserver.events.event import StateKey
from homeserver.lru import LruCache
from homeserver.storage.database import Database, Txn

MAX_DELTA_DEPTH = 100

FrozenStateMap = Mapping[StateKey, str]
EMPTY_STATE: FrozenStateMap = MappingProxyType({})


@dataclass
class NewStateGroup:
    """A state group not yet written: its ID is reserved so events built on it can cite it
    before it commits. Written as `delta` on `prev_group`, or in full when that is None."""

    id: int
    room_id: str
    state: FrozenStateMap
    prev_group: int | None
    delta: dict[StateKey, str | None]
    delta_depth: int


class StateStore:
    def __init__(self, db: Database, cache_size: int = 256) -> None:
        self.db = db
        self._cache: LruCache[int, FrozenStateMap] = LruCache(cache_size)
        self._depths: LruCache[int, int] = LruCache(100_000)
        self._next_id: int | None = None

    async def load_next_id(self) -> None:
        self._next_id = (await self.db.fetchval("SELECT MAX(id) FROM state_groups") or 0) + 1

    async def get_state(self, group: int) -> FrozenStateMap:
        return (await self.get_states([group]))[group]

    async def get_states(self, groups: list[int]) -> dict[int, FrozenStateMap]:
        out: dict[int, FrozenStateMap] = {}
        for group in groups:
            if group in out:
                continue
            cached = self._cache.get_hit(group)
            if cached is None:
                cached = await self._load(group)
                self._cache.put(group, cached)
            out[group] = cached
        return out

    async def _load(self, group: int) -> FrozenStateMap:
        rows = await self.db.fetch(
            "WITH RECURSIVE chain(grp, hops) AS ("
            " SELECT CAST($1 AS BIGINT), 0"
            " UNION ALL SELECT g.prev_group, c.hops + 1 FROM state_groups g"
            " JOIN chain c ON g.id = c.grp WHERE g.prev_group IS NOT NULL"
            ") SELECT e.type, e.state_key, e.event_id, c.hops FROM state_group_entries e"
            " JOIN chain c ON e.state_group = c.grp ORDER BY c.hops DESC",
            group,
        )
        # Oldest first, so entries of nearer deltas overwrite older ones.
        state: dict[StateKey, str] = {}
        for type_, state_key, event_id, _hops in rows:
            if event_id is None:
                state.pop((type_, state_key), None)
            else:
                state[(type_, state_key)] = event_id
        return MappingProxyType(state)

    async def _delta_depth(self, group: int) -> int:
        depth = self._depths.get_hit(group)
        if depth is None:
            depth = int(
                await self.db.fetchval("SELECT delta_depth FROM state_groups WHERE id = $1", group)
                or 0
            )
            self._depths.put(group, depth)
        return depth

    async def new_group(
        self,
        room_id: str,
        state: FrozenStateMap,
        prev_group: int | None = None,
        delta: dict[StateKey, str | None] | None = None,
    ) -> NewStateGroup:
        """Reserve an ID for a group holding `state`, as `delta` on `prev_group` when given.

        The state is cached at once: a group is immutable, and an ID whose transaction rolls
        back is never handed out again, so nothing can read a wrong state under it.
        """
        assert self._next_id is not None, "load_next_id() was not called"
        group_id = self._next_id
        self._next_id += 1
        depth = 0
        if prev_group is not None:
            depth = await self._delta_depth(prev_group) + 1
            if depth > MAX_DELTA_DEPTH:
                prev_group, depth = None, 0
        frozen = state if isinstance(state, MappingProxyType) else MappingProxyType(dict(state))
        self._cache.put(group_id, frozen)
        self._depths.put(group_id, depth)
        return NewStateGroup(group_id, room_id, frozen, prev_group, dict(delta or {}), depth)

    async def store_groups_txn(self, txn: Txn, groups: list[NewStateGroup]) -> None:
        await txn.executemany(
            "INSERT INTO state_groups (id, room_id, prev_group, delta_depth)"
            " VALUES ($1, $2, $3, $4)",
            [(g.id, g.room_id, g.prev_group, g.delta_depth) for g in groups],
        )
        entries: list[tuple[int, str, str, str | None]] = []
        for g in groups:
            source = g.state.items() if g.prev_group is None else g.delta.items()
            entries.extend((g.id, t, k, e) for (t, k), e in source)
        await txn.executemany(
            "INSERT INTO state_group_entries (state_group, type, state_key, event_id)"
            " VALUES ($1, $2, $3, $4)",
            entries,
        )


def state_delta(
    old: Mapping[StateKey, str], new: Mapping[StateKey, str]
) -> dict[StateKey, str | None]:
    """What turns `old` into `new`: changed or added keys, and removed keys mapped to None."""
    delta: dict[StateKey, str | None] = {k: v for k, v in new.items() if old.get(k) != v}
    for k in old:
        if k not in new:
            delta[k] = None
    return delta
