"""RemoteJoiner: the joining server's side of a remote join (S-S API "Joining Rooms"):
make_join on a resident server, fill in and sign the template, send_join, then store the
room's auth chain and state as outliers and the join on top of them. Leaving a room this
server is not in (declining an invite) is the same handshake with make_leave/send_leave."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from federation.discovery import FederationError
from federation.transport import FederationTransport, RemoteError
from homeserver.core import Core
from homeserver.crypto.event_signatures import EventSignatureChecker
from homeserver.crypto.signing import hash_and_sign_event
from homeserver.errors import Codes, MatrixError
from homeserver.events.event import MEMBER, Event
from homeserver.events.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion
from homeserver.events.validation import validate_pdu

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]
_CANNOT_VOUCH = frozenset({Codes.UNABLE_TO_AUTHORISE_JOIN, Codes.UNABLE_TO_GRANT_JOIN})


class RemoteJoiner:
    def __init__(
        self, core: Core, transport: FederationTransport, signatures: EventSignatureChecker
    ) -> None:
        self.core = core
        self.transport = transport
        self.signatures = signatures
        self.server_name = core.server.server_name

    async def join(
        self, user_id: str, room_id: str, servers: Sequence[str], content: Mapping[str, Any]
    ) -> str:
        """Join `user_id` to a room this server is not in, through the first of `servers`
        that can help; returns the join's event ID."""
        candidates = [s for s in dict.fromkeys(servers) if s != self.server_name]
        if not candidates:
            raise MatrixError("No server to join the room through", Codes.NOT_FOUND)
        failure: MatrixError | None = None
        for server in candidates:
            try:
                return await self._join_via(server, user_id, room_id, content)
            except RemoteError as e:
                logger.info("room_id=%s join via %s refused: %s", room_id, server, e)
                if e.status == 403:
                    failure = MatrixError(
                        e.error or "The room refused the join", Codes.FORBIDDEN, status=403
                    )
                elif e.status == 404 and failure is None:
                    failure = MatrixError(
                        f"{server} is not in room {room_id}", Codes.NOT_FOUND, status=404
                    )
                elif e.errcode in _CANNOT_VOUCH and failure is None:
                    # A restricted room whose allow list that server cannot check, or where
                    # none of its users may invite: another server may (S-S API "Restricted
                    # rooms"); if none can, the join is refused.
                    failure = MatrixError(
                        e.error or "No server could vouch for the join", Codes.FORBIDDEN, status=403
                    )
                elif e.errcode == Codes.INCOMPATIBLE_ROOM_VERSION:
                    failure = MatrixError(
                        "The room's version is not supported here",
                        Codes.INCOMPATIBLE_ROOM_VERSION,
                    )
            except (FederationError, ValueError, KeyError, TypeError) as e:
                logger.info("room_id=%s join via %s failed: %s", room_id, server, e)
        raise failure or MatrixError(
            "No server could help to join the room", Codes.UNKNOWN, status=502
        )

    async def leave(
        self, user_id: str, room_id: str, servers: Sequence[str], content: Mapping[str, Any]
    ) -> str:
        """Leave a room this server is not in (declining an invite from another server, or
        retracting a knock) through the first of `servers` that helps."""
        return await self._out_of_room(user_id, room_id, servers, "leave", content)

    async def knock(
        self, user_id: str, room_id: str, servers: Sequence[str], content: Mapping[str, Any]
    ) -> str:
        """Knock on a room this server is not in (S-S API "Knocking upon a room")."""
        return await self._out_of_room(user_id, room_id, servers, "knock", content)

    async def _out_of_room(
        self,
        user_id: str,
        room_id: str,
        servers: Sequence[str],
        membership: str,
        content: Mapping[str, Any],
    ) -> str:
        """The make_/send_ handshake for a member event of a room this server is not in;
        the event is kept as the user's membership here (a knock with the room's stripped
        state the resident sent, as an invite keeps the inviter's)."""
        room, user = quote(room_id, safe=""), quote(user_id, safe="")
        # send_leave has a v2 without the v1 answer's quirks; send_knock only has v1.
        send_version = "v2" if membership == "leave" else "v1"
        query = None if membership == "leave" else {"ver": sorted(KNOWN_ROOM_VERSIONS)}
        failure: MatrixError | None = None
        for server in [s for s in dict.fromkeys(servers) if s != self.server_name]:
            try:
                answer = await self.transport.request(
                    server,
                    "GET",
                    f"/_matrix/federation/v1/make_{membership}/{room}/{user}",
                    query=query,
                )
                room_version = KNOWN_ROOM_VERSIONS.get(str(answer.get("room_version", "1")))
                template = answer.get("event")
                if room_version is None or not isinstance(template, dict):
                    raise ValueError(f"{server} sent an unusable make_{membership} answer")
                event = self._sign(room_version, template, user_id, room_id, membership, content)
                sent = await self.transport.request(
                    server,
                    "PUT",
                    f"/_matrix/federation/{send_version}/send_{membership}/{room}"
                    f"/{quote(event.event_id, safe='')}",
                    content=event.pdu,
                )
            except RemoteError as e:
                logger.info("room_id=%s %s via %s refused: %s", room_id, membership, server, e)
                if e.status == 403:
                    failure = MatrixError(e.error or "Refused", Codes.FORBIDDEN, status=403)
                continue
            except (FederationError, ValueError, KeyError, TypeError) as e:
                logger.info("room_id=%s %s via %s failed: %s", room_id, membership, server, e)
                continue
            if membership == "knock":
                stripped = sent.get("knock_room_state") if isinstance(sent, dict) else None
                kept = {**event.pdu, "unsigned": {"knock_room_state": _stripped(stripped)}}
                event = Event(kept, room_version)
            await self.core.persister.persist_out_of_band_membership(event)
            return event.event_id
        raise failure or MatrixError(
            f"No server could help to {membership} the room", Codes.UNKNOWN, status=502
        )

    async def _join_via(
        self, server: str, user_id: str, room_id: str, content: Mapping[str, Any]
    ) -> str:
        path = (
            f"/_matrix/federation/v1/make_join/{quote(room_id, safe='')}/{quote(user_id, safe='')}"
        )
        answer = await self.transport.request(
            server, "GET", path, query={"ver": sorted(KNOWN_ROOM_VERSIONS)}
        )
        room_version = KNOWN_ROOM_VERSIONS.get(str(answer.get("room_version", "1")))
        template = answer.get("event")
        if room_version is None or not isinstance(template, dict):
            raise ValueError(f"{server} sent an unusable make_join answer")
        event = self._sign(room_version, template, user_id, room_id, "join", content)
        path = (
            f"/_matrix/federation/v2/send_join/{quote(room_id, safe='')}"
            f"/{quote(event.event_id, safe='')}"
        )
        answer = await self.transport.request(server, "PUT", path, content=event.pdu)
        await self._store_room(room_version, event, answer)
        return event.event_id

    def _sign(
        self,
        room_version: RoomVersion,
        template: Mapping[str, Any],
        user_id: str,
        room_id: str,
        membership: str,
        content: Mapping[str, Any],
    ) -> Event:
        template_content = template.get("content")
        if (
            template.get("type") != MEMBER
            or template.get("room_id") != room_id
            or template.get("sender") != user_id
            or template.get("state_key") != user_id
            or not isinstance(template_content, dict)
            or template_content.get("membership") != membership
        ):
            # S-S API make_join: such a template is malformed and must be discarded.
            raise ValueError(f"the template is not a {membership} of this user to this room")
        # The template's origin is the resident's; the event names ours where it has one.
        dropped = ("hashes", "signatures", "unsigned", "origin")
        pdu = {k: v for k, v in template.items() if k not in dropped}
        pdu["content"] = {**template_content, **content, "membership": membership}
        pdu["origin_server_ts"] = self.core.clock.time_ms()
        if room_version.event_id_in_pdu:
            pdu["event_id"] = f"${secrets.token_urlsafe(18)}:{self.server_name}"
            pdu["origin"] = self.server_name
        hash_and_sign_event(room_version, pdu, self.server_name, self.core.server.keys.signing_key)
        validate_pdu(room_version, pdu)
        return Event(pdu, room_version)

    async def _store_room(self, room_version: RoomVersion, join: Event, answer: Any) -> None:
        if not isinstance(answer, dict):
            raise ValueError("the send_join answer is not an object")
        state = _events(room_version, answer.get("state"))
        chain = _events(room_version, answer.get("auth_chain"))
        by_id = {e.event_id: e for e in [*chain, *state]}
        failed = await self.signatures.failures(list(by_id.values()))
        if failed:
            logger.warning(
                "room_id=%s send_join answer had %d events with bad signatures, left out",
                join.room_id,
                len(failed),
            )
        kept = [e for e in by_id.values() if e.event_id not in failed and e.room_id == join.room_id]
        remote = self.core.remote_events
        await remote.persist_outliers(join.room_id, kept)
        state_before = {e.state_key_tuple: e.event_id for e in state if e.event_id not in failed}
        signed = answer.get("event")
        if isinstance(signed, dict):
            # The resident's countersigned copy (restricted joins), when it is our join.
            countersigned = Event(signed, room_version)
            if countersigned.event_id == join.event_id:
                join = countersigned
        await remote.persist_event(join, state_before)


def _events(room_version: RoomVersion, pdus: Any) -> list[Event]:
    if not isinstance(pdus, list):
        raise ValueError("the send_join answer has no list of events")
    events = []
    for pdu in pdus:
        if isinstance(pdu, dict):
            pdu = {k: v for k, v in pdu.items() if k != "unsigned"}
            events.append(Event(pdu, room_version))
    return events


def _stripped(state: Any) -> list[dict[str, Any]]:
    return [s for s in state if isinstance(s, dict)][:50] if isinstance(state, list) else []
