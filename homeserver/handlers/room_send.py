"""Events a client sends into a room (C-S API "Sending events to a room", "Redactions"):
idempotent per (user, device, transaction ID) (C-S API "Transaction identifiers"), state events
that repeat the current state are not sent again, and the checks the auth rules leave to the
client API (redaction permission, m.room.canonical_alias pointing at the room)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import Any

from homeserver.clock import Clock
from homeserver.errors import Forbidden, InvalidParam, NotFound
from homeserver.events.event import MEMBER, REDACTION
from homeserver.handlers.auth import Requester
from homeserver.handlers.directory import CANONICAL_ALIAS, DirectoryHandler
from homeserver.handlers.message import EventCreationHandler
from homeserver.handlers.moderation import SpamLimits
from homeserver.handlers.persistence import RoomLinearizer
from homeserver.handlers.relations import annotation_lock_key, check_new_relation
from homeserver.handlers.room_member import RoomMemberHandler, current_power_levels
from homeserver.storage import Storage
from homeserver.storage.stores.room_extras import RoomExtrasStore


class RoomSendHandler:
    def __init__(
        self,
        storage: Storage,
        extras: RoomExtrasStore,
        events: EventCreationHandler,
        members: RoomMemberHandler,
        directory: DirectoryHandler,
        clock: Clock,
    ) -> None:
        self.storage = storage
        self.extras = extras
        self.events = events
        self.members = members
        self.directory = directory
        self.clock = clock
        # One request per transaction ID at a time: a retry that arrives while the first is
        # still being persisted waits for it, then finds its event ID.
        self._txn_locks = RoomLinearizer()
        # limits.spam when enabled, set by the composition root.
        self.spam_limits: SpamLimits | None = None
        # One of identical annotations at a time, from the duplicate check until it commits,
        # so a concurrent twin's check sees it. This process is the only one writing events
        # (storage/README.md), so a lock in memory is enough.
        self._annotation_locks = RoomLinearizer()

    async def _once(
        self,
        requester: Requester,
        scope: str,
        txn_id: str,
        room_id: str,
        send: Callable[[], Awaitable[str]],
    ) -> str:
        """Run `send` once per (user, device, scope, txn_id), where `scope` names the endpoint
        path; later calls return its event ID.

        The mapping is written just after the event commits (the persister owns the event's
        transaction), so only a crash between the two can let a retry send a second event.
        """
        user, device = requester.user_id, requester.device_id
        async with self._txn_locks.lock(f"{user}\x00{device}\x00{scope}\x00{txn_id}"):
            known = await self.extras.get_txn_event(user, device, scope, txn_id)
            if known is not None:
                return known
            event_id = await send()
            await self.extras.add_txn_event(
                user, device, scope, txn_id, event_id, room_id, self.clock.time_ms()
            )
            return event_id

    async def send_message(
        self,
        requester: Requester,
        room_id: str,
        event_type: str,
        content: Mapping[str, Any],
        txn_id: str,
    ) -> str:
        async def send() -> str:
            if event_type == REDACTION:
                redacts = content.get("redacts")
                if not isinstance(redacts, str):
                    raise InvalidParam("m.room.redaction needs content.redacts")
                return await self._redact(requester, room_id, redacts, content)
            if self.spam_limits is not None:
                self.spam_limits.check_message(content)
            sender = requester.user_id
            async with self._annotation_lock(sender, event_type, content):
                await check_new_relation(self.storage, room_id, sender, event_type, content)
                persisted = await self.events.send_event(room_id, event_type, sender, content)
            return persisted.event.event_id

        return await self._once(requester, f"{room_id}/send/{event_type}", txn_id, room_id, send)

    def _annotation_lock(
        self, sender: str, event_type: str, content: Mapping[str, Any]
    ) -> AbstractAsyncContextManager[None]:
        key = annotation_lock_key(sender, event_type, content)
        return nullcontext() if key is None else self._annotation_locks.lock(key)

    async def redact(
        self,
        requester: Requester,
        room_id: str,
        event_id: str,
        content: Mapping[str, Any],
        txn_id: str,
    ) -> str:
        async def send() -> str:
            return await self._redact(requester, room_id, event_id, content)

        return await self._once(requester, f"{room_id}/redact/{event_id}", txn_id, room_id, send)

    async def _redact(
        self, requester: Requester, room_id: str, target_id: str, content: Mapping[str, Any]
    ) -> str:
        """From room v3 the auth rules accept any redaction and servers decide when serving
        whether it applies; refuse here one that never would, as other servers do: a user may
        redact their own events, others' only with the redact level."""
        target = await self.storage.events.get_event(target_id)
        if target is not None and target.room_id != room_id:
            raise InvalidParam("Cannot redact an event from a different room")
        if target is None or target.sender != requester.user_id:
            levels = await current_power_levels(self.storage, room_id)
            if levels is None:
                raise NotFound(f"Unknown room {room_id}")
            if levels.user_level(requester.user_id) < levels.named_level("redact"):
                raise Forbidden("You don't have permission to redact events")
        body = {k: v for k, v in content.items() if k != "redacts"}
        persisted = await self.events.send_event(
            room_id, REDACTION, requester.user_id, body, redacts=target_id
        )
        return persisted.event.event_id

    async def send_state(
        self,
        requester: Requester,
        room_id: str,
        event_type: str,
        state_key: str,
        content: Mapping[str, Any],
    ) -> str:
        """Set a piece of state; returns the current event's ID when it already holds exactly
        this content from this sender (as Synapse, so a retried PUT sends nothing new)."""
        if event_type == CANONICAL_ALIAS:
            await self.directory.check_canonical_alias(room_id, content)
        if event_type == MEMBER and content.get("membership") == "join":
            # A join through the state API still carries the user's profile.
            if state_key == requester.user_id:
                extra = {k: v for k, v in content.items() if k != "membership"}
                return await self.members.update_membership(
                    requester.user_id, room_id, state_key, "join", extra_content=extra
                )
        current_id = await self.storage.rooms.get_current_state_event_id(
            room_id, event_type, state_key
        )
        if current_id is not None:
            current = await self.storage.events.get_event(current_id)
            if (
                current is not None
                and current.sender == requester.user_id
                and dict(current.content) == dict(content)
            ):
                return current_id
        persisted = await self.events.send_event(
            room_id, event_type, requester.user_id, content, state_key=state_key
        )
        return persisted.event.event_id
