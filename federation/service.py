"""build_federation: the federation components of one server, wired over its Core (the
composition root, app.py, calls this once storage is open)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from federation.auth import RequestAuthenticator
from federation.client import FederationClient
from federation.inbound.edus import InboundEdus
from federation.inbound.invites import InviteHandler
from federation.inbound.joins import JoinHandler
from federation.inbound.media import FederationMedia
from federation.inbound.queries import QueryHandler
from federation.inbound.reads import FederationReads
from federation.inbound.transactions import TransactionHandler
from federation.outbound.backfill import Backfiller
from federation.outbound.hierarchy import FederationHierarchy
from federation.outbound.invites import RemoteInviter
from federation.outbound.joins import RemoteJoiner
from federation.outbound.keys import FederationKeys
from federation.outbound.missing_events import MissingEventsFetcher
from federation.outbound.public_rooms import FederationPublicRooms
from federation.outbound.queries import FederationQueries
from federation.sender.edus import (
    OutboundDeviceLists,
    OutboundPresence,
    OutboundReceipts,
    OutboundToDevice,
    OutboundTyping,
)
from federation.sender.sender import FederationSender
from federation.server.http import FederationServer
from federation.transport import FederationTransport
from homeserver.config import FederationConfig
from homeserver.core import Core
from homeserver.crypto.event_signatures import EventSignatureChecker
from homeserver.crypto.keyring import Keyring
from media_repo.remote import RemoteMedia
from media_repo.repository import MediaRepository


@dataclass
class Federation:
    transport: FederationTransport
    keyring: Keyring
    server: FederationServer
    sender: FederationSender

    async def start(self) -> None:
        await self.sender.start()

    async def close(self) -> None:
        await self.sender.close()
        await self.transport.close()


def build_federation(core: Core, config: FederationConfig, media: MediaRepository) -> Federation:
    server_name, keys = core.server.server_name, core.server.keys
    storage = core.storage
    transport = FederationTransport(server_name, keys.signing_key, config, clock=core.clock)
    client = FederationClient(transport)
    keyring = Keyring(
        server_name, keys, storage.server_keys, client, config.trusted_key_servers, core.clock
    )
    signatures = EventSignatureChecker(keyring)
    transactions = TransactionHandler(storage, signatures, core.remote_events, core.clock)
    InboundEdus(core).register(transactions)
    transactions.prev_events = MissingEventsFetcher(core, transport, signatures)

    async def pdus_for(event_ids: Sequence[str]) -> list[dict[str, Any]]:
        events = await storage.events.get_events(event_ids)
        ordered = [events[i] for i in event_ids if i in events]
        return await core.room_api.serializer.federation_format(ordered)

    sender = FederationSender(
        storage.federation_outbox,
        client,
        pdus_for,
        server_name,
        core.clock,
        lambda: storage.stream_ids.current,
    )
    core.notifier.watch_position(sender.on_new_events)
    core.to_device.remote = OutboundToDevice(sender)
    core.typing.remote = OutboundTyping(sender)
    core.receipts.remote = OutboundReceipts(sender)
    core.presence.remote = OutboundPresence(sender)
    server = FederationServer(
        server_name=server_name,
        clock=core.clock,
        authenticator=RequestAuthenticator(server_name, keyring),
        transactions=transactions,
        joins=JoinHandler(core, signatures, sender),
        queries=QueryHandler(core),
        invites=InviteHandler(core, signatures),
        reads=FederationReads(core),
        e2e_keys=core.e2e_keys,
        on_contact=sender.retry_now,
        media=FederationMedia(media),
        openid=core.openid,
        public_rooms=core.room_api.public_rooms,
        hierarchy=core.room_api.hierarchy,
    )
    media.remote = RemoteMedia(media, transport)
    core.room_api.members.remote_inviter = RemoteInviter(core, transport, signatures)
    core.e2e_keys.remote = FederationKeys(transport)
    core.device_lists.remote = OutboundDeviceLists(sender, storage.e2e_keys)
    queries = FederationQueries(transport)
    core.room_api.directory.remote = queries
    remote_hierarchy = FederationHierarchy(transport, server_name)
    core.room_api.hierarchy.remote = remote_hierarchy
    core.room_api.room_summary.remote = remote_hierarchy
    core.room_api.public_rooms.remote = FederationPublicRooms(transport)
    core.profile.remote = queries
    core.room_api.members.remote_joiner = RemoteJoiner(core, transport, signatures)
    core.room_api.reads.remote_backfill = Backfiller(core, transport, signatures)
    return Federation(transport, keyring, server, sender)
