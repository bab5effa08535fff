"""Outbound EDUs: what local handlers tell other servers, queued on the FederationSender
(S-S API "Send-to-device messaging")."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from federation.sender.sender import FederationSender
from homeserver.identifiers import domain_of

JsonDict = dict[str, Any]


class OutboundToDevice:
    """The ToDeviceHandler's RemoteToDevice: one m.direct_to_device EDU per destination."""

    def __init__(self, sender: FederationSender) -> None:
        self.sender = sender

    async def send_to_device(
        self,
        sender: str,
        event_type: str,
        messages: Mapping[str, Mapping[str, JsonDict]],
    ) -> None:
        by_server: dict[str, dict[str, Mapping[str, JsonDict]]] = {}
        for user_id, by_device in messages.items():
            by_server.setdefault(domain_of(user_id), {})[user_id] = by_device
        for destination, for_server in by_server.items():
            content = {
                "sender": sender,
                "type": event_type,
                # Lets the receiver tell a resent EDU from a new one.
                "message_id": secrets.token_urlsafe(16),
                "messages": for_server,
            }
            await self.sender.send_edu([destination], "m.direct_to_device", content)

