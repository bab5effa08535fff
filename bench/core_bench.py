"""Core benchmarks (issue 2): local events persisted per second into one room, and state
resolution of two forks of 1,000 conflicting state events, on SQLite and PostgreSQL.

Run by hand: `python bench/core_bench.py [--events N] [--postgres DSN]`. Results go in
bench/README.md; nothing here is a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
from signedjson.key import generate_signing_key

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from state_res_bench_data import build_fork_scenario  # noqa: E402

from homeserver.core import build_core  # noqa: E402
from homeserver.crypto.keys import ServerKeys  # noqa: E402
from homeserver.handlers.room import RoomCreationRequest  # noqa: E402
from homeserver.state.resolver import resolve_state  # noqa: E402
from homeserver.storage import storage_on  # noqa: E402
from homeserver.storage.database import Database  # noqa: E402
from homeserver.storage.engines.postgres import PostgresDatabase  # noqa: E402
from homeserver.storage.engines.sqlite import SqliteDatabase  # noqa: E402
from homeserver.storage.stores.persist import EventContext  # noqa: E402

ALICE = "@alice:bench.local"


async def bench_persist(db: Database, n_events: int, concurrency: int) -> float:
    storage = await storage_on(db)
    core = build_core(storage, "bench.local", ServerKeys(generate_signing_key("a_bnch")))
    room_id = await core.rooms.create_room(RoomCreationRequest(ALICE, preset="public_chat"))
    # Warm up caches and connections.
    for i in range(20):
        await core.events.send_event(
            room_id, "m.room.message", ALICE, {"msgtype": "m.text", "body": f"w{i}"}
        )

    async def sender(worker: int, count: int) -> None:
        for i in range(count):
            await core.events.send_event(
                room_id,
                "m.room.message",
                ALICE,
                {"msgtype": "m.text", "body": f"message {worker}/{i}"},
            )

    start = time.perf_counter()
    per = n_events // concurrency
    await asyncio.gather(*(sender(w, per) for w in range(concurrency)))
    elapsed = time.perf_counter() - start
    return per * concurrency / elapsed


async def bench_state_res(
    db: Database, room_version: str, changes: int, runs: int
) -> tuple[float, float]:
    """Resolve two forks of `changes` conflicting state events each, reading the events from
    the database: (cold ms, median warm ms). Cold is a fresh store whose event cache is empty."""
    rv, state_sets, events = build_fork_scenario(room_version, changes_per_fork=changes)
    storage = await storage_on(db)
    core = build_core(storage, "bench.example", ServerKeys(generate_signing_key("a_bnch")))
    room_id = events[0].room_id
    # Stored as outliers: the bench is about resolution, not about how the events arrived.
    await core.persister.persist_events(
        room_id, [(e, EventContext()) for e in events], backfilled=True
    )
    if db.dialect == "postgres":
        # A live database has planner statistics (autovacuum analyses it); a table filled a
        # moment ago has none yet, which makes the auth chain query pick sequential scans.
        await db.execute("ANALYZE")
    cold_store = await storage_on(db)
    start = time.perf_counter()
    await resolve_state(room_id, rv, state_sets, cold_store.events)
    cold = (time.perf_counter() - start) * 1000
    warm = []
    for _ in range(runs):
        start = time.perf_counter()
        await resolve_state(room_id, rv, state_sets, cold_store.events)
        warm.append((time.perf_counter() - start) * 1000)
    return cold, statistics.median(warm)


async def with_sqlite(fn, *args):  # type: ignore[no-untyped-def]
    with tempfile.TemporaryDirectory() as tmp:
        db = await SqliteDatabase.open(Path(tmp) / "bench.db")
        try:
            return await fn(db, *args)
        finally:
            await db.close()


async def with_postgres(dsn: str, fn, *args):  # type: ignore[no-untyped-def]
    schema = f"bench_{os.getpid()}"
    conn = await asyncpg.connect(dsn)
    await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}")
    sep = "&" if "?" in dsn else "?"
    db = await PostgresDatabase.open(f"{dsn}{sep}search_path={schema}", 2, 10)
    try:
        return await fn(db, *args)
    finally:
        await db.close()
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 20])
    parser.add_argument("--conflicts", type=int, default=1000, help="state changes per fork")
    parser.add_argument(
        "--postgres",
        default=os.environ.get("HS_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    args = parser.parse_args()
    engines = [("sqlite", with_sqlite), ("postgres", lambda *a: with_postgres(args.postgres, *a))]
    for name, run in engines:
        for concurrency in args.concurrency:
            rate = await run(bench_persist, args.events, concurrency)
            print(
                f"persist    {name:8}  {rate:8.0f} events/s  "
                f"({args.events} messages into one room, {concurrency} concurrent senders)"
            )
    for name, run in engines:
        for version in ("11", "12"):
            cold, warm = await run(bench_state_res, version, args.conflicts, 10)
            print(
                f"state res  {name:8}  v{version}: {cold:6.1f} ms cold, {warm:6.1f} ms warm "
                f"(2 forks x {args.conflicts} conflicting state events)"
            )


if __name__ == "__main__":
    asyncio.run(main())
