"""Rooms for the per-user data tests (profiles, receipts, typing, presence), made through the
domain handlers, so these tests do not depend on the room endpoints."""

from __future__ import annotations

from homeserver.core import Core
from homeserver.events.event import MEMBER
from homeserver.handlers.room import RoomCreationRequest


async def make_room(core: Core, creator: str, *members: str) -> str:
    """A public room created by `creator`, which `members` have joined."""
    room_id = await core.rooms.create_room(
        RoomCreationRequest(creator=creator, preset="public_chat")
    )
    for user_id in members:
        await join(core, room_id, user_id)
    return room_id


async def join(core: Core, room_id: str, user_id: str) -> None:
    await core.events.send_event(
        room_id, MEMBER, user_id, {"membership": "join"}, state_key=user_id
    )


async def send_message(core: Core, room_id: str, sender: str, body: str = "hi") -> str:
    persisted = await core.events.send_event(
        room_id, "m.room.message", sender, {"msgtype": "m.text", "body": body}
    )
    return persisted.event.event_id


async def member_content(core: Core, room_id: str, user_id: str) -> dict[str, object]:
    event_id = await core.storage.rooms.get_current_state_event_id(room_id, MEMBER, user_id)
    assert event_id is not None
    event = await core.storage.events.get_event(event_id)
    assert event is not None
    return dict(event.content)
