"""AccountDataHandler: global and per-room account data, room tags and the ignored-user list
(C-S API "Client Config", "Room Tagging", "Ignoring Users"), with their own stream for /sync's
account_data sections."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from homeserver.errors import Codes, Forbidden, MatrixError, NotFound
from homeserver.handlers.sync import SyncSourceRequest, SyncSourceUpdates
from homeserver.notifier import Notifier
from homeserver.storage.stores.user_data import GLOBAL, UserDataStore

TAG = "m.tag"
FULLY_READ = "m.fully_read"
IGNORED_USER_LIST = "m.ignored_user_list"
DIRECT = "m.direct"
# C-S API "Client Config", Server Behaviour: types the server manages; setting them through
# the account data API is refused with 405 M_BAD_JSON (globally and per room).
SERVER_MANAGED = frozenset({FULLY_READ, "m.push_rules"})
MAX_TAG_BYTES = 255  # C-S API "Room Tagging"
MAX_TYPE_BYTES = 255


@dataclass
class AccountDataUpdates:
    """What changed for one user between two positions of the account data stream."""

    global_data: list[dict[str, Any]] = field(default_factory=list)  # [{type, content}]
    rooms: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # room -> [...]


# The content a server-managed type has for a user who never changed it.
DefaultContent = Callable[[str], Awaitable[dict[str, Any]]]


class AccountDataHandler:
    def __init__(self, user_data: UserDataStore, notifier: Notifier) -> None:
        self.user_data = user_data
        self.notifier = notifier
        # user_id -> ignored user IDs: /sync and every room read ask for it.
        self._ignored: dict[str, frozenset[str]] = {}
        self._defaults: dict[str, DefaultContent] = {}

    def add_default(self, data_type: str, content: DefaultContent) -> None:
        """Global account data every user has from the start (m.push_rules: the default
        rules), shown by GET and initial syncs until it is first stored for the user."""
        self._defaults[data_type] = content

    async def current_position(self) -> int:
        return await self.user_data.account_data_stream.current()

    async def get(self, user_id: str, room_id: str | None, data_type: str) -> dict[str, Any]:
        content = await self.user_data.get_account_data(user_id, room_id or GLOBAL, data_type)
        if content is None and room_id is None and data_type in self._defaults:
            content = await self._defaults[data_type](user_id)
        if content is None:
            raise NotFound("Account data not found")
        return content

    async def set_from_client(
        self, user_id: str, room_id: str | None, data_type: str, content: Mapping[str, Any]
    ) -> int:
        """PUT account data as a client asks: server-managed types are refused."""
        if data_type in SERVER_MANAGED:
            raise MatrixError(f"Cannot set {data_type} through this API.", Codes.BAD_JSON, 405)
        if not data_type or len(data_type.encode()) > MAX_TYPE_BYTES:
            raise MatrixError("Invalid account data type", Codes.INVALID_PARAM)
        return await self.set(user_id, room_id, data_type, content)

    async def set(
        self, user_id: str, room_id: str | None, data_type: str, content: Mapping[str, Any]
    ) -> int:
        """Store account data (including server-managed types) and wake the user's /sync."""
        new = dict(content)
        position = await self.user_data.update_account_data(
            user_id, room_id or GLOBAL, data_type, lambda _old: new
        )
        if data_type == IGNORED_USER_LIST and not room_id:
            self._ignored.pop(user_id, None)
        self.notifier.on_new_data(users=[user_id])
        return position

    # -- room tags -----------------------------------------------------------------------

    async def get_tags(self, user_id: str, room_id: str) -> dict[str, Any]:
        content = await self.user_data.get_account_data(user_id, room_id, TAG)
        tags = content.get("tags") if content else None
        return dict(tags) if isinstance(tags, dict) else {}

    async def add_tag(
        self, user_id: str, room_id: str, tag: str, tag_content: Mapping[str, Any]
    ) -> None:
        if not tag or len(tag.encode()) > MAX_TAG_BYTES:
            raise MatrixError(f"Tag names are 1 to {MAX_TAG_BYTES} bytes", Codes.INVALID_PARAM)
        order = tag_content.get("order")
        if order is not None and (not isinstance(order, int | float) or isinstance(order, bool)):
            raise MatrixError("order must be a number", Codes.INVALID_PARAM)
        await self._edit_tags(user_id, room_id, lambda tags: {**tags, tag: dict(tag_content)})

    async def remove_tag(self, user_id: str, room_id: str, tag: str) -> None:
        await self._edit_tags(
            user_id, room_id, lambda tags: {k: v for k, v in tags.items() if k != tag}
        )

    async def copy_tags(self, user_id: str, old_room: str, new_room: str) -> None:
        """The old room's tags onto the new one (tags set there already win)."""
        tags = await self.get_tags(user_id, old_room)
        if tags:
            await self._edit_tags(user_id, new_room, lambda current: {**tags, **current})

    async def _edit_tags(self, user_id: str, room_id: str, edit: Any) -> None:
        def change(old: dict[str, Any] | None) -> dict[str, Any]:
            tags = old.get("tags") if old else None
            return {"tags": edit(tags if isinstance(tags, dict) else {})}

        await self.user_data.update_account_data(user_id, room_id, TAG, change)
        self.notifier.on_new_data(users=[user_id])

    # -- reads for other handlers --------------------------------------------------------

    async def ignored_users(self, user_id: str) -> frozenset[str]:
        """Whom `user_id` ignores (C-S API "Ignoring Users"): /sync and the room endpoints
        hide their events. Cached; invalidated when the list is set."""
        cached = self._ignored.get(user_id)
        if cached is None:
            content = await self.user_data.get_account_data(user_id, GLOBAL, IGNORED_USER_LIST)
            ignored = content.get("ignored_users") if content else None
            cached = frozenset(ignored) if isinstance(ignored, dict) else frozenset()
            self._ignored[user_id] = cached
        return cached

    async def get_updates(self, request: SyncSourceRequest) -> SyncSourceUpdates:
        """The sync source of the account_data slot: the top-level account_data section and
        each joined room's account_data."""
        changes = AccountDataUpdates()
        if request.from_token.account_data < request.to_token.account_data:
            changes = await self.changes(
                request.user_id,
                request.room_ids,
                request.from_token.account_data,
                request.to_token.account_data,
            )
        if request.initial:
            stored = {event["type"] for event in changes.global_data}
            for data_type, default in self._defaults.items():
                if data_type not in stored:
                    content = await default(request.user_id)
                    changes.global_data.append({"type": data_type, "content": content})
        return SyncSourceUpdates(account_data=changes.global_data, room_account_data=changes.rooms)

    async def changes(
        self,
        user_id: str,
        room_ids: Collection[str] | None,
        from_pos: int,
        to_pos: int,
    ) -> AccountDataUpdates:
        """Account data changed in (from_pos, to_pos] as /sync shows it: `{type, content}`
        events, global and per room (from_pos 0: everything). Room data is kept only for
        `room_ids` when given (the rooms the sync response includes)."""
        updates = AccountDataUpdates()
        for row in await self.user_data.get_account_data_changes(user_id, from_pos, to_pos):
            event = {"type": row.type, "content": row.content}
            if row.room_id == GLOBAL:
                updates.global_data.append(event)
            elif room_ids is None or row.room_id in room_ids:
                updates.rooms.setdefault(row.room_id, []).append(event)
        return updates


def check_own(requester_id: str, user_id: str) -> None:
    """Account data is private: only its owner may read or write it (403 M_FORBIDDEN)."""
    if requester_id != user_id:
        raise Forbidden("Cannot access account data of other users.")
