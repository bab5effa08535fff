"""The published room directory (C-S API "Published room directory", S-S API "Published Room
Directory"): which rooms are listed and who may change that, and the listing, filtered and
paginated, that clients and other servers read."""

from __future__ import annotations

import base64
import binascii
import bisect
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from homeserver.errors import Codes, Forbidden, InvalidParam, MatrixError, NotFound
from homeserver.handlers.auth import Requester
from homeserver.handlers.room_member import current_power_levels
from homeserver.handlers.room_summary import CANONICAL_ALIAS, RoomSummaries, RoomSummary
from homeserver.identifiers import is_valid_server_name
from homeserver.storage import Storage
from homeserver.storage.stores.room_extras import RoomExtrasStore

JsonDict = dict[str, Any]
VISIBILITIES = ("public", "private")
# The chunk fields generic_search_term looks in.
SEARCHED_FIELDS = ("name", "topic", "canonical_alias", "room_id")
# How many room summaries one round of a filtered listing reads.
SUMMARY_BATCH = 200

# A room's place in the listing: most joined members first, ties by room ID.
SortKey = tuple[int, str]


@dataclass(frozen=True)
class DirectoryQuery:
    """What a /publicRooms request asks for, from the C-S or S-S API alike."""

    limit: int | None = None  # None: every room
    since: str | None = None
    search_term: str | None = None
    # None: rooms of any type; a None in the tuple stands for rooms without a type.
    room_types: tuple[str | None, ...] | None = None
    include_all_networks: bool = False
    third_party_instance_id: str | None = None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> DirectoryQuery:
        """The POST /publicRooms body (C-S and S-S API); 400 M_INVALID_PARAM if malformed."""
        filter_ = _typed(body, "filter", dict) or {}
        room_types = _typed(filter_, "room_types", list)
        if room_types is not None and not all(t is None or isinstance(t, str) for t in room_types):
            raise InvalidParam("filter.room_types must hold room types (strings) or null")
        return cls._checked(
            limit=_typed(body, "limit", int),
            since=_typed(body, "since", str),
            search_term=_typed(filter_, "generic_search_term", str),
            room_types=tuple(room_types) if room_types is not None else None,
            include_all_networks=_typed(body, "include_all_networks", bool) or False,
            third_party_instance_id=_typed(body, "third_party_instance_id", str),
        )

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> DirectoryQuery:
        """The GET /publicRooms query string (C-S and S-S API)."""
        limit = query.get("limit")
        networks = query.get("include_all_networks", "false")
        if networks not in ("true", "false"):
            raise InvalidParam("include_all_networks must be true or false")
        try:
            parsed_limit = int(limit) if limit is not None else None
        except ValueError:
            raise InvalidParam("limit must be an integer") from None
        return cls._checked(
            limit=parsed_limit,
            since=query.get("since"),
            include_all_networks=networks == "true",
            third_party_instance_id=query.get("third_party_instance_id"),
        )

    @classmethod
    def _checked(
        cls,
        limit: int | None,
        since: str | None,
        include_all_networks: bool,
        third_party_instance_id: str | None,
        search_term: str | None = None,
        room_types: tuple[str | None, ...] | None = None,
    ) -> DirectoryQuery:
        if limit is not None and limit < 0:
            raise InvalidParam("limit must not be negative")
        if include_all_networks and third_party_instance_id is not None:
            raise InvalidParam("third_party_instance_id needs include_all_networks to be false")
        return cls(
            # 0 means no limit (S-S API GET /publicRooms).
            limit=limit or None,
            since=since or None,
            search_term=(search_term or "").strip() or None,
            room_types=room_types,
            include_all_networks=include_all_networks,
            third_party_instance_id=third_party_instance_id,
        )

    @property
    def filtered(self) -> bool:
        return self.search_term is not None or self.room_types is not None

    def matches(self, chunk: Mapping[str, Any]) -> bool:
        """Whether a PublishedRoomsChunk passes the filter."""
        if self.room_types is not None and chunk.get("room_type") not in self.room_types:
            return False
        if self.search_term is None:
            return True
        term = self.search_term.casefold()
        return any(
            isinstance(value := chunk.get(key), str) and term in value.casefold()
            for key in SEARCHED_FIELDS
        )

    def to_body(self) -> JsonDict:
        """The POST /publicRooms body asking another server the same."""
        body: JsonDict = {"include_all_networks": self.include_all_networks}
        if self.limit is not None:
            body["limit"] = self.limit
        if self.since is not None:
            body["since"] = self.since
        if self.third_party_instance_id is not None:
            body["third_party_instance_id"] = self.third_party_instance_id
        filter_: JsonDict = {}
        if self.search_term is not None:
            filter_["generic_search_term"] = self.search_term
        if self.room_types is not None:
            filter_["room_types"] = list(self.room_types)
        if filter_:
            body["filter"] = filter_
        return body


def _typed(body: Mapping[str, Any], key: str, kind: type) -> Any:
    value = body.get(key)
    if value is not None and (
        not isinstance(value, kind) or (kind is int and isinstance(value, bool))
    ):
        raise InvalidParam(f"{key} has the wrong type")
    return value


