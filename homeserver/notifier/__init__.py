"""Wakes waiting requests when the stream moves; see README.md."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol


class Notifier(Protocol):
    """What writers (of events, and of the other sync streams' data) need of a notifier: the
    in-process `LocalNotifier` today, a Redis one feeding every process's local notifier when
    the server runs as several."""

    def on_new_event(
        self,
        room_id: str,
        position: int,
        users: Iterable[str] = (),
        state_changed: bool = False,
    ) -> None: ...

    def advance(self, position: int) -> None: ...

    def on_new_data(self, room_ids: Iterable[str] = (), users: Iterable[str] = ()) -> None: ...
