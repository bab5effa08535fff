"""FederationPublicRooms: reading another server's published room directory (S-S API
"Published Room Directory") for a client that asked /publicRooms with `server`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from federation.discovery import FederationError
from federation.transport import FederationTransport, RemoteError
from homeserver.errors import Codes, MatrixError
from homeserver.handlers.public_rooms import DirectoryQuery

JsonDict = dict[str, Any]
PUBLIC_ROOMS = "/_matrix/federation/v1/publicRooms"

# PublishedRoomsChunk: the fields kept from another server's answer and what each must be.
_REQUIRED = {
    "room_id": str,
    "num_joined_members": int,
    "world_readable": bool,
    "guest_can_join": bool,
}
_OPTIONAL_TEXT = ("name", "topic", "canonical_alias", "avatar_url", "join_rule", "room_type")
_PREFIXES = {"room_id": "!", "canonical_alias": "#", "avatar_url": "mxc://"}


class FederationPublicRooms:
    def __init__(self, transport: FederationTransport) -> None:
        self.transport = transport

    async def public_rooms(self, server: str, query: DirectoryQuery) -> JsonDict:
        try:
            try:
                answer = await self.transport.request(
                    server, "POST", PUBLIC_ROOMS, content=query.to_body()
                )
                return _well_formed(server, answer)
            except RemoteError as e:
                if not _unsupported(e):
                    raise
            answer = await self.transport.request(server, "GET", PUBLIC_ROOMS, query=_get(query))
        except RemoteError as e:
            raise MatrixError(f"{server} answered {e.status}", Codes.UNKNOWN, status=502) from e
        except FederationError as e:
            raise MatrixError(f"{server} could not be reached", Codes.UNKNOWN, status=502) from e
        rooms = _well_formed(server, answer)
        if not query.filtered:
            return rooms
        matching = [room for room in rooms["chunk"] if query.matches(room)]
        return {"chunk": matching[: query.limit], "total_room_count_estimate": len(matching)}


def _get(query: DirectoryQuery) -> dict[str, str]:
    """The query string of the same request through GET, which servers without the POST
    (older than r0.5) answer. GET has no filter: with one, the whole directory is read and
    filtered here."""
    params = {"include_all_networks": "true" if query.include_all_networks else "false"}
    if query.third_party_instance_id is not None:
        params["third_party_instance_id"] = query.third_party_instance_id
    if not query.filtered:
        if query.limit is not None:
            params["limit"] = str(query.limit)
        if query.since is not None:
            params["since"] = query.since
    return params


def _unsupported(error: RemoteError) -> bool:
    """Whether the server does not know POST /publicRooms (a Matrix server says
    M_UNRECOGNIZED; something in front of it may say 404 or 405 with no Matrix error)."""
    return error.status in (400, 404, 405) and error.errcode in (None, Codes.UNRECOGNIZED)


def _well_formed(server: str, answer: Any) -> JsonDict:
    """What the client may be given of another server's answer: the well-formed chunks, the
    known fields of each, and the tokens and estimate if they have the right types."""
    chunk = answer.get("chunk") if isinstance(answer, dict) else None
    if not isinstance(chunk, list):
        raise MatrixError(f"{server} sent an unusable directory", Codes.UNKNOWN, status=502)
    rooms = [room for r in chunk if (room := _room(r)) is not None]
    result: JsonDict = {"chunk": rooms}
    for token in ("next_batch", "prev_batch"):
        if isinstance(answer.get(token), str):
            result[token] = answer[token]
    estimate = answer.get("total_room_count_estimate")
    if isinstance(estimate, int) and not isinstance(estimate, bool):
        result["total_room_count_estimate"] = estimate
    return result


def _room(value: Any) -> JsonDict | None:
    if not isinstance(value, Mapping):
        return None
    room: JsonDict = {}
    for key, kind in _REQUIRED.items():
        field = value.get(key)
        # bool is an int: a count given as true is no count.
        if not isinstance(field, kind) or (kind is int and isinstance(field, bool)):
            return None
        room[key] = field
    for key in _OPTIONAL_TEXT:
        field = value.get(key)
        if isinstance(field, str):
            room[key] = field
    for key, prefix in _PREFIXES.items():
        if key in room and not room[key].startswith(prefix):
            if key in _REQUIRED:
                return None
            del room[key]
    return room
