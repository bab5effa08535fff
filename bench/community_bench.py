"""Community features benchmark (issue 7): push rule evaluation and count updates for one
message in a 1,000-member room, search latency over 200,000 messages, and /relations and
/threads over a 10,000-event thread; in-process on SQLite and PostgreSQL, then over HTTP
against our server and Synapse side by side (--targets, in community_http.py).

The in-process part runs in this process through our domain handlers (no HTTP), on a real
SQLite file or a fresh PostgreSQL database `bench_community` on loopback:

1. Push: a room with --members joined members (each with a display name); --messages messages
   are sent one at a time by one member, each evaluated against every other member's push
   rules and turned into count rows inside the transaction that stores it. The CPU time of
   that step (the NotificationCounter, timed around each call: process CPU, every thread) per
   message: p50/p95/max; and the wall time of a whole send.
2. Search: --search-messages messages of 8 words each from a 5,000-word vocabulary (seeded, so
   every run writes the same text) in a 10-member room; then --searches POST /search requests
   (the SearchHandler) for one or two words of a random message, ordered by rank and by
   recent, 10 results each: latency p50/p95; every answer must hold results.
3. Relations: a thread root and --thread-events replies in its thread; /relations pages of 50
   from the newest and /threads (limit 20), --repeats times each: p50/p95; the first page
   must be full.

The HTTP part (see community_http.py) measures the same over the Client-Server API for each
of --targets, each server a subprocess: the server process's CPU per message sent in a room
of --members members and in a room of two, and the latencies of /search, /relations and
/threads over --http-search-messages messages and a thread of --http-thread-events replies
(smaller than the in-process sizes: Synapse writes client-API events too slowly for those).

Run by hand; results go in bench/README.md. Nothing here is a test.

    .venv/bin/python bench/community_bench.py [--engines sqlite postgres] [--members 1000]
        [--messages 200] [--search-messages 200000] [--thread-events 10000]
        [--targets ours-sqlite ours-postgres synapse] [--http-search-messages 40000]
        [--http-thread-events 10000] [--concurrency 8] [--keep] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from community_http import HttpParams, run_targets, stats  # noqa: E402
from community_http import rows as http_rows  # noqa: E402
from sync_bench import (  # noqa: E402
    ALL_TARGETS,
    log,
    machine,
    recreate_postgres_database,
    table,
)

from homeserver.config import DatabaseConfig  # noqa: E402
from homeserver.core import Core, build_core  # noqa: E402
from homeserver.crypto.keys import load_or_create_server_keys  # noqa: E402
from homeserver.handlers.room import RoomCreationRequest  # noqa: E402
from homeserver.push.counts import NotificationCounter  # noqa: E402
from homeserver.storage import Storage, open_storage  # noqa: E402
from homeserver.storage.database import Txn  # noqa: E402
from homeserver.storage.stores.persist import IndexedEvent  # noqa: E402

SERVER = "bench.local"
POSTGRES_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
WRITERS = 25


@dataclass
class Params:
    members: int = 1000
    messages: int = 200
    search_messages: int = 200_000
    searches: int = 100
    thread_events: int = 10_000
    repeats: int = 50


@dataclass
class Result:
    engine: str
    push_cpu_ms_p50: float = 0.0
    push_cpu_ms_p95: float = 0.0
    push_cpu_ms_max: float = 0.0
    send_wall_ms_p50: float = 0.0
    search_build_s: float = 0.0
    search_rank_ms_p50: float = 0.0
    search_rank_ms_p95: float = 0.0
    search_recent_ms_p50: float = 0.0
    search_recent_ms_p95: float = 0.0
    thread_build_s: float = 0.0
    relations_ms_p50: float = 0.0
    relations_ms_p95: float = 0.0
    threads_ms_p50: float = 0.0
    threads_ms_p95: float = 0.0
    notes: list[str] = field(default_factory=list)


class TimedCounter:
    """Wraps the NotificationCounter to time each call (what the push step costs)."""

    def __init__(self, counter: NotificationCounter) -> None:
        self.counter = counter
        self.cpu_ms: list[float] = []

    async def index_events_txn(
        self, txn: Txn, room_id: str, events: Sequence[IndexedEvent]
    ) -> None:
        started = time.process_time()
        await self.counter.index_events_txn(txn, room_id, events)
        self.cpu_ms.append((time.process_time() - started) * 1000)


async def timed(repeats: int, call: Callable[[], Awaitable[Any]]) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        await call()
        times.append((time.perf_counter() - started) * 1000)
    return times


async def create_room(core: Core, creator: str, members: list[str]) -> str:
    room_id = await core.rooms.create_room(RoomCreationRequest(creator, preset="public_chat"))

    async def join(k: int) -> None:
        for user in members[k::WRITERS]:
            content = {"membership": "join", "displayname": user[1:].split(":")[0].title()}
            await core.events.send_event(room_id, "m.room.member", user, content, state_key=user)

    await asyncio.gather(*(join(k) for k in range(WRITERS)))
    return room_id


async def send_many(core: Core, room_id: str, count: int, content: Callable[[int], Any]) -> None:
    users = [f"@user{i}:{SERVER}" for i in range(10)]

    async def writer(k: int) -> None:
        for n in range(k, count, WRITERS):
            await core.events.send_event(room_id, "m.room.message", users[n % 10], content(n))

    await asyncio.gather(*(writer(k) for k in range(WRITERS)))


async def bench_push(core: Core, storage: Storage, params: Params, result: Result) -> None:
    members = [f"@member{i}:{SERVER}" for i in range(params.members)]
    room_id = await create_room(core, members[0], members[1:])
    # The bench times the registered counter by wrapping it in place (a measurement probe).
    indexers = storage.persist._indexers
    [position] = [i for i, x in enumerate(indexers) if isinstance(x, NotificationCounter)]
    counter = indexers[position]
    assert isinstance(counter, NotificationCounter)
    timer = TimedCounter(counter)
    indexers[position] = timer
    walls = []
    try:
        for n in range(params.messages):
            body = f"hello {members[n % 7 + 1][1:].split(':')[0].title()} and all, message {n}"
            started = time.perf_counter()
            await core.events.send_event(
                room_id, "m.room.message", members[0], {"msgtype": "m.text", "body": body}
            )
            walls.append((time.perf_counter() - started) * 1000)
    finally:
        indexers[position] = counter
    result.push_cpu_ms_p50, result.push_cpu_ms_p95 = stats(timer.cpu_ms)
    result.push_cpu_ms_max = round(max(timer.cpu_ms), 2)
    result.send_wall_ms_p50 = stats(walls)[0]
    counts = await storage.db.fetchval(
        "SELECT COUNT(*) FROM room_push_outcomes WHERE room_id = $1", room_id
    )
    if not counts:
        result.notes.append(f"{result.engine}: no push actions were written")


async def bench_search(core: Core, params: Params, result: Result) -> None:
    rng = random.Random(7)
    vocabulary = [f"w{n:04d}{chr(97 + n % 26)}" for n in range(5000)]
    users = [f"@user{i}:{SERVER}" for i in range(10)]
    room_id = await create_room(core, users[0], users[1:])
    texts = [" ".join(rng.choices(vocabulary, k=8)) for _ in range(params.search_messages)]
    started = time.perf_counter()
    await send_many(
        core, room_id, params.search_messages, lambda n: {"msgtype": "m.text", "body": texts[n]}
    )
    result.search_build_s = round(time.perf_counter() - started, 1)
    log(f"  {params.search_messages} messages in {result.search_build_s} s")
    for order in ("rank", "recent"):
        empty = 0

        async def one(order: str = order) -> None:
            nonlocal empty
            # Words from one real message, as someone remembering it would type them.
            terms = " ".join(rng.sample(rng.choice(texts).split(), rng.choice((1, 2))))
            body = {
                "search_categories": {
                    "room_events": {
                        "search_term": terms,
                        "order_by": order,
                        "filter": {"limit": 10},
                    }
                }
            }
            answer = await core.search.search(users[0], "BENCH", body, None)
            if not answer["search_categories"]["room_events"]["results"]:
                empty += 1

        times = await timed(params.searches, one)
        p50, p95 = stats(times)
        setattr(result, f"search_{order}_ms_p50", p50)
        setattr(result, f"search_{order}_ms_p95", p95)
        if empty:
            result.notes.append(f"{result.engine}: {empty} {order} searches found nothing")


async def bench_relations(core: Core, params: Params, result: Result) -> None:
    users = [f"@user{i}:{SERVER}" for i in range(10)]
    room_id = await create_room(core, users[0], users[1:])
    root = await core.events.send_event(
        room_id, "m.room.message", users[0], {"msgtype": "m.text", "body": "thread root"}
    )
    root_id = root.event.event_id
    relates = {"rel_type": "m.thread", "event_id": root_id}
    started = time.perf_counter()
    await send_many(
        core,
        room_id,
        params.thread_events,
        lambda n: {"msgtype": "m.text", "body": f"reply {n}", "m.relates_to": relates},
    )
    result.thread_build_s = round(time.perf_counter() - started, 1)
    relations = core.room_api.relations
    first: dict[str, Any] = {}

    async def page() -> None:
        nonlocal first
        first = await relations.relations(
            users[1],
            None,
            room_id,
            root_id,
            rel_type="m.thread",
            event_type=None,
            from_token=None,
            to_token=None,
            limit=50,
            forwards=False,
            recurse=False,
        )

    result.relations_ms_p50, result.relations_ms_p95 = stats(await timed(params.repeats, page))
    if len(first.get("chunk", [])) != 50:
        result.notes.append(f"{result.engine}: /relations gave {len(first.get('chunk', []))}")

    async def threads() -> None:
        await relations.threads(
            users[1], None, room_id, participated=False, from_token=None, limit=20
        )

    result.threads_ms_p50, result.threads_ms_p95 = stats(await timed(params.repeats, threads))


async def run_engine(engine: str, work: Path, params: Params) -> Result:
    result = Result(engine)
    if engine == "postgres":
        dsn = await recreate_postgres_database(POSTGRES_ADMIN_DSN, "bench_community")
        config = DatabaseConfig(engine="postgres", dsn=dsn, pool_max=10)
    else:
        config = DatabaseConfig(engine="sqlite", path=work / "community.db")
    storage = await open_storage(config)
    try:
        core = build_core(storage, SERVER, load_or_create_server_keys(work / f"{engine}.key"))
        try:
            log(f"{engine}: push")
            await bench_push(core, storage, params, result)
            log(f"{engine}: search")
            await bench_search(core, params, result)
            log(f"{engine}: relations")
            await bench_relations(core, params, result)
        finally:
            await core.persister.close()
            await core.pusher_pool.close()
    finally:
        await storage.close()
    log(f"{engine}: {asdict(result)}")
    return result


ROWS = [
    ("push + counts CPU per message, p50 / p95 / max (ms)", "push_cpu_ms"),
    ("send wall time in the big room, p50 (ms)", "send_wall_ms_p50"),
    ("search corpus written (s)", "search_build_s"),
    ("search by rank, p50 / p95 (ms)", "search_rank"),
    ("search by recent, p50 / p95 (ms)", "search_recent"),
    ("thread written (s)", "thread_build_s"),
    ("/relations page of 50, p50 / p95 (ms)", "relations"),
    ("/threads, p50 / p95 (ms)", "threads"),
]


def cell(result: Result, key: str) -> str:
    if key == "push_cpu_ms":
        return f"{result.push_cpu_ms_p50} / {result.push_cpu_ms_p95} / {result.push_cpu_ms_max}"
    if hasattr(result, key):
        return str(getattr(result, key))
    return f"{getattr(result, key + '_ms_p50')} / {getattr(result, key + '_ms_p95')}"


async def main(argv: list[str]) -> int:
    http = HttpParams()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--engines", nargs="*", choices=("sqlite", "postgres"), default=["sqlite", "postgres"]
    )
    parser.add_argument("--members", type=int, default=Params.members)
    parser.add_argument("--messages", type=int, default=Params.messages)
    parser.add_argument("--search-messages", type=int, default=Params.search_messages)
    parser.add_argument("--thread-events", type=int, default=Params.thread_events)
    parser.add_argument("--targets", nargs="*", choices=ALL_TARGETS, default=list(ALL_TARGETS))
    parser.add_argument("--http-search-messages", type=int, default=http.search_messages)
    parser.add_argument("--http-thread-events", type=int, default=http.thread_events)
    parser.add_argument(
        "--concurrency", type=int, default=http.concurrency, help="HTTP sends in flight"
    )
    parser.add_argument("--keep", action="store_true", help="keep the servers' directories")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    params = Params(
        members=args.members,
        messages=args.messages,
        search_messages=args.search_messages,
        thread_events=args.thread_events,
    )
    http.members, http.messages = args.members, args.messages
    http.search_messages, http.thread_events = args.http_search_messages, args.http_thread_events
    http.concurrency = args.concurrency
    with tempfile.TemporaryDirectory(prefix="community-bench-") as tmp:
        results = [await run_engine(e, Path(tmp), params) for e in args.engines]
    http_results = await run_targets(args.targets, http, args.keep)
    print(f"machine: {json.dumps(machine())}")
    if results:
        print("| | " + " | ".join(r.engine for r in results) + " |")
        print("|---" * (len(results) + 1) + "|")
        for label, key in ROWS:
            print(f"| {label} | " + " | ".join(cell(r, key) for r in results) + " |")
    if http_results:
        print(f"\nover HTTP: {json.dumps(asdict(http))}")
        print(table(http_results, http_rows(http)))
    notes = [n for r in results for n in r.notes] + [
        f"{r.target}: {note}"
        for r in http_results
        for note in ([r.error] if r.error else []) + r.notes
    ]
    for note in notes:
        print(f"- {note}")
    if args.json:
        runs = {
            "in_process": [asdict(r) for r in results],
            "http": [asdict(r) for r in http_results],
        }
        print(json.dumps(runs, indent=2))
    return 1 if notes else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
