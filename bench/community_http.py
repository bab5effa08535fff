"""The over-HTTP half of community_bench.py (issue 7): the same three measurements against
our server and Synapse as subprocesses on 127.0.0.1, through the Client-Server API only, so
that both are measured the same way. Not run on its own: community_bench.py --targets.

Per target (`homeserver run` on SQLite or PostgreSQL, or Synapse on SQLite; sync_bench's
prepare_target starts each, with rate limits off):

1. Push: --members users register, set a display name ("Member<i>") and join a public room;
   a second room holds two of them. Member 0 sends --messages messages one at a time into
   each room, each naming another member's display name (default push rules: that member's
   "contains display name" rule matches). Per message: the server process's CPU time from
   just before the PUT until 50 ms after its answer (work the server does after answering
   included), summed over its threads' /proc/<pid>/task/*/schedstat (nanoseconds; the clock
   ticks of /proc/<pid>/stat are 10 ms, coarser than one message), p50/p95; and the mean
   over the whole phase from /proc/<pid>/stat, which also counts threads that exited. Not
   counted: PostgreSQL's own processes, given apart as the machine's other CPU per message.
2. Search: 10 other users in one room; --http-search-messages messages of 8 words (the
   same seeded text as the in-process run) sent --concurrency at a time; then 100 POST
   /search for one or two words of a random message, by rank and by recent, 10 results each:
   latency p50/p95; every answer must hold results.
3. Relations: a thread root and --http-thread-events replies in its thread, sent the same
   way; GET /relations/{root}/m.thread pages of 50 (dir=b) and GET /threads (limit 20), 50
   times each: p50/p95; the first page must be full and /threads must list the thread.

The sizes of 2 and 3 are their own flags because Synapse persists client-API events at a
rate that makes the in-process sizes take far too long; every target gets the same size.
Before each measurement it waits (bounded) for the machine to be nearly idle.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from sync_bench import (
    Client,
    HttpError,
    User,
    bounded_gather,
    log,
    machine_busy_s,
    own_cpu_s,
    percentile,
    prepare_target,
    wait_for_quiet,
)
from sync_bench import Params as SyncParams

from tests.helpers.synapse_server import cpu_seconds

# How long after a send's answer its window stays open: the notifier, and whatever a server
# does in the background for a new event, run then.
SETTLE_S = 0.05
JsonDict = dict[str, Any]


@dataclass
class HttpParams:
    members: int = 1000
    messages: int = 200
    # Synapse wrote one room's client-API events at about 90/s here (this bench, 8 in
    # flight): 40,000 + 10,000 took it 9 minutes. The thread is the in-process size.
    search_messages: int = 40_000
    searches: int = 100
    thread_events: int = 10_000
    repeats: int = 50
    # Sends in flight while populating. Synapse 1.163.2 builds each new event on the 10
    # newest forward extremities of the room and does not wait for the one before it, so
    # with 32 in flight the room forks faster than it merges: 2,120 extremities after 4,000
    # messages, 19,851 after 38,000, and its send rate fell from 85/s to 11/s (half its
    # time in the query that picks prev_events). With 8 it keeps one to three.
    concurrency: int = 8
    setup_concurrency: int = 16
    quiet_wait: float = 60.0
    target_timeout: float = 2400.0
    postgres_admin_dsn: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    postgres_database: str = "bench_community_http"


@dataclass
class HttpResult:
    target: str
    error: str | None = None
    setup_s: float = 0.0
    # CPU ms per message, room of --members members and room of two.
    big_cpu_ms_p50: float = 0.0
    big_cpu_ms_p95: float = 0.0
    big_cpu_ms_mean: float = 0.0
    big_other_cpu_ms_mean: float = 0.0
    big_send_ms_p50: float = 0.0
    small_cpu_ms_p50: float = 0.0
    small_cpu_ms_p95: float = 0.0
    small_cpu_ms_mean: float = 0.0
    small_other_cpu_ms_mean: float = 0.0
    small_send_ms_p50: float = 0.0
    search_build_s: float = 0.0
    search_build_per_s: float = 0.0
    search_rank_ms_p50: float = 0.0
    search_rank_ms_p95: float = 0.0
    search_recent_ms_p50: float = 0.0
    search_recent_ms_p95: float = 0.0
    thread_build_s: float = 0.0
    thread_build_per_s: float = 0.0
    relations_ms_p50: float = 0.0
    relations_ms_p95: float = 0.0
    threads_ms_p50: float = 0.0
    threads_ms_p95: float = 0.0
    notes: list[str] = field(default_factory=list)


def process_cpu_ns(pid: int) -> int:
    """CPU time the live threads of `pid` have used, in nanoseconds (first field of each
    thread's schedstat)."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        raise RuntimeError(f"the server process {pid} is gone") from None
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended between the listing and the read
    return total


def stats(values: list[float]) -> tuple[float, float]:
    return round(percentile(values, 50), 2), round(percentile(values, 95), 2)


class CommunityClient(Client):
    """The shared client plus the calls this bench times (never retried)."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, needs_password: bool):
        super().__init__(session, base_url, needs_password)
        self.root = base_url + "/_matrix/client"

    async def set_displayname(self, user: User, name: str) -> None:
        path = f"/profile/{quote(user.user_id)}/displayname"
        await self._call("PUT", path, token=user.token, body={"displayname": name})

    async def send_event(self, user: User, room_id: str, txn: str, content: JsonDict) -> str:
        path = f"/rooms/{quote(room_id)}/send/m.room.message/{txn}"
        return str((await self._call("PUT", path, token=user.token, body=content))["event_id"])

    async def timed(
        self, method: str, path: str, user: User, body: JsonDict | None = None
    ) -> tuple[JsonDict, float]:
        """(reply, milliseconds) of one request under /_matrix/client."""
        started = time.perf_counter()
        async with self.session.request(
            method,
            self.root + path,
            json=body,
            headers=user.headers,
            timeout=aiohttp.ClientTimeout(total=120),
        ) as resp:
            raw = await resp.read()
            if resp.status != 200:
                raise HttpError(resp.status, raw.decode(errors="replace"))
        elapsed_ms = (time.perf_counter() - started) * 1000
        return json.loads(raw), elapsed_ms


async def register_many(
    client: CommunityClient, prefix: str, count: int, params: HttpParams
) -> list[User]:
    async def one(i: int) -> User:
        user_id, token = await client.register(f"{prefix}{i}")
        user = User(i, user_id, token)
        await client.set_displayname(user, f"Member{i}")
        return user

    return list(
        await bounded_gather(params.setup_concurrency, (partial(one, i) for i in range(count)))
    )


async def room_with(
    client: CommunityClient, users: list[User], name: str, params: HttpParams
) -> str:
    room_id = await client.create_room(users[0].token, name, "public_chat")
    joins = (partial(client.join, u.token, room_id) for u in users[1:])
    await bounded_gather(params.setup_concurrency, joins)
    return room_id


async def send_all(
    client: CommunityClient,
    users: list[User],
    room_id: str,
    count: int,
    content: Callable[[int], JsonDict],
    params: HttpParams,
) -> float:
    """`count` messages from `users` in turn, `concurrency` in flight; returns the seconds."""
    tag = f"{int(time.time() * 1000) % 10**8}"

    async def writer(k: int) -> None:
        for n in range(k, count, params.concurrency):
            await client.send_event(users[n % len(users)], room_id, f"b{tag}n{n}", content(n))

    started = time.perf_counter()
    await asyncio.gather(*(writer(k) for k in range(params.concurrency)))
    return time.perf_counter() - started


# --- 1. push ------------------------------------------------------------------------------------


async def measure_push(
    client: CommunityClient, pid: int, members: list[User], room_id: str, params: HttpParams
) -> tuple[list[float], list[float], float, float]:
    """Member 0 sends --messages messages one at a time into `room_id` (whose members are
    `members`); returns the per-message CPU ms, the send latencies, and the mean CPU ms per
    message of the server and of everything else on the machine."""
    sender = members[0]
    named = members[1 : min(8, len(members))]
    cpu_ms: list[float] = []
    walls: list[float] = []
    tag = f"{int(time.time() * 1000) % 10**8}"
    server_before, busy_before, own_before = cpu_seconds(pid) or 0.0, machine_busy_s(), own_cpu_s()
    for n in range(params.messages):
        body = f"hello Member{named[n % len(named)].index} and all, message {n}"
        content = {"msgtype": "m.text", "body": body}
        before = process_cpu_ns(pid)
        started = time.perf_counter()
        await client.send_event(sender, room_id, f"p{tag}n{n}", content)
        walls.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(SETTLE_S)
        cpu_ms.append((process_cpu_ns(pid) - before) / 1e6)
    server_s = (cpu_seconds(pid) or 0.0) - server_before
    other_s = machine_busy_s() - busy_before - server_s - (own_cpu_s() - own_before)
    per = 1000 / params.messages
    return cpu_ms, walls, round(server_s * per, 2), round(max(other_s, 0.0) * per, 2)


async def bench_push(
    client: CommunityClient, pid: int, params: HttpParams, result: HttpResult
) -> None:
    started = time.perf_counter()
    members = await register_many(client, "cbm", params.members, params)
    big = await room_with(client, members, "push big", params)
    small = await room_with(client, members[:2], "push small", params)
    result.setup_s = round(time.perf_counter() - started, 1)
    log(f"  {params.members} members registered and joined in {result.setup_s} s")
    for label, room_id, users in (("big", big, members), ("small", small, members[:2])):
        await wait_for_quiet(params.quiet_wait, result.notes, f"push ({label} room)")
        cpu, walls, mean, other = await measure_push(client, pid, users, room_id, params)
        p50, p95 = stats(cpu)
        setattr(result, f"{label}_cpu_ms_p50", p50)
        setattr(result, f"{label}_cpu_ms_p95", p95)
        setattr(result, f"{label}_cpu_ms_mean", mean)
        setattr(result, f"{label}_other_cpu_ms_mean", other)
        setattr(result, f"{label}_send_ms_p50", stats(walls)[0])
        log(f"  push, {len(users)} members: CPU p50 {p50} ms, p95 {p95} ms, mean {mean} ms")


# --- 2. search ----------------------------------------------------------------------------------


def corpus(count: int) -> list[str]:
    """The in-process run's text: 8 words each from a 5,000-word vocabulary, seeded."""
    rng = random.Random(7)
    vocabulary = [f"w{n:04d}{chr(97 + n % 26)}" for n in range(5000)]
    return [" ".join(rng.choices(vocabulary, k=8)) for _ in range(count)]


async def bench_search(
    client: CommunityClient, users: list[User], params: HttpParams, result: HttpResult
) -> None:
    rng = random.Random(11)
    room_id = await room_with(client, users, "search", params)
    texts = corpus(params.search_messages)
    seconds = await send_all(
        client,
        users,
        room_id,
        len(texts),
        lambda n: {"msgtype": "m.text", "body": texts[n]},
        params,
    )
    result.search_build_s = round(seconds, 1)
    result.search_build_per_s = round(len(texts) / seconds, 1)
    log(f"  {len(texts)} messages in {result.search_build_s} s ({result.search_build_per_s}/s)")
    for order in ("rank", "recent"):
        await wait_for_quiet(params.quiet_wait, result.notes, f"search by {order}")
        empty = 0
        times = []
        for _ in range(params.searches):
            # Words from one real message, as someone remembering it would type them.
            terms = " ".join(rng.sample(rng.choice(texts).split(), rng.choice((1, 2))))
            category = {"search_term": terms, "order_by": order, "filter": {"limit": 10}}
            body = {"search_categories": {"room_events": category}}
            reply, elapsed_ms = await client.timed("POST", "/v3/search", users[0], body)
            times.append(elapsed_ms)
            if not reply["search_categories"]["room_events"].get("results"):
                empty += 1
        p50, p95 = stats(times)
        setattr(result, f"search_{order}_ms_p50", p50)
        setattr(result, f"search_{order}_ms_p95", p95)
        log(f"  search by {order}: p50 {p50} ms, p95 {p95} ms")
        if empty:
            result.notes.append(f"{empty} {order} searches found nothing")


# --- 3. relations -------------------------------------------------------------------------------


async def bench_relations(
    client: CommunityClient, users: list[User], params: HttpParams, result: HttpResult
) -> None:
    room_id = await room_with(client, users, "thread", params)
    root_id = await client.send_event(
        users[0], room_id, "root", {"msgtype": "m.text", "body": "thread root"}
    )
    relates = {"rel_type": "m.thread", "event_id": root_id}
    seconds = await send_all(
        client,
        users,
        room_id,
        params.thread_events,
        lambda n: {"msgtype": "m.text", "body": f"reply {n}", "m.relates_to": relates},
        params,
    )
    result.thread_build_s = round(seconds, 1)
    result.thread_build_per_s = round(params.thread_events / seconds, 1)
    log(f"  {params.thread_events} thread replies in {result.thread_build_s} s")
    room = f"/v1/rooms/{quote(room_id)}"
    paths = {
        "relations": f"{room}/relations/{quote(root_id)}/m.thread?limit=50&dir=b",
        "threads": f"{room}/threads?limit=20",
    }
    for name, path in paths.items():
        await wait_for_quiet(params.quiet_wait, result.notes, name)
        times = []
        for _ in range(params.repeats):
            reply, elapsed_ms = await client.timed("GET", path, users[1])
            times.append(elapsed_ms)
        p50, p95 = stats(times)
        setattr(result, f"{name}_ms_p50", p50)
        setattr(result, f"{name}_ms_p95", p95)
        log(f"  /{name}: p50 {p50} ms, p95 {p95} ms")
        chunk = reply.get("chunk", [])
        if name == "relations" and len(chunk) != 50:
            result.notes.append(f"check failed: /relations gave {len(chunk)} events, not 50")
        if name == "threads" and [e.get("event_id") for e in chunk] != [root_id]:
            result.notes.append(f"check failed: /threads gave {len(chunk)} threads, not 1")


# --- one target ---------------------------------------------------------------------------------


async def run_target(name: str, params: HttpParams, keep: bool) -> HttpResult:
    result = HttpResult(target=name)
    directory = Path(tempfile.mkdtemp(prefix=f"community_bench_{name}_"))
    log(f"{name}: working in {directory}")
    postgres = SyncParams(
        postgres_admin_dsn=params.postgres_admin_dsn, postgres_database=params.postgres_database
    )
    target = await prepare_target(name, directory, postgres)
    try:
        await target.server.start()
        # Many joins and sends in flight: more connections than aiohttp's default 100.
        connector = aiohttp.TCPConnector(limit=max(100, 2 * params.concurrency))
        async with aiohttp.ClientSession(connector=connector) as session:
            client = CommunityClient(session, target.server.base_url, target.needs_password)
            log(f"{name}: push")
            await bench_push(client, target.server.pid, params, result)
            users = await register_many(client, "cbs", 10, params)
            log(f"{name}: search")
            await bench_search(client, users, params, result)
            log(f"{name}: relations")
            await bench_relations(client, users, params, result)
    except Exception as e:  # reported in the results, the other targets still run
        result.error = f"{type(e).__name__}: {e}"
        log(f"{name}: FAILED: {result.error}")
    finally:
        code = await target.server.stop()
        if code not in (0, None):
            result.notes.append(f"server exited with status {code}")
        if keep:
            log(f"{name}: kept {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)
    return result


async def run_targets(names: list[str], params: HttpParams, keep: bool) -> list[HttpResult]:
    results = []
    for name in names:
        try:
            result = await asyncio.wait_for(
                run_target(name, params, keep), timeout=params.target_timeout
            )
        except TimeoutError:
            result = HttpResult(name, error=f"did not finish in {params.target_timeout:g} s")
        results.append(result)
    return results


def _pair(r: HttpResult, key: str) -> str:
    return f"{getattr(r, key + '_ms_p50'):g} / {getattr(r, key + '_ms_p95'):g} ms"


def _push_rows(label: str, size: str) -> list[tuple[str, Callable[[Any], str]]]:
    def value(r: HttpResult, key: str) -> str:
        return f"{getattr(r, f'{label}_{key}'):g} ms"

    return [
        (f"server CPU per message, {size}, p50 / p95", lambda r: _pair(r, f"{label}_cpu")),
        (f"server CPU per message, {size}, mean", lambda r: value(r, "cpu_ms_mean")),
        (
            f"other processes' CPU per message, {size}, mean",
            lambda r: value(r, "other_cpu_ms_mean"),
        ),
        (f"send latency, {size}, p50", lambda r: value(r, "send_ms_p50")),
    ]


def rows(params: HttpParams) -> list[tuple[str, Callable[[Any], str]]]:
    return [
        *_push_rows("big", f"{params.members} members"),
        *_push_rows("small", "2 members"),
        (
            f"search corpus of {params.search_messages:,} messages written",
            lambda r: f"{r.search_build_s:g} s ({r.search_build_per_s:g}/s)",
        ),
        ("search by rank, p50 / p95", lambda r: _pair(r, "search_rank")),
        ("search by recent, p50 / p95", lambda r: _pair(r, "search_recent")),
        (
            f"thread of {params.thread_events:,} replies written",
            lambda r: f"{r.thread_build_s:g} s ({r.thread_build_per_s:g}/s)",
        ),
        ("/relations page of 50, p50 / p95", lambda r: _pair(r, "relations")),
        ("/threads, p50 / p95", lambda r: _pair(r, "threads")),
        ("setup: register, name and join the members", lambda r: f"{r.setup_s:g} s"),
    ]