class RemotePublicRooms(Protocol):
    """Reads another server's published room directory (S-S API POST /publicRooms)."""

    async def public_rooms(self, server: str, query: DirectoryQuery) -> JsonDict: ...


class PublicRoomsHandler:
    def __init__(
        self,
        storage: Storage,
        extras: RoomExtrasStore,
        summaries: RoomSummaries,
        server_name: str,
    ) -> None:
        self.storage = storage
        self.extras = extras
        self.summaries = summaries
        self.server_name = server_name
        # Set by federation: the directories of other servers.
        self.remote: RemotePublicRooms | None = None

    async def visibility(self, room_id: str) -> str:
        if await self.storage.rooms.get_room_version(room_id) is None:
            raise NotFound("Room not found")
        return await self.extras.get_directory_visibility(room_id)

    async def set_visibility(self, requester: Requester, room_id: str, visibility: Any) -> None:
        if visibility not in VISIBILITIES:
            raise InvalidParam("visibility must be public or private")
        levels = await current_power_levels(self.storage, room_id)
        if levels is None:
            raise NotFound("Room not found")
        if not requester.is_admin:
            # Servers may restrict this (list_public_rooms.yaml); like Synapse, those who may
            # change the room's canonical alias may publish it.
            membership = await self.storage.rooms.get_membership(room_id, requester.user_id)
            if membership != "join" or levels.user_level(requester.user_id) < (
                levels.required_level(CANONICAL_ALIAS, "")
            ):
                raise Forbidden("You may not change this room's visibility in the directory")
        await self.extras.set_directory_visibility(room_id, visibility)

    async def list_rooms(self, query: DirectoryQuery, server: str | None) -> JsonDict:
        """The directory of `server` (None: this one), as C-S API /publicRooms answers."""
        if server is None or server == self.server_name:
            return await self.local_rooms(query)
        if not is_valid_server_name(server):
            raise InvalidParam(f"Invalid server name {server[:300]!r}")
        if self.remote is None:
            raise MatrixError(f"Cannot ask {server} for its directory", Codes.UNKNOWN, status=502)
        return await self.remote.public_rooms(server, query)

    async def local_rooms(self, query: DirectoryQuery) -> JsonDict:
        """This server's directory: one page of the published rooms that match the query."""
        if query.third_party_instance_id is not None:
            # No application service publishes rooms of a third-party network here.
            return {"chunk": [], "total_room_count_estimate": 0}
        counts = await self.extras.count_members_of_published_rooms()
        keys = sorted((-count, room_id) for room_id, count in counts.items())
        forward, split = True, 0
        if query.since is not None:
            forward, edge = _decode_token(query.since)
            # Forward: the rooms after the token's room; backward: those before it.
            split = (bisect.bisect_right if forward else bisect.bisect_left)(keys, edge)
        # Both read away from the split.
        before, after = keys[:split][::-1], keys[split:]
        if forward:
            page, more_after = await self._take(after, query, query.limit)
            more_before = await self._any_match(before, query)
        else:
            page, more_before = await self._take(before, query, query.limit)
            page.reverse()
            more_after = await self._any_match(after, query)
        answer: JsonDict = {
            "chunk": [summary.chunk() for _, summary in page],
            "total_room_count_estimate": len(keys),
        }
        if page and more_after:
            answer["next_batch"] = _encode_token(True, page[-1][0])
        if page and more_before:
            answer["prev_batch"] = _encode_token(False, page[0][0])
        return answer

    async def _take(
        self, keys: Sequence[SortKey], query: DirectoryQuery, limit: int | None
    ) -> tuple[list[tuple[SortKey, RoomSummary]], bool]:
        """Up to `limit` rooms (None: all) of `keys` that match the query, in that order, and
        whether more match after them. Summaries are read a batch at a time: without a filter
        the first batch holds exactly the page and the room after it."""
        batch = SUMMARY_BATCH if limit is None or query.filtered else limit + 1
        found: list[tuple[SortKey, RoomSummary]] = []
        for start in range(0, len(keys), batch):
            part = keys[start : start + batch]
            summaries = await self.summaries.summaries([room_id for _, room_id in part])
            for key in part:
                summary = summaries.get(key[1])
                if summary is None or not query.matches(summary.chunk()):
                    continue
                if limit is not None and len(found) == limit:
                    return found, True
                found.append((key, summary))
        return found, False

    async def _any_match(self, keys: Sequence[SortKey], query: DirectoryQuery) -> bool:
        _, more = await self._take(keys, query, 0)
        return more


# Tokens name the room at the page's edge and the direction away from it, so a page stays
# right when rooms are published or unpublished between requests.


def _encode_token(forward: bool, key: SortKey) -> str:
    raw = json.dumps(["n" if forward else "p", -key[0], key[1]], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_token(token: str) -> tuple[bool, SortKey]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        direction, count, room_id = json.loads(raw)
    except (ValueError, TypeError, binascii.Error, UnicodeError, RecursionError):
        raise InvalidParam("Invalid pagination token") from None
    if direction not in ("n", "p") or type(count) is not int or not isinstance(room_id, str):
        raise InvalidParam("Invalid pagination token")
    return direction == "n", (-count, room_id)
