"""The in-process notifier: wakes waiting /sync requests when the stream position moves.

It carries positions, never data. A listener subscribes (to its user and the rooms it is in)
before it reads the store, so an event persisted between the read and the wait still wakes it.
Only listeners of the event's room or of a named user are woken; others keep sleeping.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Iterable

from homeserver.notifier.changes import StreamChangeCache


class Listener:
    def __init__(self, notifier: LocalNotifier, user_id: str, room_ids: frozenset[str]) -> None:
        self._notifier = notifier
        self.user_id = user_id
        self.room_ids = room_ids
        self._event = asyncio.Event()
        self.position = notifier.position

    def _wake(self, position: int) -> None:
        self.position = max(self.position, position)
        self._event.set()

    async def wait(self, timeout_s: float) -> bool:
        """True if woken by something relevant within `timeout_s`."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout_s)
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self._notifier._remove(self)

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class LocalNotifier:
    def __init__(self, position: int = 0) -> None:
        # Every event at or before `position` has been announced.
        self.position = position
        self._by_user: dict[str, set[Listener]] = defaultdict(set)
        self._by_room: dict[str, set[Listener]] = defaultdict(set)
        self._room_changes = StreamChangeCache(position)
        self._membership_changes = StreamChangeCache(position)
        # By room: the last current-state change, and the last one of a member.
        self._state_changes = StreamChangeCache(position)
        self._member_state_changes = StreamChangeCache(position)
        self._position_watchers: list[Callable[[int], None]] = []
        self._watched = position

    def advance(self, position: int) -> None:
        """Every event at or before `position` has been announced (some needed no wake-up)."""
        self.position = max(self.position, position)
        if self.position > self._watched:
            self._watched = self.position
            for watcher in self._position_watchers:
                watcher(self.position)

    def watch_position(self, watcher: Callable[[int], None]) -> None:
        """Call `watcher` with the position whenever it moves (the federation sender
        follows the whole event stream, not one user's rooms)."""
        self._position_watchers.append(watcher)

    def rooms_changed(self, room_ids: Iterable[str], since: int, upto: int) -> set[str] | None:
        """Those of `room_ids` with an event in (since, upto] (all of them when `since` is older
        than the notifier remembers); None when `upto` has not been announced yet."""
        if upto > self.position:
            return None
        return self._room_changes.changed_entities(room_ids, since)

    def state_changes(
        self, room_ids: Iterable[str], since: int, upto: int
    ) -> dict[str, bool] | None:
        """room_id -> whether a member changed, for those of `room_ids` whose current state may
        have changed in (since, upto]; None when `upto` has not been announced yet."""
        if upto > self.position:
            return None
        changed = self._state_changes.changed_entities(room_ids, since)
        members = self._member_state_changes.changed_entities(changed, since)
        return {room_id: room_id in members for room_id in changed}

    def membership_changed(self, user_id: str, since: int, upto: int) -> bool:
        """Whether the user's membership of any room may have changed in (since, upto]."""
        return upto > self.position or self._membership_changes.changed_since(user_id, since)

    def listen(self, user_id: str, room_ids: Iterable[str]) -> Listener:
        listener = Listener(self, user_id, frozenset(room_ids))
        self._by_user[user_id].add(listener)
        for room_id in listener.room_ids:
            self._by_room[room_id].add(listener)
        return listener

    def _remove(self, listener: Listener) -> None:
        _discard(self._by_user, listener.user_id, listener)
        for room_id in listener.room_ids:
            _discard(self._by_room, room_id, listener)

    def on_new_event(
        self,
        room_id: str,
        position: int,
        users: Iterable[str] = (),
        state_changed: bool = False,
    ) -> None:
        """An event at `position` in `room_id`; `users` are those whose membership of the room
        may have changed with it, woken even if not listening to the room (the target of an
        invite or a join, whose room set has just changed); `state_changed` when the room's
        current state may have changed."""
        self.position = max(self.position, position)
        self._room_changes.record(room_id, position)
        if state_changed:
            self._state_changes.record(room_id, position)
        woken = set(self._by_room.get(room_id, ()))
        for user_id in users:
            self._membership_changes.record(user_id, position)
            self._member_state_changes.record(room_id, position)
            woken.update(self._by_user.get(user_id, ()))
        for listener in woken:
            listener._wake(position)

    def on_new_data(self, room_ids: Iterable[str] = (), users: Iterable[str] = ()) -> None:
        """Wake the listeners of `room_ids` and of `users` for data outside the event stream
        (typing, receipts, presence, account data): those streams have positions of their own
        in the sync token, so the event position does not move."""
        woken: set[Listener] = set()
        for room_id in room_ids:
            woken.update(self._by_room.get(room_id, ()))
        for user_id in users:
            woken.update(self._by_user.get(user_id, ()))
        for listener in woken:
            listener._wake(listener.position)


def _discard(index: dict[str, set[Listener]], key: str, listener: Listener) -> None:
    listeners = index.get(key)
    if listeners is not None:
        listeners.discard(listener)
        if not listeners:
            del index[key]
