"""Sync benchmark (issue 3): users long-polling /sync while messages are sent at a steady rate,
initial sync of a user in many large rooms, and server memory with many idle long-polls.

Runs each target as a subprocess on 127.0.0.1 and drives it over plain HTTP with aiohttp
(one ClientSession), through the Client-Server API only: register (m.login.dummy), createRoom,
join, PUT send, GET sync with since and timeout. Targets:

    ours-sqlite     `homeserver run` on SQLite
    ours-postgres   `homeserver run` on PostgreSQL (a fresh database `bench_sync` on loopback)
    synapse         Synapse from the same virtualenv, on SQLite

Per target, in order:

1. Initial sync: one user joined to --big-rooms rooms of --big-events messages each (plus the
   rooms' creation events). For our server these are written before it starts, through its own
   domain handlers (a subprocess of this script, `_build-dataset`); for Synapse through its
   client API with bounded concurrency, after which Synapse is restarted. The first /sync
   after the start is "cold", then the median of 3 more is "warm" (each request carries a
   different inline filter, so no response cache answers it). Synapse persists only some 75
   client-API events/s on this kind of machine, so by default its rooms get
   --synapse-big-events 100 messages each (about 2.5 minutes); the full 1,000 takes it some
   25 minutes: pass --synapse-big-events 1000 --dataset-cache DIR to build it once and reuse it.
2. Load: --users users, each joined to --rooms-per-user of the --rooms rooms, each keeping one
   /sync long-poll open (since + timeout); messages are sent open-loop at --rate per second for
   --duration seconds, round-robin over the rooms, each by a member of its room. Every message
   carries a unique `bench_id`; every recipient (every member of the room, the sender too) must
   see it exactly once. Delivery latency runs from the start of the send request to the moment
   the recipient's /sync response holding the event was read.
3. Idle: --idle users (the load users, and more users in no room) each hold one /sync
   long-poll open with a long timeout; after --idle-settle seconds the server's VmRSS is read,
   then every poll is cancelled.

Before the initial sync and before the load it waits (--quiet-wait, bounded) for the machine to
be nearly idle, and reports the CPU time other processes took during the load: on two cores,
anything else running shows up as the server's latency.

Server RSS is VmRSS of the server process from /proc (PostgreSQL's own processes not included),
sampled every 0.25 s for the peak. Every loop here is bounded in count and in time.

    .venv/bin/python bench/sync_bench.py [--targets ours-sqlite ours-postgres synapse]
        [--users 200] [--rooms 20] [--rate 100] [--duration 20] [--big-rooms 100]
        [--big-events 1000] [--idle 1000] [--skip-synapse] [--json]
    .venv/bin/python bench/sync_bench.py table RUN.json [MORE.json ...]   # a saved run's table

Run by hand; results go in bench/README.md. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import math
import os
import platform
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tests.helpers.synapse_server import (  # noqa: E402
    ServerProcess,
    cpu_seconds,
    free_port,
    rss_kib,
    synapse_process,
)

ALL_TARGETS = ("ours-sqlite", "ours-postgres", "synapse")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
BIG_USER = "big"
PASSWORD = "bench-password-1"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- parameters and results ---------------------------------------------------------------------


@dataclass
class Params:
    users: int = 200
    rooms: int = 20
    rooms_per_user: int = 1
    rate: float = 100.0
    duration: float = 20.0
    # After the last send: wait for missing deliveries until none has arrived for `drain`
    # seconds, and never longer than `drain_max` seconds.
    drain: float = 10.0
    drain_max: float = 120.0
    poll_timeout_ms: int = 30_000
    timeline_limit: int = 100
    big_rooms: int = 100
    big_events: int = 1000
    # Synapse persists some 100 client-API events/s here: 100 x 1,000 would take it ~17 min.
    synapse_big_events: int = 100
    dataset_cache: str | None = None
    big_concurrency: int = 32
    warm_runs: int = 3
    idle: int = 1000
    idle_timeout_ms: int = 300_000
    idle_settle: float = 10.0
    setup_concurrency: int = 16
    target_timeout: float = 900.0
    quiet_wait: float = 120.0
    postgres_admin_dsn: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    postgres_database: str = "bench_sync"


@dataclass
class Result:
    target: str
    startup_s: float = 0.0
    dataset_build_s: float = 0.0
    dataset_events: int = 0
    dataset_rooms: int = 0
    initial_sync_cold_ms: float = 0.0
    initial_sync_warm_ms: float = 0.0
    initial_sync_rooms: int = 0
    initial_sync_bytes: int = 0
    setup_s: float = 0.0
    messages_planned: int = 0
    messages_sent: int = 0
    send_errors: int = 0
    send_p50_ms: float = 0.0
    send_p99_ms: float = 0.0
    send_max_ms: float = 0.0
    msgs_per_s: float = 0.0
    expected_deliveries: int = 0
    deliveries: int = 0
    lost: int = 0
    duplicated: int = 0
    unexpected: int = 0
    limited_timelines: int = 0
    delivery_p50_ms: float = 0.0
    delivery_p99_ms: float = 0.0
    delivery_max_ms: float = 0.0
    sync_responses: int = 0
    sync_errors: int = 0
    sync_responses_per_s: float = 0.0
    server_cpu_load_s: float = 0.0
    load_wall_s: float = 0.0
    drain_s: float = 0.0
    client_cpu_load_s: float = 0.0
    # CPU seconds the whole machine spent during the load, less the server's and this client's
    # (PostgreSQL's backends and anything else running on the machine).
    other_cpu_load_s: float = 0.0
    idle_polls_open: int = 0
    idle_early_returns: int = 0
    idle_errors: int = 0
    rss_start_mb: float = 0.0
    rss_after_initial_sync_mb: float = 0.0
    rss_after_load_mb: float = 0.0
    rss_idle_polls_mb: float = 0.0
    rss_peak_mb: float = 0.0
    error: str | None = None
    notes: list[str] = field(default_factory=list)


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def machine_busy_s() -> float:
    """CPU seconds all cores have spent busy since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def wait_for_quiet(
    max_wait_s: float, notes: list[str], phase: str, threshold: float = 0.3
) -> None:
    """Wait (at most max_wait_s) until the machine is nearly idle for 3 s: other work on this
    2-core machine (test suites, builds) would be measured as the server's latency."""
    deadline = time.perf_counter() + max_wait_s
    while True:
        before = machine_busy_s()
        await asyncio.sleep(3.0)
        busy = (machine_busy_s() - before) / 3.0
        if busy < threshold:
            return
        if time.perf_counter() > deadline:
            notes.append(f"the machine was still busy ({busy:.2f} cores) when the {phase} started")
            log(f"  machine busy ({busy:.2f} cores): starting anyway")
            return
        log(f"  machine busy ({busy:.2f} cores): waiting for it to settle")


