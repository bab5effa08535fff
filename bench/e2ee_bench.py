"""End-to-end encryption benchmark (issue 5): /keys/query and /keys/claim latency for a user
who shares rooms with 1,000 devices, and to-device throughput, against Synapse in the same run.

Each target runs as a subprocess on 127.0.0.1 and is driven over plain HTTP with aiohttp,
through the Client-Server API only:

    ours-sqlite     `homeserver run` on SQLite
    ours-postgres   `homeserver run` on PostgreSQL (a fresh database `bench_e2ee` on loopback)
    synapse         Synapse from the same virtualenv, on SQLite

Per target:

1. Setup (timed, not the point): --users users register and log in until each has
   --devices-per-user devices; every device uploads its signed device keys and --otks signed
   one-time keys (POST /keys/upload, made by tests/helpers/e2e.py TestDevice: real ed25519
   signatures). The measuring user "observer" creates one public room per 10 users and one
   with everyone, and they all join, so the observer shares rooms with every device.
2. /keys/query: the observer asks for every user's devices in one request, --repeats times
   (p50/p99, response size); every answer must hold every device.
3. /keys/claim: the observer claims one signed_curve25519 key of every device in one request,
   min(--repeats, --otks) times (each claim uses up a key); every answer must hold a key for
   every device, and no (user, device, key ID) may come back twice.
4. To-device: the observer sends --to-device-messages PUT /sendToDevice requests, each to one
   device (round-robin over all of them) with about 1 KB of content, --concurrency in flight
   (messages/s of the sends); then every addressed device syncs (--sync-concurrency at once)
   until it has all its messages: the time that took, and messages/s end to end (messages
   delivered over the sends' time plus the deliveries'; the wait for a quiet machine between
   the two is not counted). Nothing may be lost, duplicated or delivered to the wrong device.

Before each measurement it waits (bounded) for the machine to be nearly idle. Server RSS is
VmRSS of the server process (PostgreSQL's own processes not included), sampled every 0.25 s;
its peak during setup (every device logging in) is reported apart from the measurements'.
Every loop here is bounded in count and in time. A failed check is listed under the table and
makes the exit status 1. Run by hand; results go in bench/README.md. Nothing here is a test.

    .venv/bin/python bench/e2ee_bench.py [--targets ours-sqlite ours-postgres synapse]
        [--users 100] [--devices-per-user 10] [--otks 20] [--repeats 20]
        [--to-device-messages 2000] [--concurrency 20] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from sync_bench import (  # noqa: E402
    PASSWORD,
    Client,
    HttpError,
    RssSampler,
    User,
    bounded_gather,
    log,
    machine,
    mb,
    percentile,
    prepare_target,
    print_run,
    table,
    wait_for_quiet,
)
from sync_bench import Params as SyncParams  # noqa: E402

from tests.helpers.e2e import TestDevice  # noqa: E402

ALL_TARGETS = ("ours-sqlite", "ours-postgres", "synapse")
OTK_ALGORITHM = "signed_curve25519"
TO_DEVICE_TYPE = "m.room.encrypted"
ROOM_SIZE = 10
# Only the to_device section matters to the receivers: no rooms, presence or account data.
RECEIVE_FILTER = json.dumps(
    {
        "room": {"rooms": []},
        "presence": {"types": []},
        "account_data": {"types": []},
    }
)
JsonDict = dict[str, Any]


@dataclass
class Params:
    users: int = 100
    devices_per_user: int = 10
    otks: int = 20
    repeats: int = 20
    to_device_messages: int = 2000
    concurrency: int = 20
    sync_concurrency: int = 50
    setup_concurrency: int = 16
    # A receiver that has not got all its messages keeps long-polling (1 s each) until this
    # many seconds after the start of the delivery phase.
    drain_max: float = 120.0
    quiet_wait: float = 60.0
    target_timeout: float = 1800.0
    postgres_admin_dsn: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    postgres_database: str = "bench_e2ee"

    @property
    def devices(self) -> int:
        return self.users * self.devices_per_user

    @property
    def claims(self) -> int:
        return min(self.repeats, self.otks)


@dataclass
class Result:
    target: str
    error: str | None = None
    startup_s: float = 0.0
    setup_s: float = 0.0
    devices: int = 0
    rooms: int = 0
    query_p50_ms: float = 0.0
    query_p99_ms: float = 0.0
    query_bytes: int = 0
    query_devices: int = 0
    claim_p50_ms: float = 0.0
    claim_p99_ms: float = 0.0
    claim_rounds: int = 0
    claim_keys: int = 0
    claim_missing: int = 0
    claim_repeated_ids: int = 0
    to_device_sent: int = 0
    send_errors: int = 0
    send_s: float = 0.0
    send_msgs_per_s: float = 0.0
    send_p50_ms: float = 0.0
    send_p99_ms: float = 0.0
    delivery_s: float = 0.0
    end_to_end_s: float = 0.0
    end_to_end_msgs_per_s: float = 0.0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    misrouted: int = 0
    sync_requests: int = 0
    sync_errors: int = 0
    rss_start_mb: float = 0.0
    rss_end_mb: float = 0.0
    # Setup logs every device in: password hashing (argon2id in ours) takes its memory then.
    rss_setup_peak_mb: float = 0.0
    rss_peak_mb: float = 0.0
    failed_checks: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Device:
    user: User
    keys: TestDevice

    @property
    def user_id(self) -> str:
        return self.user.user_id

    @property
    def device_id(self) -> str:
        return self.keys.device_id


class E2eeClient(Client):
    """The shared client plus login and the end-to-end encryption endpoints."""

    async def login(self, user_id: str) -> tuple[str, str]:
        """A new device of `user_id`: (access token, device ID)."""
        reply = await self._call(
            "POST",
            "/login",
            body={
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": user_id},
                "password": PASSWORD,
            },
        )
        return reply["access_token"], reply["device_id"]

    async def device_id(self, token: str) -> str:
        reply = await self._call("GET", "/account/whoami", token=token)
        return str(reply["device_id"])

    async def upload_keys(self, device: Device, otks: int) -> JsonDict:
        body = {
            "device_keys": device.keys.device_keys(),
            "one_time_keys": device.keys.one_time_keys(otks),
        }
        return await self._call("POST", "/keys/upload", token=device.user.token, body=body)

    async def timed_post(
        self, token: str, path: str, body: JsonDict
    ) -> tuple[JsonDict, int, float]:
        """A measured request, never retried: (reply, its size in bytes, milliseconds)."""
        started = time.perf_counter()
        async with self.session.post(
            self.base + path,
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=aiohttp.ClientTimeout(total=120),
        ) as resp:
            raw = await resp.read()
            if resp.status != 200:
                raise HttpError(resp.status, raw.decode(errors="replace"))
        elapsed_ms = (time.perf_counter() - started) * 1000
        return json.loads(raw), len(raw), elapsed_ms

    async def send_to_device(self, token: str, txn_id: str, messages: JsonDict) -> float:
        """Milliseconds the PUT took; never retried."""
        started = time.perf_counter()
        async with self.session.put(
            f"{self.base}/sendToDevice/{TO_DEVICE_TYPE}/{txn_id}",
            json={"messages": messages},
            headers={"Authorization": f"Bearer {token}"},
            timeout=aiohttp.ClientTimeout(total=120),
        ) as resp:
            text = await resp.text()
            if resp.status != 200:
                raise HttpError(resp.status, text)
        return (time.perf_counter() - started) * 1000


# --- setup --------------------------------------------------------------------------------------


async def make_devices(client: E2eeClient, params: Params) -> list[Device]:
    """Register every user (its first device) and log in for the others."""
    tag = f"{int(time.time()) % 100_000}"

    async def one_user(index: int) -> list[Device]:
        user_id, token = await client.register(f"e2ee{tag}u{index}")
        tokens = [(token, await client.device_id(token))]
        for _ in range(params.devices_per_user - 1):
            tokens.append(await client.login(user_id))
        return [
            Device(User(index, user_id, token), TestDevice(user_id, device_id))
            for token, device_id in tokens
        ]

    per_user = await bounded_gather(
        params.setup_concurrency,
        (partial(one_user, i) for i in range(params.users)),
    )
    return [device for devices in per_user for device in devices]


async def upload_all_keys(client: E2eeClient, devices: list[Device], params: Params) -> None:
    async def upload(device: Device) -> None:
        reply = await client.upload_keys(device, params.otks)
        counts = reply.get("one_time_key_counts", {})
        if counts.get(OTK_ALGORITHM) != params.otks:
            raise RuntimeError(
                f"{device.user_id}/{device.device_id}: one_time_key_counts {counts} after "
                f"uploading {params.otks}"
            )

    await bounded_gather(params.setup_concurrency, (partial(upload, d) for d in devices))


async def share_rooms(client: E2eeClient, observer: User, users: list[User], params: Params) -> int:
    """One public room per ROOM_SIZE users and one with everyone, each created by the
    observer; returns how many rooms there are."""
    groups = [users[i : i + ROOM_SIZE] for i in range(0, len(users), ROOM_SIZE)]
    groups.append(users)
    room_ids = [
        await client.create_room(observer.token, f"e2ee {n}", "public_chat")
        for n in range(len(groups))
    ]
    joins = [
        partial(client.join, user.token, room_id)
        for room_id, group in zip(room_ids, groups, strict=True)
        for user in group
    ]
    await bounded_gather(params.setup_concurrency, joins)
    return len(room_ids)


# --- measurements -------------------------------------------------------------------------------


def fail(result: Result, check: str) -> None:
    result.failed_checks.append(check)
    result.notes.append(f"check failed: {check}")
    log(f"  CHECK FAILED: {check}")


async def measure_query(
    client: E2eeClient, observer: User, devices: list[Device], params: Params, result: Result
) -> None:
    user_ids = sorted({d.user_id for d in devices})
    body: JsonDict = {"device_keys": {user_id: [] for user_id in user_ids}}
    expected = {(d.user_id, d.device_id) for d in devices}
    await wait_for_quiet(params.quiet_wait, result.notes, "key queries")
    times = []
    for _ in range(params.repeats):
        reply, size, elapsed_ms = await client.timed_post(observer.token, "/keys/query", body)
        times.append(elapsed_ms)
        got = {
            (user_id, device_id)
            for user_id, by_device in reply.get("device_keys", {}).items()
            for device_id in by_device
        }
        result.query_bytes = size
        result.query_devices = len(got & expected)
        if got != expected:
            fail(result, f"/keys/query returned {len(got & expected)} of {len(expected)} devices")
            break
    result.query_p50_ms = round(percentile(times, 50), 1)
    result.query_p99_ms = round(percentile(times, 99), 1)
    log(
        f"  /keys/query for {len(expected)} devices: p50 {result.query_p50_ms} ms, p99 "
        f"{result.query_p99_ms} ms, {size / 1024:.0f} KiB"
    )


async def measure_claim(
    client: E2eeClient, observer: User, devices: list[Device], params: Params, result: Result
) -> None:
    wanted: dict[str, dict[str, str]] = {}
    for d in devices:
        wanted.setdefault(d.user_id, {})[d.device_id] = OTK_ALGORITHM
    body: JsonDict = {"one_time_keys": wanted}
    await wait_for_quiet(params.quiet_wait, result.notes, "key claims")
    times = []
    claimed: Counter[tuple[str, str, str]] = Counter()
    for _ in range(params.claims):
        reply, _, elapsed_ms = await client.timed_post(observer.token, "/keys/claim", body)
        times.append(elapsed_ms)
        result.claim_rounds += 1
        keys = reply.get("one_time_keys", {})
        for d in devices:
            key_ids = [
                k for k in keys.get(d.user_id, {}).get(d.device_id, {}) if k.startswith("signed")
            ]
            if len(key_ids) != 1:
                result.claim_missing += 1
            for key_id in key_ids:
                claimed[(d.user_id, d.device_id, key_id)] += 1
    result.claim_keys = sum(claimed.values())
    result.claim_repeated_ids = sum(n - 1 for n in claimed.values())
    if result.claim_missing:
        fail(result, f"/keys/claim: {result.claim_missing} device answers without one key")
    if result.claim_repeated_ids:
        fail(result, f"/keys/claim: {result.claim_repeated_ids} key IDs handed out twice")
    result.claim_p50_ms = round(percentile(times, 50), 1)
    result.claim_p99_ms = round(percentile(times, 99), 1)
    log(
        f"  /keys/claim for {len(devices)} devices x {result.claim_rounds}: p50 "
        f"{result.claim_p50_ms} ms, p99 {result.claim_p99_ms} ms"
    )


def message_content(bench_id: str) -> JsonDict:
    """An Olm-shaped m.room.encrypted body of about 1 KB, tagged with its bench_id."""
    return {
        "algorithm": "m.olm.v1.curve25519-aes-sha2",
        "sender_key": base64.b64encode(os.urandom(32)).decode().rstrip("="),
        "ciphertext": {
            "recipient": {"type": 1, "body": base64.b64encode(os.urandom(700)).decode()}
        },
        "bench_id": bench_id,
    }


async def send_messages(
    client: E2eeClient, sender: User, devices: list[Device], params: Params, result: Result
) -> dict[tuple[str, str], set[str]]:
    """Message i goes to device i mod N; returns each addressed device's expected bench_ids."""
    plan = [(f"m{i}", devices[i % len(devices)]) for i in range(params.to_device_messages)]
    expected: dict[tuple[str, str], set[str]] = {}
    times: list[float] = []

    async def send(bench_id: str, device: Device) -> None:
        messages = {device.user_id: {device.device_id: message_content(bench_id)}}
        try:
            times.append(await client.send_to_device(sender.token, bench_id, messages))
        except (HttpError, aiohttp.ClientError, TimeoutError) as e:
            result.send_errors += 1
            if result.send_errors <= 3:
                result.notes.append(f"sendToDevice failed: {e}")
            return
        expected.setdefault((device.user_id, device.device_id), set()).add(bench_id)

    started = time.perf_counter()
    await bounded_gather(params.concurrency, (partial(send, m, d) for m, d in plan))
    result.send_s = round(time.perf_counter() - started, 2)
    result.to_device_sent = len(times)
    result.send_msgs_per_s = round(len(times) / max(result.send_s, 1e-6), 1)
    result.send_p50_ms = round(percentile(times, 50), 1)
    result.send_p99_ms = round(percentile(times, 99), 1)
    if result.send_errors:
        fail(result, f"{result.send_errors} sendToDevice requests failed")
    log(
        f"  {result.to_device_sent} to-device messages sent in {result.send_s} s: "
        f"{result.send_msgs_per_s}/s, p50 {result.send_p50_ms} ms, p99 {result.send_p99_ms} ms"
    )
    return expected


