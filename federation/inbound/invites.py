"""InviteHandler: PUT /_matrix/federation/v2/invite/{roomId}/{eventId} (S-S API "Inviting to
a room"): another server invites one of our users. The invite is checked, countersigned and,
when this server is not in the room, kept with the stripped state the inviter sent, so the
user's /sync shows it."""

from __future__ import annotations

import logging
from typing import Any

from homeserver.core import Core
from homeserver.crypto.event_signatures import EventSignatureChecker
from homeserver.crypto.signing import countersign_event
from homeserver.errors import Codes, Forbidden, MatrixError, NotFound
from homeserver.events.event import MEMBER, Event
from homeserver.events.room_versions import KNOWN_ROOM_VERSIONS
from homeserver.events.validation import validate_pdu
from homeserver.identifiers import domain_of

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]


class InviteHandler:
    def __init__(self, core: Core, signatures: EventSignatureChecker) -> None:
        self.core = core
        self.signatures = signatures
        self.server_name = core.server.server_name

    async def on_invite(self, origin: str, room_id: str, event_id: str, body: Any) -> JsonDict:
        if not isinstance(body, dict) or not isinstance(body.get("event"), dict):
            raise MatrixError("An invite needs the event", Codes.BAD_JSON)
        room_version = KNOWN_ROOM_VERSIONS.get(str(body.get("room_version")))
        if room_version is None:
            raise MatrixError(
                "This server does not support the room's version",
                Codes.INCOMPATIBLE_ROOM_VERSION,
                status=400,
                room_version=str(body.get("room_version")),
            )
        pdu = {k: v for k, v in body["event"].items() if k != "unsigned"}
        validate_pdu(room_version, pdu)
        event = Event(pdu, room_version)
        target = event.state_key
        if (
            event.event_id != event_id
            or event.room_id != room_id
            or event.type != MEMBER
            or event.membership != "invite"
            or target is None
            or domain_of(event.sender) != origin
        ):
            raise MatrixError("Not an invite from the origin's user to this room", Codes.BAD_JSON)
        if domain_of(target) != self.server_name:
            raise Forbidden("The invitee is not a user of this server")
        profile = await self.core.storage.user_data.get_profile(target)
        if profile is None or profile.deactivated:
            raise NotFound(f"Unknown user {target}")
        failed = await self.signatures.failures([event])
        if failed:
            raise Forbidden(f"Signature check failed: {failed[event.event_id]}")
        signed = countersign_event(
            room_version, pdu, self.server_name, self.core.server.keys.signing_key
        )
        storage = self.core.storage
        in_room = await storage.rooms.is_server_in_room(room_id, self.server_name)
        if not in_room and not await storage.events.have_events([event_id]):
            # What the inviter says about the room is all we know of it: shown to the
            # invitee as the invite's stripped state (C-S API "Stripped state").
            stripped = body.get("invite_room_state", [])
            kept = dict(signed)
            kept["unsigned"] = {
                "invite_room_state": [s for s in stripped if isinstance(s, dict)][:50]
                if isinstance(stripped, list)
                else []
            }
            await self.core.persister.persist_out_of_band_membership(Event(kept, room_version))
            logger.info("origin=%s invited user_id=%s room_id=%s", origin, target, room_id)
        # In the room already, the invite arrives like any event, through /send.
        return {"event": signed}