def mb(kib: int | None) -> float:
    return round((kib or 0) / 1024, 1)


# --- the HTTP client ----------------------------------------------------------------------------


class HttpError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status = status


@dataclass
class User:
    index: int
    user_id: str
    token: str
    rooms: list[str] = field(default_factory=list)
    since: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


class Client:
    """Raw C-S API calls over one aiohttp session."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, needs_password: bool):
        self.session = session
        self.base = base_url + "/_matrix/client/v3"
        self.needs_password = needs_password

    async def _call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        timeout_s: float = 60.0,
        retries: int = 5,
    ) -> dict[str, Any]:
        """A setup call: retried (bounded) on 429 and 5xx."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        for attempt in range(retries + 1):
            async with self.session.request(
                method,
                self.base + path,
                json=body,
                params=params,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as resp:
                text = await resp.text()
                if resp.status == 200:
                    return json.loads(text) if text else {}
                if attempt < retries and (resp.status == 429 or resp.status >= 500):
                    await asyncio.sleep(0.2 * (attempt + 1))
                    continue
                raise HttpError(resp.status, text)
        raise AssertionError("unreachable")

    async def register(self, username: str) -> tuple[str, str]:
        """Register with the m.login.dummy stage (two requests: the first gets a session)."""
        body: dict[str, Any] = {"username": username}
        if self.needs_password:
            body["password"] = PASSWORD
        async with self.session.post(
            self.base + "/register", json=body, timeout=aiohttp.ClientTimeout(total=60)
        ) as resp:
            first = await resp.json()
            if resp.status != 401 or "session" not in first:
                raise HttpError(resp.status, json.dumps(first))
        body["auth"] = {"type": "m.login.dummy", "session": first["session"]}
        reply = await self._call("POST", "/register", body=body)
        return reply["user_id"], reply["access_token"]

    async def create_room(self, token: str, name: str, preset: str) -> str:
        reply = await self._call(
            "POST", "/createRoom", token=token, body={"preset": preset, "name": name}
        )
        return str(reply["room_id"])

    async def join(self, token: str, room_id: str) -> None:
        await self._call("POST", f"/rooms/{quote(room_id)}/join", token=token, body={})

    async def send(self, token: str, room_id: str, txn: str, content: dict[str, Any]) -> None:
        await self._call(
            "PUT",
            f"/rooms/{quote(room_id)}/send/m.room.message/{txn}",
            token=token,
            body=content,
        )

    def sync_request(
        self, user: User, filter_json: str, timeout_ms: int | None, since: str | None
    ) -> Any:
        params = {"filter": filter_json}
        if since is not None:
            params["since"] = since
        if timeout_ms is not None:
            params["timeout"] = str(timeout_ms)
        wait_s = (timeout_ms or 0) / 1000 + 120
        return self.session.get(
            self.base + "/sync",
            params=params,
            headers=user.headers,
            timeout=aiohttp.ClientTimeout(total=wait_s),
        )

    async def sync(
        self, user: User, filter_json: str, timeout_ms: int | None = None, since: str | None = None
    ) -> tuple[dict[str, Any], int]:
        async with self.sync_request(user, filter_json, timeout_ms, since) as resp:
            raw = await resp.read()
            if resp.status != 200:
                raise HttpError(resp.status, raw.decode(errors="replace"))
        return json.loads(raw), len(raw)


async def bounded_gather(
    limit: int, factories: Iterable[Callable[[], Awaitable[Any]]]
) -> list[Any]:
    semaphore = asyncio.Semaphore(limit)

    async def run(factory: Callable[[], Awaitable[Any]]) -> Any:
        async with semaphore:
            return await factory()

    return await asyncio.gather(*(run(f) for f in factories))


class RssSampler:
    """Samples the server's VmRSS every `interval` seconds and keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_kib = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            value = rss_kib(self.pid)
            if value is None:
                return
            self.peak_kib = max(self.peak_kib, value)
            await asyncio.sleep(self.interval)

    def now_kib(self) -> int:
        value = rss_kib(self.pid) or 0
        self.peak_kib = max(self.peak_kib, value)
        return value

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


# --- targets ------------------------------------------------------------------------------------


def _homeserver_argv() -> list[str]:
    script = Path(sys.executable).parent / "homeserver"
    return [str(script)] if script.exists() else [sys.executable, "-m", "homeserver"]


def _check_loopback_dsn(dsn: str) -> None:
    host = urlsplit(dsn).hostname
    if host not in LOOPBACK:
        raise SystemExit(f"refusing a PostgreSQL DSN that is not on loopback: host {host!r}")


async def recreate_postgres_database(admin_dsn: str, database: str) -> str:
    """DROP and CREATE `database`; returns the DSN of the new database."""
    import asyncpg

    _check_loopback_dsn(admin_dsn)
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{database}"')
        await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()
    parts = urlsplit(admin_dsn)
    return parts._replace(path=f"/{database}").geturl()


def write_our_config(directory: Path, engine: str, dsn: str | None) -> Path:
    config_path = directory / "homeserver.yaml"
    subprocess.run(
        [
            *_homeserver_argv(),
            "generate-config",
            "--server-name",
            "bench.local",
            "--config",
            str(config_path),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    config = yaml.safe_load(config_path.read_text())
    config["log_level"] = "WARNING"  # as Synapse's in this bench: no line per request
    config["registration"]["enabled"] = True
    for bucket in config["limits"].values():
        if isinstance(bucket, dict) and "per_second" in bucket:
            bucket["per_second"] = 0
    if engine == "postgres":
        assert dsn is not None
        config["database"] = {"engine": "postgres", "dsn": dsn, "pool_min": 1, "pool_max": 10}
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return config_path


@dataclass
class Target:
    name: str
    server: ServerProcess
    server_name: str
    needs_password: bool
    config_path: Path
    is_synapse: bool


async def prepare_target(name: str, directory: Path, params: Params) -> Target:
    port = free_port()
    if name == "synapse":
        server = synapse_process(directory, port)
        return Target(name, server, "synapse.local", True, directory / "homeserver.yaml", True)
    engine = "postgres" if name == "ours-postgres" else "sqlite"
    dsn = None
    if engine == "postgres":
        dsn = await recreate_postgres_database(params.postgres_admin_dsn, params.postgres_database)
    config_path = write_our_config(directory, engine, dsn)
    server = ServerProcess(
        name=name,
        argv=[
            *_homeserver_argv(),
            "run",
            "--config",
            str(config_path),
            "--listen",
            f"127.0.0.1:{port}",
        ],
        port=port,
        log_path=directory / "server.log",
        cwd=directory,
    )
    return Target(name, server, "bench.local", False, config_path, False)


# --- phase 1: the initial sync data set ---------------------------------------------------------


async def build_dataset_ours(target: Target, params: Params) -> float:
    """Write the big user's rooms through our domain handlers, in a subprocess, before the
    server starts (it is the database's only writer while it runs)."""
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(Path(__file__).resolve()),
        "_build-dataset",
        "--config",
        str(target.config_path),
        "--user",
        f"@{BIG_USER}:{target.server_name}",
        "--rooms",
        str(params.big_rooms),
        "--events",
        str(params.big_events),
        "--concurrency",
        "25",
    )
    try:
        code = await asyncio.wait_for(proc.wait(), timeout=params.target_timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError("building the data set took too long") from None
    if code != 0:
        raise RuntimeError(f"building the data set failed with status {code}")
    return time.perf_counter() - started


async def build_dataset_api(client: Client, big: User, params: Params, events: int) -> float:
    """The same rooms through the client API: createRoom, then messages with bounded
    concurrency (one request per room at a time, at most big_concurrency rooms at once)."""
    started = time.perf_counter()
    rooms = await bounded_gather(
        8,
        (
            (lambda r=r: client.create_room(big.token, f"big {r}", "private_chat"))
            for r in range(params.big_rooms)
        ),
    )
    created = time.perf_counter()
    log(f"  {len(rooms)} rooms created in {created - started:.1f} s")

    async def fill(room_id: str) -> None:
        for k in range(events):
            await client.send(
                big.token, room_id, f"h{k}", {"msgtype": "m.text", "body": f"history {k}"}
            )

    fills = [lambda room_id=room_id: fill(room_id) for room_id in rooms]
    await bounded_gather(params.big_concurrency, fills)
    done = time.perf_counter()
    log(f"  {len(rooms) * events} messages sent, {len(rooms) * events / (done - created):.0f}/s")
    return done - started


async def build_dataset_subcommand(argv: list[str]) -> None:
    """`sync_bench.py _build-dataset`: run by build_dataset_ours in a subprocess."""
    from homeserver.config import load_config
    from homeserver.core import build_core
    from homeserver.crypto.keys import load_or_create_server_keys
    from homeserver.handlers.room import RoomCreationRequest
    from homeserver.storage import open_storage

    parser = argparse.ArgumentParser(prog="sync_bench.py _build-dataset")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--rooms", type=int, required=True)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=25, help="senders per room")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    storage = await open_storage(config.database)
    try:
        keys = load_or_create_server_keys(config.signing_key_path)
        core = build_core(storage, config.server_name, keys)
        try:
            room_ids = []
            for r in range(args.rooms):
                request = RoomCreationRequest(args.user, preset="private_chat", name=f"big {r}")
                room_ids.append(await core.rooms.create_room(request))

            # Several senders per room: the per-room queue commits what has queued up in one
            # transaction, where one sender per room would pay a commit per event.
            async def sender(room_id: str, worker: int) -> None:
                for k in range(worker, args.events, args.concurrency):
                    await core.events.send_event(
                        room_id,
                        "m.room.message",
                        args.user,
                        {"msgtype": "m.text", "body": f"history {k}"},
                    )

            for first in range(0, len(room_ids), 4):
                await asyncio.gather(
                    *(
                        sender(room_id, w)
                        for room_id in room_ids[first : first + 4]
                        for w in range(args.concurrency)
                    )
                )
        finally:
            await core.persister.close()
    finally:
        await storage.close()


def initial_sync_filter(nonce: int) -> str:
    # A different filter string per request: Synapse keeps finished /sync responses in a
    # response cache keyed by (among others) the filter parameter for a couple of minutes.
    return json.dumps(
        {"room": {"timeline": {"limit": 10}}, "account_data": {"not_types": [f"bench.n{nonce}"]}},
        separators=(",", ":"),
    )


async def measure_initial_sync(client: Client, big: User, params: Params, result: Result) -> None:
    times = []
    for run in range(1 + params.warm_runs):
        started = time.perf_counter()
        body, size = await client.sync(big, initial_sync_filter(run))
        times.append((time.perf_counter() - started) * 1000)
        join = body.get("rooms", {}).get("join", {})
        result.initial_sync_rooms = len(join)
        result.initial_sync_bytes = size
        if len(join) != params.big_rooms:
            result.notes.append(
                f"initial sync returned {len(join)} joined rooms, expected {params.big_rooms}"
            )
    result.initial_sync_cold_ms = round(times[0], 1)
    result.initial_sync_warm_ms = round(statistics.median(times[1:]) if times[1:] else 0.0, 1)
    log(f"  initial sync: cold {times[0]:.0f} ms, warm runs {[round(t) for t in times[1:]]} ms")


# --- phase 2: the load --------------------------------------------------------------------------


def load_filter(params: Params) -> str:
    # A timeline limit far above what arrives between two polls, so no timeline is `limited`.
    return json.dumps({"room": {"timeline": {"limit": params.timeline_limit}}})


async def register_users(client: Client, count: int, prefix: str, params: Params) -> list[User]:
    async def one(i: int) -> User:
        user_id, token = await client.register(f"{prefix}{i}")
        return User(i, user_id, token)

    return await bounded_gather(
        params.setup_concurrency, [lambda i=i: one(i) for i in range(count)]
    )


async def setup_rooms(
    client: Client, users: list[User], params: Params
) -> tuple[list[str], list[list[User]]]:
    """Rooms 0..R-1; user u joins rooms (u*K + j) mod R for j < K. Each room is created by its
    first member, the others join."""
    k, r = params.rooms_per_user, params.rooms
    members: list[list[User]] = [[] for _ in range(r)]
    for user in users:
        for j in range(k):
            members[(user.index * k + j) % r].append(user)
    empty = [i for i, m in enumerate(members) if not m]
    if empty:
        raise SystemExit(f"rooms {empty} have no members: use more users or fewer rooms")
    room_ids = await bounded_gather(
        params.setup_concurrency,
        [
            (lambda i=i: client.create_room(members[i][0].token, f"load {i}", "public_chat"))
            for i in range(r)
        ],
    )
    joins = []
    for i, room_members in enumerate(members):
        room_members[0].rooms.append(room_ids[i])
        for user in room_members[1:]:
            user.rooms.append(room_ids[i])
            joins.append(lambda u=user, room=room_ids[i]: client.join(u.token, room))
    await bounded_gather(params.setup_concurrency, joins)
    return room_ids, members


async def run_load(
    client: Client,
    target: Target,
    users: list[User],
    room_ids: list[str],
    members: list[list[User]],
    params: Params,
    result: Result,
) -> None:
    flt = load_filter(params)
    room_index = {room_id: i for i, room_id in enumerate(room_ids)}
    # Tokens to start from, taken before the first message.
    await bounded_gather(
        params.setup_concurrency,
        [(lambda u=u: _initial_token(client, u, flt)) for u in users],
    )

    n_messages = int(params.rate * params.duration)
    result.messages_planned = n_messages
    send_start: list[float] = [0.0] * n_messages
    send_ok: list[bool] = [False] * n_messages
    send_latency: list[float] = []
    # counts[user index][message] = how often that user's /sync returned the message.
    counts: list[dict[int, int]] = [{} for _ in users]
    delivery_ms: list[float] = []
    stats = {"responses": 0, "errors": 0, "limited": 0, "unexpected": 0, "first": 0}
    member_sets = [{u.index for u in m} for m in members]
    stop = asyncio.Event()

    async def poll(user: User) -> None:
        mine = counts[user.index]
        while not stop.is_set():
            try:
                async with client.sync_request(
                    user, flt, params.poll_timeout_ms, user.since
                ) as resp:
                    raw = await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError):
                stats["errors"] += 1
                await asyncio.sleep(0.1)
                continue
            received = time.perf_counter()
            if status != 200:
                stats["errors"] += 1
                await asyncio.sleep(0.1)
                continue
            stats["responses"] += 1
            body = json.loads(raw)
            user.since = body["next_batch"]
            for room_id, room in body.get("rooms", {}).get("join", {}).items():
                timeline = room.get("timeline", {})
                if timeline.get("limited"):
                    stats["limited"] += 1
                for event in timeline.get("events", ()):
                    content = event.get("content", {})
                    bench_id = content.get("bench_id") if isinstance(content, dict) else None
                    if not isinstance(bench_id, int) or not 0 <= bench_id < n_messages:
                        continue
                    ri = room_index.get(room_id)
                    if ri is None or user.index not in member_sets[ri]:
                        stats["unexpected"] += 1
                    seen = mine.get(bench_id, 0)
                    mine[bench_id] = seen + 1
                    if seen == 0:
                        stats["first"] += 1
                        delivery_ms.append((received - send_start[bench_id]) * 1000)

    async def send_one(i: int) -> None:
        ri = i % len(room_ids)
        room_members = members[ri]
        sender = room_members[(i // len(room_ids)) % len(room_members)]
        content = {"msgtype": "m.text", "body": f"bench message {i}", "bench_id": i}
        started = send_start[i] = time.perf_counter()
        try:
            await client._call(
                "PUT",
                f"/rooms/{quote(room_ids[ri])}/send/m.room.message/t{i}",
                token=sender.token,
                body=content,
                timeout_s=60,
                retries=0,
            )
        except (HttpError, aiohttp.ClientError, TimeoutError) as e:
            result.send_errors += 1
            if result.send_errors <= 3:
                result.notes.append(f"send {i} failed: {e}")
            return
        send_latency.append((time.perf_counter() - started) * 1000)
        send_ok[i] = True

    await wait_for_quiet(params.quiet_wait, result.notes, "load")
    pollers = [asyncio.create_task(poll(u)) for u in users]
    await asyncio.sleep(1.0)  # let every poll reach the server and settle
    cpu_before = cpu_seconds(target.server.pid) or 0.0
    client_before, machine_before = own_cpu_s(), machine_busy_s()
    log(f"  load: {n_messages} messages at {params.rate:g}/s to {len(users)} users")
    first_send = time.perf_counter() + 0.05
    hard_stop = first_send + params.duration * 3 + 60
    senders = []
    for i in range(n_messages):
        delay = first_send + i / params.rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if time.perf_counter() > hard_stop:
            result.notes.append(f"sending stopped at message {i}: the client fell behind")
            break
        senders.append(asyncio.create_task(send_one(i)))
    await asyncio.gather(*senders)
    sends_done = time.perf_counter()
    sent = sum(send_ok)
    result.messages_sent = sent
    result.msgs_per_s = round(sent / (sends_done - first_send), 1) if sent else 0.0
    expected = sum(len(members[i % len(room_ids)]) for i in range(n_messages) if send_ok[i])
    result.expected_deliveries = expected
    # Drain: wait for the last deliveries while they keep coming (bounded).
    drain_deadline = time.perf_counter() + params.drain_max
    last_progress, last_count = time.perf_counter(), stats["first"]
    while stats["first"] < expected and time.perf_counter() < drain_deadline:
        await asyncio.sleep(0.05)
        if stats["first"] != last_count:
            last_progress, last_count = time.perf_counter(), stats["first"]
        elif time.perf_counter() - last_progress > params.drain:
            break
    result.drain_s = round(time.perf_counter() - sends_done, 1)
    await asyncio.sleep(0.5)  # anything arriving twice shows up here
    load_end = time.perf_counter()
    server_cpu = (cpu_seconds(target.server.pid) or 0.0) - cpu_before
    client_cpu = own_cpu_s() - client_before
    result.server_cpu_load_s = round(server_cpu, 1)
    result.client_cpu_load_s = round(client_cpu, 1)
    result.other_cpu_load_s = round(machine_busy_s() - machine_before - server_cpu - client_cpu, 1)
    result.load_wall_s = round(load_end - first_send, 1)
    stop.set()
    for task in pollers:
        task.cancel()
    await asyncio.gather(*pollers, return_exceptions=True)

    lost = duplicated = deliveries = 0
    for i in range(n_messages):
        if not send_ok[i]:
            continue
        for user in members[i % len(room_ids)]:
            seen = counts[user.index].get(i, 0)
            deliveries += seen
            if seen == 0:
                lost += 1
            elif seen > 1:
                duplicated += seen - 1
    result.deliveries = deliveries
    result.lost = lost
    result.duplicated = duplicated
    result.unexpected = stats["unexpected"]
    result.limited_timelines = stats["limited"]
    result.sync_responses = stats["responses"]
    result.sync_errors = stats["errors"]
    result.sync_responses_per_s = round(stats["responses"] / (load_end - first_send), 1)
    result.send_p50_ms = round(percentile(send_latency, 50), 1)
    result.send_p99_ms = round(percentile(send_latency, 99), 1)
    result.send_max_ms = round(max(send_latency, default=0.0), 1)
    result.delivery_p50_ms = round(percentile(delivery_ms, 50), 1)
    result.delivery_p99_ms = round(percentile(delivery_ms, 99), 1)
    result.delivery_max_ms = round(max(delivery_ms, default=0.0), 1)
    log(
        f"  load: sent {sent}/{n_messages}, {result.msgs_per_s} msg/s; send p50/p99 "
        f"{result.send_p50_ms}/{result.send_p99_ms} ms; delivery p50/p99 "
        f"{result.delivery_p50_ms}/{result.delivery_p99_ms} ms; lost {lost}, dup {duplicated}"
    )


async def _initial_token(client: Client, user: User, flt: str) -> None:
    body, _ = await client.sync(user, flt)
    user.since = body["next_batch"]


# --- phase 3: idle long-polls -------------------------------------------------------------------


async def run_idle(
    client: Client, users: list[User], sampler: RssSampler, params: Params, result: Result
) -> None:
    flt = load_filter(params)
    await bounded_gather(
        params.setup_concurrency,
        [(lambda u=u: _initial_token(client, u, flt)) for u in users],
    )
    state = {"open": 0, "early": 0, "errors": 0}
    stop = asyncio.Event()

    async def hold(user: User) -> None:
        # Bounded: each poll lasts at most idle_timeout_ms, and the tasks are cancelled after
        # the measurement; a poll that returns early (e.g. the user's own presence) is renewed.
        for _ in range(100):
            if stop.is_set():
                return
            state["open"] += 1
            try:
                async with client.sync_request(
                    user, flt, params.idle_timeout_ms, user.since
                ) as resp:
                    raw = await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError):
                state["errors"] += 1
                await asyncio.sleep(0.5)
                continue
            finally:
                state["open"] -= 1
            if status != 200:
                state["errors"] += 1
                await asyncio.sleep(0.5)
                continue
            state["early"] += 1
            user.since = json.loads(raw)["next_batch"]

    log(f"  idle: opening {len(users)} long-polls")
    tasks = [asyncio.create_task(hold(u)) for u in users]
    await asyncio.sleep(params.idle_settle)
    samples = []
    for _ in range(5):
        samples.append(sampler.now_kib())
        await asyncio.sleep(0.4)
    result.rss_idle_polls_mb = mb(max(samples))
    result.idle_polls_open = state["open"]
    result.idle_early_returns = state["early"]
    result.idle_errors = state["errors"]
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    log(
        f"  idle: {result.idle_polls_open} polls open, RSS {result.rss_idle_polls_mb} MB "
        f"({result.idle_early_returns} early returns, {result.idle_errors} errors)"
    )


# --- one target ---------------------------------------------------------------------------------


SYNAPSE_DB_FILES = (
    "homeserver.db",
    "homeserver.db-wal",
    "homeserver.db-shm",
    "synapse.local.signing.key",
)


async def synapse_dataset(
    client: Client, target: Target, directory: Path, params: Params, events: int, result: Result
) -> User:
    """Build the big user's rooms on Synapse through its API (then stop it), or copy them from
    --dataset-cache when an earlier run built the same size there."""
    user_id = f"@{BIG_USER}:{target.server_name}"
    cache = None
    if params.dataset_cache:
        cache = Path(params.dataset_cache) / f"synapse-{params.big_rooms}x{events}"
        token_file = cache / "token.json"
        if token_file.exists():
            for name in SYNAPSE_DB_FILES:
                if (cache / name).exists():
                    shutil.copy2(cache / name, directory / name)
            result.notes.append(f"Synapse data set copied from {cache}")
            log(f"  data set copied from {cache}")
            return User(-1, user_id, json.loads(token_file.read_text())["token"])
    await target.server.start()
    _, token = await client.register(BIG_USER)
    big = User(-1, user_id, token)
    log(f"  building {params.big_rooms} x {events} events through the API")
    result.dataset_build_s = round(await build_dataset_api(client, big, params, events), 1)
    await target.server.stop()
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        for name in SYNAPSE_DB_FILES:
            if (directory / name).exists():
                shutil.copy2(directory / name, cache / name)
        (cache / "token.json").write_text(json.dumps({"token": token}))
    return big


async def run_target(name: str, params: Params, keep: bool) -> Result:
    result = Result(target=name)
    directory = Path(tempfile.mkdtemp(prefix=f"sync_bench_{name}_"))
    log(f"{name}: working in {directory}")
    target = await prepare_target(name, directory, params)
    connector = aiohttp.TCPConnector(limit=params.idle + params.users + 500, limit_per_host=0)
    session = aiohttp.ClientSession(connector=connector)
    sampler: RssSampler | None = None
    try:
        client = Client(session, target.server.base_url, target.needs_password)
        # Phase 1: the big user's rooms, then a fresh start.
        if target.is_synapse:
            events = params.synapse_big_events
            big = await synapse_dataset(client, target, directory, params, events, result)
        else:
            events = params.big_events
            log(f"  building {params.big_rooms} x {events} events (domain handlers)")
            result.dataset_build_s = round(await build_dataset_ours(target, params), 1)
        result.dataset_rooms = params.big_rooms
        result.dataset_events = params.big_rooms * events
        log(f"  data set built in {result.dataset_build_s} s")
        result.startup_s = round(await target.server.start(), 2)
        sampler = RssSampler(target.server.pid)
        sampler.start()
        await asyncio.sleep(2.0)
        result.rss_start_mb = mb(sampler.now_kib())
        if not target.is_synapse:
            _, token = await client.register(BIG_USER)
            big = User(-1, f"@{BIG_USER}:{target.server_name}", token)
        await wait_for_quiet(params.quiet_wait, result.notes, "initial sync")
        await measure_initial_sync(client, big, params, result)
        result.rss_after_initial_sync_mb = mb(sampler.now_kib())

        # Phase 2: load.
        started = time.perf_counter()
        n_users = max(params.users, params.idle)
        log(f"  registering {n_users} users, {params.rooms} rooms")
        everyone = await register_users(client, n_users, "u", params)
        users = everyone[: params.users]
        room_ids, members = await setup_rooms(client, users, params)
        result.setup_s = round(time.perf_counter() - started, 1)
        await run_load(client, target, users, room_ids, members, params, result)
        result.rss_after_load_mb = mb(sampler.now_kib())

        # Phase 3: idle long-polls.
        await run_idle(client, everyone[: params.idle], sampler, params, result)
        result.rss_peak_mb = mb(sampler.peak_kib)
    except Exception as e:  # reported in the results, the other targets still run
        result.error = f"{type(e).__name__}: {e}"
        log(f"{name}: FAILED: {result.error}")
    finally:
        if sampler is not None:
            await sampler.stop()
            result.rss_peak_mb = mb(sampler.peak_kib)
        await session.close()
        code = await target.server.stop()
        if code not in (0, None):
            result.notes.append(f"server exited with status {code}")
        if keep:
            log(f"{name}: kept {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)
    return result


# --- output -------------------------------------------------------------------------------------


ROWS: list[tuple[str, Callable[[Result], str]]] = [
    ("send latency p50 / p99", lambda r: f"{r.send_p50_ms:g} / {r.send_p99_ms:g} ms"),
    ("delivery latency p50 / p99", lambda r: f"{r.delivery_p50_ms:g} / {r.delivery_p99_ms:g} ms"),
    ("delivery latency max", lambda r: f"{r.delivery_max_ms:g} ms"),
    ("messages/s achieved", lambda r: f"{r.msgs_per_s:g} ({r.messages_sent}/{r.messages_planned})"),
    ("drain after the last send", lambda r: f"{r.drain_s:g} s"),
    ("deliveries (expected)", lambda r: f"{r.deliveries} ({r.expected_deliveries})"),
    ("lost / duplicated / misrouted", lambda r: f"{r.lost} / {r.duplicated} / {r.unexpected}"),
    ("send errors / sync errors", lambda r: f"{r.send_errors} / {r.sync_errors}"),
    ("limited timelines", lambda r: f"{r.limited_timelines}"),
    ("sync responses/s during load", lambda r: f"{r.sync_responses_per_s:g}"),
    (
        "CPU during load: server / client / other",
        lambda r: (
            f"{r.server_cpu_load_s:g} / {r.client_cpu_load_s:g} / {r.other_cpu_load_s:g} s"
            f" in {r.load_wall_s:g} s"
        ),
    ),
    ("initial sync, cold", lambda r: f"{r.initial_sync_cold_ms:g} ms"),
    ("initial sync, warm (median)", lambda r: f"{r.initial_sync_warm_ms:g} ms"),
    (
        "initial sync rooms / body",
        lambda r: f"{r.initial_sync_rooms} / {r.initial_sync_bytes / 1024:.0f} KiB",
    ),
    ("RSS after start", lambda r: f"{r.rss_start_mb:g} MB"),
    ("RSS after initial sync", lambda r: f"{r.rss_after_initial_sync_mb:g} MB"),
    ("RSS after load", lambda r: f"{r.rss_after_load_mb:g} MB"),
    (
        "RSS with idle long-polls",
        lambda r: f"{r.rss_idle_polls_mb:g} MB ({r.idle_polls_open} open)",
    ),
    ("RSS peak", lambda r: f"{r.rss_peak_mb:g} MB"),
    ("start-up time", lambda r: f"{r.startup_s:g} s"),
    (
        "initial sync data set",
        lambda r: f"{r.dataset_rooms} rooms x {r.dataset_events // max(r.dataset_rooms, 1)} msgs",
    ),
    (
        "data set build time",
        lambda r: (
            "copied from --dataset-cache"
            if any(n.startswith("Synapse data set copied") for n in r.notes)
            else f"{r.dataset_build_s:g} s"
        ),
    ),
]


def table(results: list[Any], rows: list[tuple[str, Callable[[Any], str]]] = ROWS) -> str:
    """One column per target (a failed target's cells say so); `rows` are (label, cell)."""
    header = "| measurement | " + " | ".join(r.target for r in results) + " |"
    lines = [header, "| --- |" + " --- |" * len(results)]
    for label, fmt in rows:
        cells = [fmt(r) if r.error is None else "failed" for r in results]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    memory = ""
    with contextlib.suppress(OSError):
        with open("/proc/meminfo") as f:
            memory = f.readline().split(":", 1)[1].strip()
    try:
        from importlib.metadata import version

        synapse_version = version("matrix-synapse")
    except Exception:
        synapse_version = "not installed"
    return {
        "date": datetime.date.today().isoformat(),
        "cpus": os.cpu_count(),
        "memory": memory,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "synapse": synapse_version,
        "aiohttp": aiohttp.__version__,
    }


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, Params]:
    d = Params()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--targets", nargs="+", choices=ALL_TARGETS, default=list(ALL_TARGETS))
    p.add_argument("--skip-synapse", action="store_true")
    p.add_argument("--users", type=int, default=d.users, help="users long-polling under load")
    p.add_argument("--rooms", type=int, default=d.rooms)
    p.add_argument("--rooms-per-user", type=int, default=d.rooms_per_user)
    p.add_argument("--rate", type=float, default=d.rate, help="messages per second")
    p.add_argument("--duration", type=float, default=d.duration, help="seconds of sending")
    p.add_argument(
        "--drain",
        type=float,
        default=d.drain,
        help="give up after this many seconds without a delivery",
    )
    p.add_argument("--drain-max", type=float, default=d.drain_max)
    p.add_argument("--big-rooms", type=int, default=d.big_rooms)
    p.add_argument("--big-events", type=int, default=d.big_events, help="messages per room")
    p.add_argument(
        "--synapse-big-events",
        type=int,
        default=d.synapse_big_events,
        help="messages per room of Synapse's initial sync data set",
    )
    p.add_argument(
        "--dataset-cache",
        metavar="DIR",
        help="keep Synapse's initial sync data set here and reuse it on later runs",
    )
    p.add_argument("--big-concurrency", type=int, default=d.big_concurrency)
    p.add_argument("--idle", type=int, default=d.idle, help="idle long-polling clients")
    p.add_argument("--idle-settle", type=float, default=d.idle_settle)
    p.add_argument("--target-timeout", type=float, default=d.target_timeout)
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=d.quiet_wait,
        help="wait up to this long for other work on the machine to stop before the load",
    )
    p.add_argument("--postgres-admin-dsn", default=d.postgres_admin_dsn)
    p.add_argument("--postgres-database", default=d.postgres_database)
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--keep", action="store_true", help="keep the servers' directories")
    args = p.parse_args(argv)
    params = Params(
        users=args.users,
        rooms=args.rooms,
        rooms_per_user=args.rooms_per_user,
        rate=args.rate,
        duration=args.duration,
        drain=args.drain,
        drain_max=args.drain_max,
        big_rooms=args.big_rooms,
        big_events=args.big_events,
        synapse_big_events=args.synapse_big_events,
        dataset_cache=args.dataset_cache,
        big_concurrency=args.big_concurrency,
        idle=args.idle,
        idle_settle=args.idle_settle,
        target_timeout=args.target_timeout,
        quiet_wait=args.quiet_wait,
        postgres_admin_dsn=args.postgres_admin_dsn,
        postgres_database=args.postgres_database,
    )
    if params.rooms_per_user > params.rooms:
        p.error("--rooms-per-user cannot exceed --rooms")
    _check_loopback_dsn(params.postgres_admin_dsn)
    if args.skip_synapse:
        args.targets = [t for t in args.targets if t != "synapse"]
    return args, params


async def main(argv: list[str]) -> None:
    args, params = parse_args(argv)
    # Every long-poll holds a socket here and in the server (which inherits this limit).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 4 * (params.idle + params.users) + 1024))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    started = time.perf_counter()
    results = []
    for name in args.targets:
        try:
            result = await asyncio.wait_for(
                run_target(name, params, args.keep), timeout=params.target_timeout
            )
        except TimeoutError:
            result = Result(target=name, error=f"did not finish in {params.target_timeout:g} s")
        results.append(result)
        log(f"{name}: done ({time.perf_counter() - started:.0f} s since the start)")
    print_run(machine(), params, results, describe(params), table(results), as_json=args.json)


def describe(params: Params) -> str:
    return (
        f"{params.users} users, {params.rooms} rooms ({params.rooms_per_user} per user), "
        f"{params.rate:g} msg/s for {params.duration:g} s; initial sync of {params.big_rooms} "
        f"rooms x {params.big_events} messages (Synapse: x {params.synapse_big_events}); "
        f"{params.idle} idle long-polls"
    )


def print_run(
    info: dict[str, Any],
    params: Any,
    results: list[Any],
    description: str,
    table_text: str,
    *,
    as_json: bool = False,
) -> None:
    """A run's output, shared by the benches: JSON (machine, parameters, results), or the
    machine, what was run, the table and each target's notes. `params` and `results` are
    dataclasses; each result has `target`, `error` and `notes`."""
    if as_json:
        runs = {"machine": info, "params": asdict(params), "results": [asdict(r) for r in results]}
        print(json.dumps(runs, indent=2))
        return
    print(
        f"{info['date']}, {info['cpus']} cores, {info['memory']}, Python {info['python']}, "
        f"SQLite {info['sqlite']}, Synapse {info['synapse']}"
    )
    print(description)
    print()
    print(table_text)
    for r in results:
        for note in ([r.error] if r.error else []) + r.notes:
            print(f"- {r.target}: {note}")


def report_from_json(paths: list[str]) -> None:
    """Print the table of one or more saved --json outputs (their results side by side)."""
    runs = [json.loads(Path(p).read_text()) for p in paths]
    results = [Result(**r) for run in runs for r in run["results"]]
    params = Params(**runs[0]["params"])
    print_run(runs[0]["machine"], params, results, describe(params), table(results))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_build-dataset":
        asyncio.run(build_dataset_subcommand(sys.argv[2:]))
    elif len(sys.argv) > 1 and sys.argv[1] == "table":
        report_from_json(sys.argv[2:])
    else:
        asyncio.run(main(sys.argv[1:]))