async def receive_messages(
    client: E2eeClient,
    devices: list[Device],
    expected: dict[tuple[str, str], set[str]],
    params: Params,
    result: Result,
) -> None:
    """Every addressed device syncs until it has all its messages (or drain_max has passed)."""
    received: Counter[str] = Counter()

    async def receive(device: Device) -> None:
        want = expected[(device.user_id, device.device_id)]
        got: set[str] = set()
        since: str | None = None
        got_new = False
        # Each sync carries at least one of its messages while any are waiting: bounded by
        # the count, plus the long-polls while waiting for stragglers (bounded by deadline).
        for _ in range(len(want) + 2 * int(params.drain_max) + 2):
            if time.perf_counter() > deadline:
                return
            waiting = since is not None and not got_new
            try:
                reply, _ = await client.sync(
                    device.user, RECEIVE_FILTER, 1000 if waiting else 0, since
                )
            except (HttpError, aiohttp.ClientError, TimeoutError) as e:
                result.sync_errors += 1
                if result.sync_errors <= 3:
                    result.notes.append(f"/sync failed: {e}")
                await asyncio.sleep(0.5)
                got_new = False
                continue
            result.sync_requests += 1
            since = reply["next_batch"]
            got_new = False
            for event in reply.get("to_device", {}).get("events", []):
                bench_id = event.get("content", {}).get("bench_id")
                if event.get("type") != TO_DEVICE_TYPE or bench_id is None:
                    continue
                received[bench_id] += 1
                if bench_id not in want:
                    result.misrouted += 1
                elif bench_id not in got:
                    got.add(bench_id)
                    got_new = True
            if got >= want:
                return

    receivers = [d for d in devices if (d.user_id, d.device_id) in expected]
    await wait_for_quiet(params.quiet_wait, result.notes, "to-device delivery")
    started = time.perf_counter()
    deadline = started + params.drain_max
    await bounded_gather(params.sync_concurrency, (partial(receive, d) for d in receivers))
    result.delivery_s = round(time.perf_counter() - started, 2)
    sent = {bench_id for ids in expected.values() for bench_id in ids}
    result.delivered = len(sent & received.keys())
    result.lost = len(sent - received.keys())
    result.duplicated = sum(n - 1 for n in received.values())
    result.end_to_end_s = round(result.send_s + result.delivery_s, 2)
    result.end_to_end_msgs_per_s = round(result.delivered / max(result.end_to_end_s, 1e-6), 1)
    for count, what in (
        (result.lost, "lost"),
        (result.duplicated, "duplicated"),
        (result.misrouted, "delivered to the wrong device"),
    ):
        if count:
            fail(result, f"{count} to-device messages {what}")
    log(
        f"  {result.delivered} delivered to {len(receivers)} devices in {result.delivery_s} s "
        f"({result.sync_requests} syncs); end to end {result.end_to_end_msgs_per_s}/s; lost "
        f"{result.lost}, duplicated {result.duplicated}, misrouted {result.misrouted}"
    )


