"""Storage: one facade over small stores, on SQLite or PostgreSQL. See README.md here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from homeserver.storage.database import Database, DatabaseUnavailable, SchemaTooNew
from homeserver.storage.engines.postgres import PostgresDatabase
from homeserver.storage.engines.sqlite import SqliteDatabase
from homeserver.storage.id_generators import StreamIdGenerator
from homeserver.storage.migrations import apply_migrations
from homeserver.storage.stores.accounts import AccountsStore
from homeserver.storage.stores.dehydrated_devices import DehydratedDevicesStore
from homeserver.storage.stores.e2e_keys import E2eKeysStore
from homeserver.storage.stores.events import EventsStore
from homeserver.storage.stores.federation_outbox import FederationOutboxStore
from homeserver.storage.stores.federation_txns import FederationTxnStore
from homeserver.storage.stores.filters import FiltersStore
from homeserver.storage.stores.key_backup import KeyBackupStore
from homeserver.storage.stores.media import MediaStore
from homeserver.storage.stores.openid import OpenIdStore
from homeserver.storage.stores.persist import PersistEventsStore
from homeserver.storage.stores.push import PushStore
from homeserver.storage.stores.relations import RelationsStore
from homeserver.storage.stores.reports import ReportsStore
from homeserver.storage.stores.room_extras import RoomExtrasStore
from homeserver.storage.stores.rooms import RoomsStore
from homeserver.storage.stores.search import SearchStore
from homeserver.storage.stores.server_keys import ServerKeysStore
from homeserver.storage.stores.state import StateStore
from homeserver.storage.stores.sync_reads import SyncReadsStore
from homeserver.storage.stores.threepids import ThreepidsStore
from homeserver.storage.stores.to_device import ToDeviceStore
from homeserver.storage.stores.user_data import UserDataStore
from homeserver.storage.stores.user_directory import UserDirectoryStore

__all__ = ["Storage", "open_storage", "open_database", "DatabaseUnavailable", "SchemaTooNew"]


class DatabaseSettings(Protocol):
    engine: str
    path: Path
    pool_min: int
    pool_max: int

    def postgres_dsn(self) -> str: ...


@dataclass
class Storage:
    db: Database
    events: EventsStore
    state: StateStore
    rooms: RoomsStore
    persist: PersistEventsStore
    stream_ids: StreamIdGenerator
    accounts: AccountsStore
    room_extras: RoomExtrasStore
    user_data: UserDataStore
    filters: FiltersStore
    sync_reads: SyncReadsStore
    media: MediaStore
    to_device: ToDeviceStore
    e2e_keys: E2eKeysStore
    dehydrated_devices: DehydratedDevicesStore
    federation_outbox: FederationOutboxStore
    federation_txns: FederationTxnStore
    key_backup: KeyBackupStore
    server_keys: ServerKeysStore
    openid: OpenIdStore
    # Event relationships (issue 7): /relations, /threads, bundled aggregations.
    relations: RelationsStore
    # Server-side search (issue 7): the text of messages, names and topics.
    search: SearchStore
    # Push rules and notification rows (issue 7); its indexer is added in core.py, where the
    # rule sets it evaluates live.
    push: PushStore
    # Reports of events, rooms and users for the operators (issue 7, moderation).
    reports: ReportsStore
    # Who the user directory shows, kept by its indexer (issue 7).
    user_directory: UserDirectoryStore
    # Email addresses bound to accounts and their validation sessions.
    threepids: ThreepidsStore

    async def close(self) -> None:
        # Closing the Database also releases its single-writer claim (lock_single_writer).
        await self.db.close()


async def open_database(settings: DatabaseSettings) -> Database:
    if settings.engine == "postgres":
        return await PostgresDatabase.open(
            settings.postgres_dsn(), min_size=settings.pool_min, max_size=settings.pool_max
        )
    if settings.engine == "sqlite":
        return await SqliteDatabase.open(Path(settings.path))
    raise DatabaseUnavailable(f"unknown database engine {settings.engine!r}")


async def open_storage(settings: DatabaseSettings) -> Storage:
    """Connect, bring the schema up to date and load the stream positions."""
    db = await open_database(settings)
    try:
        return await storage_on(db)
    except BaseException:
        await db.close()
        raise


async def storage_on(db: Database) -> Storage:
    """Storage over `db`: claims it as this process's to write (see below), brings the schema up
    to date and loads the stream positions.

    Stream positions and state group IDs come from in-process counters seeded from MAX(...)
    here, so only one writer may use a database until positions are allocated in the database
    itself: a second server process fails here with DatabaseUnavailable. The claim belongs to
    `db` and lasts until `db.close()`; further Storages on the same `db` object (tests reading
    through a cold cache) share it and must not write concurrently with the first.
    """
    # Claimed before the counters are seeded (and before migrating): seeding while another
    # writer runs is exactly what hands out duplicates.
    await db.lock_single_writer()
    await apply_migrations(db)
    events = EventsStore(db)
    state = StateStore(db)
    await state.load_next_id()
    top = await db.fetchval("SELECT MAX(stream_ordering) FROM events") or 0
    bottom = await db.fetchval("SELECT MIN(stream_ordering) FROM events") or 0
    stream_ids = StreamIdGenerator(max(top, 0))
    backfill_ids = StreamIdGenerator(min(bottom, 0), step=-1)
    relations = RelationsStore(db)
    persist = PersistEventsStore(db, events, state, stream_ids, backfill_ids)
    persist.add_indexer(relations)
    search = SearchStore(db)
    persist.add_indexer(search)
    user_directory = UserDirectoryStore(db)
    persist.add_indexer(user_directory)
    return Storage(
        db=db,
        events=events,
        state=state,
        rooms=RoomsStore(db),
        persist=persist,
        stream_ids=stream_ids,
        accounts=AccountsStore(db),
        room_extras=RoomExtrasStore(db),
        user_data=UserDataStore(db),
        filters=FiltersStore(db),
        sync_reads=SyncReadsStore(db),
        media=MediaStore(db),
        to_device=ToDeviceStore(db),
        e2e_keys=E2eKeysStore(db),
        dehydrated_devices=DehydratedDevicesStore(db),
        federation_outbox=FederationOutboxStore(db),
        federation_txns=FederationTxnStore(db),
        key_backup=KeyBackupStore(db),
        server_keys=ServerKeysStore(db),
        openid=OpenIdStore(db),
        relations=relations,
        search=search,
        push=PushStore(db),
        reports=ReportsStore(db),
        user_directory=user_directory,
        threepids=ThreepidsStore(db),
    )
