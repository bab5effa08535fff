"""RemoteInviter: inviting another server's user (S-S API "Inviting to a room"): the invite
is built and checked here, countersigned by the invitee's server (PUT /invite/v2, with the
room's stripped state), then stored and sent on to the room like any event of ours."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from federation.discovery import FederationError
from federation.transport import FederationTransport, RemoteError
from homeserver.core import Core
from homeserver.crypto.event_signatures import EventSignatureChecker
from homeserver.errors import Codes, Forbidden, MatrixError
from homeserver.events.event import MEMBER, Event
from homeserver.handlers.sync_summary import current_stripped_state
from homeserver.identifiers import domain_of


class RemoteInviter:
    def __init__(
        self, core: Core, transport: FederationTransport, signatures: EventSignatureChecker
    ) -> None:
        self.core = core
        self.transport = transport
        self.signatures = signatures

    async def invite(
        self, room_id: str, sender: str, target: str, content: Mapping[str, Any]
    ) -> str:
        event = await self.core.events.build_event(room_id, MEMBER, sender, content, target)
        destination = domain_of(target)
        path = (
            f"/_matrix/federation/v2/invite/{quote(room_id, safe='')}"
            f"/{quote(event.event_id, safe='')}"
        )
        body = {
            "room_version": event.room_version.identifier,
            "event": event.pdu,
            "invite_room_state": await current_stripped_state(
                self.core.storage, room_id, sender
            ),
        }
        try:
            answer = await self.transport.request(destination, "PUT", path, content=body)
        except RemoteError as e:
            if e.status == 403:
                raise Forbidden(e.error or f"{destination} refused the invite") from e
            raise MatrixError(
                f"{destination} refused the invite: {e.errcode or e.status}",
                Codes.UNKNOWN,
                status=502,
            ) from e
        except FederationError as e:
            raise MatrixError(
                f"{destination} could not be reached", Codes.UNKNOWN, status=502
            ) from e
        signed = answer.get("event") if isinstance(answer, dict) else None
        if not isinstance(signed, dict):
            raise MatrixError(f"{destination} sent no signed invite", Codes.UNKNOWN, status=502)
        countersigned = Event(
            {k: v for k, v in signed.items() if k != "unsigned"}, event.room_version
        )
        # The same event, now also signed by the invitee's server (which must verify).
        if countersigned.event_id != event.event_id or await self.signatures.failures(
            [countersigned]
        ):
            raise MatrixError(f"{destination} returned another event", Codes.UNKNOWN, status=502)
        await self.core.remote_events.persist_event(countersigned)
        return event.event_id
