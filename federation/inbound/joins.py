"""JoinHandler: the resident server's side of a remote join or leave (S-S API "Joining
Rooms", "Leaving Rooms (Rejecting Invites)"): GET /make_join and /make_leave hand out an
event template; PUT /send_join/v2 and /send_leave/v2 accept the signed event and pass it on
to the other servers in the room; a join is answered with the room's state and auth chain."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

from homeserver.core import Core
from homeserver.crypto.event_signatures import EventSignatureChecker
from homeserver.crypto.signing import countersign_event
from homeserver.errors import Codes, Forbidden, MatrixError, NotFound
from homeserver.events.event import MEMBER, Event
from homeserver.events.validation import validate_pdu
from homeserver.handlers.room_member import AUTHORISER
from homeserver.handlers.sync_summary import current_stripped_state
from homeserver.identifiers import domain_of

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]


class EventRelay(Protocol):
    """Passes an event on to the other servers in its room (the FederationSender)."""

    async def send_event(self, event_id: str, room_id: str, skip: Sequence[str] = ()) -> None: ...


class JoinHandler:
    def __init__(self, core: Core, signatures: EventSignatureChecker, relay: EventRelay) -> None:
        self.core = core
        self.storage = core.storage
        self.signatures = signatures
        self.relay = relay
        self.server_name = core.server.server_name

    async def make_join(
        self, origin: str, room_id: str, user_id: str, versions: Sequence[str]
    ) -> JsonDict:
        return await self._template(origin, room_id, user_id, "join", versions)

    async def make_knock(
        self, origin: str, room_id: str, user_id: str, versions: Sequence[str]
    ) -> JsonDict:
        return await self._template(origin, room_id, user_id, "knock", versions)

    async def send_knock(self, origin: str, room_id: str, event_id: str, pdu: Any) -> JsonDict:
        event = await self._accept(origin, room_id, event_id, pdu, "knock")
        state = await current_stripped_state(self.storage, room_id, event.sender)
        return {"knock_room_state": state}

    async def make_leave(self, origin: str, room_id: str, user_id: str) -> JsonDict:
        return await self._template(origin, room_id, user_id, "leave", None)

    async def send_join(self, origin: str, room_id: str, event_id: str, pdu: Any) -> JsonDict:
        event = await self._accept(origin, room_id, event_id, pdu, "join")
        state = await self.core.state.get_state_before(event_id)
        state_events = await self.storage.events.get_events(state.values())
        chain_ids = await self.storage.events.get_auth_chain_ids([*state.values(), event_id])
        chain = await self.storage.events.get_events(chain_ids)
        serializer = self.core.room_api.serializer
        return {
            "origin": self.server_name,
            "state": await serializer.federation_format(_in_order(state_events.values())),
            "auth_chain": await serializer.federation_format(_in_order(chain.values())),
            "event": event.pdu,
            "members_omitted": False,
        }

    async def send_leave(self, origin: str, room_id: str, event_id: str, pdu: Any) -> JsonDict:
        await self._accept(origin, room_id, event_id, pdu, "leave")
        return {}

    async def _template(
        self,
        origin: str,
        room_id: str,
        user_id: str,
        membership: str,
        versions: Sequence[str] | None,
    ) -> JsonDict:
        """S-S API make_join / make_leave: a template of the user's member event."""
        if domain_of(user_id) != origin:
            raise Forbidden(f"A server can only {membership} its own users")
        room_version = await self.storage.rooms.get_room_version(room_id)
        if room_version is None or not await self._joined_here(room_id):
            raise NotFound(f"This server is not in room {room_id}")
        if versions is not None and room_version.identifier not in versions:
            raise MatrixError(
                f"Your server does not support room version {room_version.identifier}",
                Codes.INCOMPATIBLE_ROOM_VERSION,
                status=400,
                room_version=room_version.identifier,
            )
        content = {"membership": membership}
        if membership == "join":
            # A full room is refused here already, as the spec lets make_join answer 403,
            # rather than after the joining server signed the event.
            await self._check_room_not_full(room_id, user_id)
            authoriser = await self.core.room_api.members.join_authoriser(room_id, user_id)
            if authoriser is not None:
                content[AUTHORISER] = authoriser
        _, template = await self.core.events.event_template(
            room_id, MEMBER, user_id, content, user_id
        )
        return {"room_version": room_version.identifier, "event": template}

    async def _accept(
        self, origin: str, room_id: str, event_id: str, pdu: Any, membership: str
    ) -> Event:
        """S-S API send_join / send_leave: check the origin's user's member event, store it
        and pass it on to the other servers in the room."""
        room_version = await self.storage.rooms.get_room_version(room_id)
        if room_version is None or not await self._joined_here(room_id):
            raise NotFound(f"This server is not in room {room_id}")
        if not isinstance(pdu, dict):
            raise MatrixError("The member event must be an object", Codes.BAD_JSON)
        pdu = {k: v for k, v in pdu.items() if k != "unsigned"}
        validate_pdu(room_version, pdu)
        event = Event(pdu, room_version)
        sender = event.sender
        if (
            event.event_id != event_id
            or event.room_id != room_id
            or event.type != MEMBER
            or event.membership != membership
            or event.state_key != sender
            or domain_of(sender) != origin
        ):
            raise MatrixError(
                f"Not a {membership} of the origin's user to this room with this event ID",
                Codes.BAD_JSON,
            )
        if membership == "join":
            # A server may skip make_join: the limit holds at send_join as well.
            await self._check_room_not_full(room_id, sender)
        authoriser = event.content.get(AUTHORISER)
        if membership == "join" and isinstance(authoriser, str):
            event = await self._vouch(event, authoriser)
        failed = await self.signatures.failures([event])
        if failed:
            raise Forbidden(f"Signature check failed: {failed[event.event_id]}")
        persisted = await self.core.remote_events.persist_event(event)
        if event_id in await self.storage.events.get_rejected_event_ids([event_id]):
            raise Forbidden(f"The {membership} is not allowed")
        await self.relay.send_event(event_id, room_id, skip=[origin])
        logger.info("origin=%s %s user_id=%s room_id=%s", origin, membership, sender, room_id)
        return persisted.event

    async def _vouch(self, event: Event, authoriser: str) -> Event:
        """A restricted join naming one of our users as its authoriser (S-S API "Restricted
        rooms"): checked against the allow list again, then countersigned, as the auth rules
        only trust the authoriser's server's signature. A join naming another server's user
        is left to that server's signature."""
        if domain_of(authoriser) != self.server_name:
            return event
        await self.core.room_api.members.join_authoriser(event.room_id, event.sender)
        pdu = countersign_event(
            event.room_version, event.pdu, self.server_name, self.core.server.keys.signing_key
        )
        return Event(pdu, event.room_version)

    async def _check_room_not_full(self, room_id: str, user_id: str) -> None:
        old = await self.storage.rooms.get_membership(room_id, user_id)
        await self.core.room_api.members.check_room_not_full(room_id, old)

    async def _joined_here(self, room_id: str) -> bool:
        members = await self.storage.rooms.get_users_in_room(room_id)
        return any(domain_of(m) == self.server_name for m in members)


def _in_order(events: Any) -> list[Event]:
    return sorted(events, key=lambda e: (e.depth, e.event_id))
