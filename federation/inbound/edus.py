"""The EDUs other servers send (S-S API "Typing Notifications", "Presence", "Receipts",
"Send-to-device messaging", "Device Management"), handed to the domain handlers.

A server speaks only for its own users: an EDU about another server's user is refused.
Typing and receipts also need the user to be joined to the room (the handlers check it).
"""

from __future__ import annotations

from typing import Any

from federation.inbound.acl import require_server_allowed
from federation.inbound.transactions import TransactionHandler
from homeserver.core import Core
from homeserver.errors import Codes, Forbidden, MatrixError
from homeserver.handlers.receipts import READ
from homeserver.identifiers import domain_of, is_valid_user_id


def _own_user(origin: str, user_id: Any) -> str:
    if not isinstance(user_id, str) or not is_valid_user_id(user_id):
        raise MatrixError("Invalid user ID", Codes.INVALID_PARAM)
    if domain_of(user_id) != origin:
        raise Forbidden(f"{origin} cannot speak for {user_id}")
    return user_id


def _object(content: Any) -> dict[str, Any]:
    if not isinstance(content, dict):
        raise MatrixError("EDU content must be an object", Codes.BAD_JSON)
    return content


class InboundEdus:
    def __init__(self, core: Core) -> None:
        self.core = core

    def register(self, transactions: TransactionHandler) -> None:
        transactions.register_edu("m.typing", self.typing)
        transactions.register_edu("m.receipt", self.receipt)
        transactions.register_edu("m.presence", self.presence)
        transactions.register_edu("m.direct_to_device", self.direct_to_device)
        transactions.register_edu("m.device_list_update", self.device_list_update)
        transactions.register_edu("m.signing_key_update", self.device_list_update)

    async def typing(self, origin: str, content: Any) -> None:
        content = _object(content)
        user_id = _own_user(origin, content.get("user_id"))
        room_id, typing = content.get("room_id"), content.get("typing")
        if not isinstance(room_id, str) or not isinstance(typing, bool):
            raise MatrixError("m.typing needs room_id and typing", Codes.BAD_JSON)
        await require_server_allowed(self.core.storage, room_id, origin)
        # No timeout travels with it: it lapses after the default, like a local one.
        await self.core.typing.set_typing(user_id, room_id, typing, None)

    async def receipt(self, origin: str, content: Any) -> None:
        for room_id, by_type in _object(content).items():
            if not isinstance(by_type, dict):
                continue
            await require_server_allowed(self.core.storage, room_id, origin)
            # Only public read receipts travel (private ones never leave their server).
            for user_id, receipt in _object(by_type.get(READ, {})).items():
                user_id = _own_user(origin, user_id)
                receipt = _object(receipt)
                event_ids = receipt.get("event_ids")
                if not isinstance(event_ids, list) or not event_ids:
                    raise MatrixError("A receipt needs event_ids", Codes.BAD_JSON)
                thread_id = _object(receipt.get("data", {})).get("thread_id")
                await self.core.receipts.send_receipt(
                    user_id,
                    room_id,
                    READ,
                    str(event_ids[-1]),
                    thread_id if isinstance(thread_id, str) and thread_id else None,
                )

    async def presence(self, origin: str, content: Any) -> None:
        push = _object(content).get("push")
        if not isinstance(push, list):
            raise MatrixError("m.presence needs push", Codes.BAD_JSON)
        for update in push:
            update = _object(update)
            user_id = _own_user(origin, update.get("user_id"))
            state = update.get("presence")
            ago = update.get("last_active_ago", 0)
            status_msg = update.get("status_msg")
            if not isinstance(state, str) or not isinstance(ago, int):
                raise MatrixError("Invalid presence update", Codes.BAD_JSON)
            await self.core.presence.set_remote_presence(
                user_id, state, status_msg if isinstance(status_msg, str) else None, ago
            )

    async def direct_to_device(self, origin: str, content: Any) -> None:
        content = _object(content)
        sender = _own_user(origin, content.get("sender"))
        event_type = content.get("type")
        if not isinstance(event_type, str):
            raise MatrixError("m.direct_to_device needs a type", Codes.BAD_JSON)
        await self.core.to_device.receive_remote(origin, sender, event_type, content)

    async def device_list_update(self, origin: str, content: Any) -> None:
        user_id = _own_user(origin, _object(content).get("user_id"))
        await self.core.device_lists.remote_user_changed(user_id)
