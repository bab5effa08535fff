"""The room handlers the Client-Server room endpoints use, built together over one Storage
(one field of Core, so the composition root wires them in one place)."""

from __future__ import annotations

from dataclasses import dataclass

from homeserver.clock import Clock
from homeserver.handlers.client_events import ClientEventSerializer
from homeserver.handlers.directory import DirectoryHandler
from homeserver.handlers.hierarchy import HierarchyHandler
from homeserver.handlers.message import EventCreationHandler
from homeserver.handlers.public_rooms import PublicRoomsHandler
from homeserver.handlers.relations import RelationsHandler
from homeserver.handlers.room import RoomCreationHandler
from homeserver.handlers.room_create import RoomCreator
from homeserver.handlers.room_member import RoomMemberHandler
from homeserver.handlers.room_reads import RoomReadHandler
from homeserver.handlers.room_send import RoomSendHandler
from homeserver.handlers.room_summary import RoomSummaries
from homeserver.handlers.room_summary_handler import RoomSummaryHandler
from homeserver.handlers.visibility import HistoryVisibility
from homeserver.storage import Storage
from homeserver.storage.stores.room_extras import RoomExtrasStore


@dataclass
class RoomHandlers:
    extras: RoomExtrasStore
    visibility: HistoryVisibility
    serializer: ClientEventSerializer
    members: RoomMemberHandler
    directory: DirectoryHandler
    send: RoomSendHandler
    create: RoomCreator
    reads: RoomReadHandler
    # What a directory or a space hierarchy shows of rooms, batched.
    summaries: RoomSummaries
    # Space trees (C-S and S-S API GET /hierarchy).
    hierarchy: HierarchyHandler
    # One room seen from outside (C-S API GET /room_summary).
    room_summary: RoomSummaryHandler
    # The published room directory (/publicRooms, /directory/list/room).
    public_rooms: PublicRoomsHandler
    # /relations and /threads (C-S API "Relationships", "Threading").
    relations: RelationsHandler


def build_room_handlers(
    storage: Storage, events: EventCreationHandler, rooms: RoomCreationHandler, clock: Clock
) -> RoomHandlers:
    extras = storage.room_extras
    visibility = HistoryVisibility(storage, extras)
    serializer = ClientEventSerializer(storage, extras, visibility, clock)
    members = RoomMemberHandler(storage, extras, events)
    directory = DirectoryHandler(storage, extras, events, clock)
    summaries = RoomSummaries(storage)
    return RoomHandlers(
        extras=extras,
        visibility=visibility,
        serializer=serializer,
        members=members,
        directory=directory,
        send=RoomSendHandler(storage, extras, events, members, directory, clock),
        create=RoomCreator(rooms, members, directory, storage),
        reads=RoomReadHandler(storage, extras, visibility, serializer, clock),
        summaries=summaries,
        public_rooms=PublicRoomsHandler(storage, extras, summaries, events.server.server_name),
        hierarchy=HierarchyHandler(storage, summaries, events.server.server_name, clock),
        room_summary=RoomSummaryHandler(storage, summaries, directory, events.server.server_name),
        relations=RelationsHandler(storage, visibility, serializer),
    )