# --- one target ---------------------------------------------------------------------------------


async def run_target(name: str, params: Params, keep: bool) -> Result:
    result = Result(target=name)
    directory = Path(tempfile.mkdtemp(prefix=f"e2ee_bench_{name}_"))
    log(f"{name}: working in {directory}")
    postgres = SyncParams(
        postgres_admin_dsn=params.postgres_admin_dsn, postgres_database=params.postgres_database
    )
    target = await prepare_target(name, directory, postgres)
    sampler: RssSampler | None = None
    try:
        result.startup_s = round(await target.server.start(), 2)
        sampler = RssSampler(target.server.pid)
        sampler.start()
        result.rss_start_mb = mb(sampler.now_kib())
        async with aiohttp.ClientSession() as session:
            # Every user gets a password (ours registers without one): its devices log in.
            client = E2eeClient(session, target.server.base_url, needs_password=True)
            started = time.perf_counter()
            observer_id, observer_token = await client.register(f"observer{int(time.time())}")
            observer = User(-1, observer_id, observer_token)
            log(f"  {params.users} users x {params.devices_per_user} devices")
            devices = await make_devices(client, params)
            result.devices = len(devices)
            log(f"  uploading keys ({params.otks} one-time keys per device)")
            await upload_all_keys(client, devices, params)
            # make_devices lists each user's devices together: one User (token) per user.
            users = [d.user for d in devices[:: params.devices_per_user]]
            result.rooms = await share_rooms(client, observer, users, params)
            result.setup_s = round(time.perf_counter() - started, 1)
            log(f"  setup: {result.devices} devices, {result.rooms} rooms in {result.setup_s} s")
            result.rss_setup_peak_mb = mb(sampler.peak_kib)
            sampler.peak_kib = sampler.now_kib()

            await measure_query(client, observer, devices, params, result)
            await measure_claim(client, observer, devices, params, result)
            expected = await send_messages(client, observer, devices, params, result)
            await receive_messages(client, devices, expected, params, result)
        result.rss_end_mb = mb(sampler.now_kib())
    except Exception as e:  # reported in the results, the other targets still run
        result.error = f"{type(e).__name__}: {e}"
        log(f"{name}: FAILED: {result.error}")
    finally:
        if sampler is not None:
            await sampler.stop()
            result.rss_peak_mb = mb(sampler.peak_kib)
        code = await target.server.stop()
        if code not in (0, None):
            result.notes.append(f"server exited with status {code}")
        if keep:
            log(f"{name}: kept {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)
    return result


# --- output -------------------------------------------------------------------------------------


ROWS: list[tuple[str, Callable[[Any], str]]] = [
    (
        "/keys/query, all devices: p50 / p99",
        lambda r: f"{r.query_p50_ms:g} / {r.query_p99_ms:g} ms",
    ),
    (
        "/keys/query devices / body",
        lambda r: f"{r.query_devices} / {r.query_bytes / 1024:.0f} KiB",
    ),
    (
        "/keys/claim, all devices: p50 / p99",
        lambda r: f"{r.claim_p50_ms:g} / {r.claim_p99_ms:g} ms ({r.claim_rounds} claims)",
    ),
    (
        "keys claimed / missing / repeated",
        lambda r: f"{r.claim_keys} / {r.claim_missing} / {r.claim_repeated_ids}",
    ),
    (
        "to-device sends/s",
        lambda r: f"{r.send_msgs_per_s:g} ({r.to_device_sent} in {r.send_s:g} s)",
    ),
    ("sendToDevice p50 / p99", lambda r: f"{r.send_p50_ms:g} / {r.send_p99_ms:g} ms"),
    ("delivery by /sync after the sends", lambda r: f"{r.delivery_s:g} s"),
    (
        "to-device end to end",
        lambda r: f"{r.end_to_end_msgs_per_s:g} msg/s ({r.end_to_end_s:g} s)",
    ),
    (
        "delivered / lost / duplicated / misrouted",
        lambda r: f"{r.delivered} / {r.lost} / {r.duplicated} / {r.misrouted}",
    ),
    ("send errors / sync errors", lambda r: f"{r.send_errors} / {r.sync_errors}"),
    ("RSS after start / at the end", lambda r: f"{r.rss_start_mb:g} / {r.rss_end_mb:g} MB"),
    ("RSS peak during the measurements", lambda r: f"{r.rss_peak_mb:g} MB"),
    ("RSS peak during setup", lambda r: f"{r.rss_setup_peak_mb:g} MB"),
    ("setup (register, log in, upload keys, join)", lambda r: f"{r.setup_s:g} s"),
    ("start-up time", lambda r: f"{r.startup_s:g} s"),
]


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, Params]:
    d = Params()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--targets", nargs="+", choices=ALL_TARGETS, default=list(ALL_TARGETS))
    p.add_argument("--users", type=int, default=d.users)
    p.add_argument("--devices-per-user", type=int, default=d.devices_per_user)
    p.add_argument("--otks", type=int, default=d.otks, help="one-time keys per device")
    p.add_argument("--repeats", type=int, default=d.repeats)
    p.add_argument("--to-device-messages", type=int, default=d.to_device_messages)
    p.add_argument("--concurrency", type=int, default=d.concurrency, help="sends in flight")
    p.add_argument("--sync-concurrency", type=int, default=d.sync_concurrency)
    p.add_argument("--setup-concurrency", type=int, default=d.setup_concurrency)
    p.add_argument("--drain-max", type=float, default=d.drain_max)
    p.add_argument("--quiet-wait", type=float, default=d.quiet_wait)
    p.add_argument("--target-timeout", type=float, default=d.target_timeout)
    p.add_argument("--postgres-admin-dsn", default=d.postgres_admin_dsn)
    p.add_argument("--postgres-database", default=d.postgres_database)
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--keep", action="store_true", help="keep the servers' directories")
    args = p.parse_args(argv)
    params = Params(
        users=args.users,
        devices_per_user=args.devices_per_user,
        otks=args.otks,
        repeats=args.repeats,
        to_device_messages=args.to_device_messages,
        concurrency=args.concurrency,
        sync_concurrency=args.sync_concurrency,
        setup_concurrency=args.setup_concurrency,
        drain_max=args.drain_max,
        quiet_wait=args.quiet_wait,
        target_timeout=args.target_timeout,
        postgres_admin_dsn=args.postgres_admin_dsn,
        postgres_database=args.postgres_database,
    )
    for name in ("users", "devices_per_user", "otks", "repeats", "concurrency"):
        if getattr(params, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return args, params


def describe(params: Params) -> str:
    return (
        f"{params.users} users x {params.devices_per_user} devices ({params.devices}), "
        f"{params.otks} one-time keys each; {params.repeats} queries, {params.claims} claims; "
        f"{params.to_device_messages} to-device messages of ~1 KB, {params.concurrency} in flight"
    )


async def main(argv: list[str]) -> int:
    args, params = parse_args(argv)
    results = []
    for name in args.targets:
        log(f"{name}: starting")
        try:
            result = await asyncio.wait_for(
                run_target(name, params, args.keep), timeout=params.target_timeout
            )
        except TimeoutError:
            result = Result(target=name, error=f"did not finish in {params.target_timeout:g} s")
        results.append(result)
    print_run(machine(), params, results, describe(params), table(results, ROWS), as_json=args.json)
    return 1 if any(r.error or r.failed_checks for r in results) else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
