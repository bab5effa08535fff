"""Federation benchmark (issue 6): joining a big remote room, reading its history, and taking in
a burst of new events, by our server and by Synapse, against the same resident room.

The resident is our server ("resident", SQLite) holding one public room with --members
members and about --events events (members join, then messages from them), written through
our domain handlers in a subprocess of this script before it starts. Every server runs as its
own process with a TLS listener on 127.0.0.1 (certificates from a throwaway CA that all trust),
server names "127.0.0.1:<port>", federation allowed to loopback. For each joining target the
resident starts from a fresh copy of the same data, so each target joins the very same room:

    ours-sqlite     `homeserver run` on SQLite
    ours-postgres   `homeserver run` on PostgreSQL (a fresh database `bench_federation`)
    synapse         Synapse from the same virtualenv, on SQLite

Per target:

1. Join: a new user on the target POSTs /join/{roomId}?server_name=<resident>: the time until
   the answer (make_join, send_join with the room's state and auth chain, all checked and
   stored), and the target's joined member count must then be --members + 1.
2. History: from the join's answer until /messages (dir=b, limit 100) on the target returns
   100 of the room's messages from before the join (backfilled over federation), then the time
   to page back through --history-pages pages of 100 in all.
3. Inbound: a resident user sends --burst messages (--concurrency in flight); the target's
   user /syncs until it holds all of them (or none more came for 15 s after the last send):
   how many arrived, events per second from the first send to the last arrival (the
   resident's sending and the target's receiving together), and the CPU seconds the target
   spent meanwhile per 1,000 events shown (its own share).

Server RSS (VmRSS of the target process, PostgreSQL's own processes not included) is sampled
every 0.25 s for the peak during the join. Before each target it waits (bounded) for the
machine to be nearly idle. Every loop is bounded in count and in time. A failed check is listed
under the table and makes the exit status 1. Run by hand; results go in bench/README.md.
Nothing here is a test.

    .venv/bin/python bench/federation_bench.py [--targets ours-sqlite ours-postgres synapse]
        [--members 1000] [--events 10000] [--burst 1000] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from sync_bench import (  # noqa: E402
    Client,
    RssSampler,
    User,
    _homeserver_argv,
    bounded_gather,
    log,
    machine,
    mb,
    recreate_postgres_database,
    wait_for_quiet,
)

from tests.helpers.synapse_server import (  # noqa: E402
    ServerProcess,
    cpu_seconds,
    federating_synapse_process,
    free_port,
)
from tests.helpers.tls import CertAuthority, make_ca  # noqa: E402

TARGETS = ("ours-sqlite", "ours-postgres", "synapse")
POSTGRES_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
POSTGRES_DATABASE = "bench_federation"
PAGE = 100


@dataclass
class Params:
    members: int = 1000
    events: int = 10_000
    burst: int = 1000
    concurrency: int = 20
    history_pages: int = 10
    deadline_s: float = 600.0
    quiet_after_s: float = 15.0
    quiet_wait_s: float = 120.0


@dataclass
class Result:
    target: str
    join_s: float = 0.0
    joined_members: int = 0
    first_history_page_s: float = 0.0
    history_pages_s: float = 0.0
    history_events_read: int = 0
    burst_sent_per_s: float = 0.0
    burst_arrived: int = 0
    burst_events_per_s: float = 0.0
    burst_cpu_s_per_1000: float = 0.0
    join_peak_rss_mb: float = 0.0
    rss_after_mb: float = 0.0
    notes: list[str] = field(default_factory=list)


# --- the servers --------------------------------------------------------------------------------


def write_our_config(directory: Path, port: int, ca: CertAuthority, dsn: str | None = None) -> Path:
    """A config for our server on 127.0.0.1:<port> over TLS, federating with loopback."""
    directory.mkdir(parents=True, exist_ok=True)
    server_name = f"127.0.0.1:{port}"
    config_path = directory / "homeserver.yaml"
    subprocess.run(
        [
            *_homeserver_argv(),
            "generate-config",
            "--server-name",
            server_name,
            "--config",
            str(config_path),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        cwd=directory,
    )
    cert = ca.ca.issue_cert("127.0.0.1")
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    config = yaml.safe_load(config_path.read_text())
    config["log_level"] = "WARNING"  # as Synapse's: no line per request
    config["registration"]["enabled"] = True
    for bucket in config["limits"].values():
        if isinstance(bucket, dict) and "per_second" in bucket:
            bucket["per_second"] = 0
    config["listeners"] = [
        {
            "port": port,
            "bind_addresses": ["127.0.0.1"],
            "tls": True,
            "tls_certificate_path": str(cert_path),
            "tls_private_key_path": str(key_path),
            "resources": ["client", "federation", "media"],
        }
    ]
    config["federation"]["allowed_ip_ranges"] = ["127.0.0.0/8"]
    config["federation"]["tls_ca_file"] = str(ca.ca_file)
    config["database"]["path"] = str(directory / "data" / "homeserver.db")
    config["media"]["path"] = str(directory / "data" / "media")
    config["signing_key_path"] = str(directory / "data" / f"{server_name}.signing.key")
    if dsn is not None:
        config["database"] = {"engine": "postgres", "dsn": dsn, "pool_min": 1, "pool_max": 10}
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return config_path


def our_process(name: str, directory: Path, port: int, ca: CertAuthority) -> ServerProcess:
    return ServerProcess(
        name=name,
        argv=[*_homeserver_argv(), "run", "--config", str(directory / "homeserver.yaml")],
        port=port,
        log_path=directory / "server.log",
        cwd=directory,
        ssl_context=ssl.create_default_context(cafile=str(ca.ca_file)),
    )


async def build_room(config_path: Path, members: int, events: int) -> str:
    """Write the resident room through our domain handlers (`_build-room`, a subprocess of
    this script, before the resident starts); returns its room ID."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(Path(__file__).resolve()),
        "_build-room",
        "--config",
        str(config_path),
        "--members",
        str(members),
        "--events",
        str(events),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"building the room failed with status {proc.returncode}")
    return out.decode().strip().splitlines()[-1]


async def build_room_subcommand(argv: list[str]) -> None:
    from homeserver.config import load_config
    from homeserver.core import build_core
    from homeserver.crypto.keys import load_or_create_server_keys
    from homeserver.handlers.room import RoomCreationRequest
    from homeserver.storage import open_storage

    parser = argparse.ArgumentParser(prog="federation_bench.py _build-room")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--members", type=int, required=True)
    parser.add_argument("--events", type=int, required=True)
    args = parser.parse_args(argv)
    config = load_config(args.config)
    storage = await open_storage(config.database)
    try:
        keys = load_or_create_server_keys(config.signing_key_path)
        core = build_core(storage, config.server_name, keys)
        try:
            users = [f"@member{i}:{config.server_name}" for i in range(args.members)]
            request = RoomCreationRequest(users[0], preset="public_chat", name="Federation bench")
            room_id = await core.rooms.create_room(request)

            # Several writers at once: the room's queue commits what has queued up together.
            async def join(k: int) -> None:
                for user in users[1 + k :: 25]:
                    await core.events.send_event(
                        room_id, "m.room.member", user, {"membership": "join"}, state_key=user
                    )

            await asyncio.gather(*(join(k) for k in range(25)))
            messages = max(0, args.events - args.members - 5)

            async def send(k: int) -> None:
                for n in range(k, messages, 25):
                    await core.events.send_event(
                        room_id,
                        "m.room.message",
                        users[n % len(users)],
                        {"msgtype": "m.text", "body": f"history {n}"},
                    )

            await asyncio.gather(*(send(k) for k in range(25)))
        finally:
            await core.persister.close()
    finally:
        await storage.close()
    print(room_id)


# --- the measurements ---------------------------------------------------------------------------


async def measure_join(
    client: Client, user: User, room_id: str, resident: str, result: Result
) -> None:
    started = time.perf_counter()
    await client._call(
        "POST",
        f"/join/{quote(room_id)}",
        token=user.token,
        body={},
        params={"server_name": resident},
        timeout_s=600,
        retries=0,
    )
    result.join_s = round(time.perf_counter() - started, 2)
    members = await client._call(
        "GET", f"/rooms/{quote(room_id)}/joined_members", token=user.token, timeout_s=120
    )
    result.joined_members = len(members.get("joined", {}))


async def measure_history(
    client: Client, user: User, room_id: str, params: Params, result: Result
) -> None:
    """Until one page of 100 messages from before the join comes back, then pages back."""
    started = time.perf_counter()
    deadline = started + params.deadline_s
    first: dict[str, Any] = {}
    while time.perf_counter() < deadline:
        first = await client._call(
            "GET",
            f"/rooms/{quote(room_id)}/messages",
            token=user.token,
            params={"dir": "b", "limit": str(PAGE)},
            timeout_s=300,
        )
        history = [e for e in first.get("chunk", []) if e.get("type") == "m.room.message"]
        if len(history) >= PAGE - 5:  # the page may hold the joiner's own member event
            break
        await asyncio.sleep(0.1)
    else:
        result.notes.append(f"{result.target}: no page of history within the deadline")
        return
    result.first_history_page_s = round(time.perf_counter() - started, 2)
    read = len(first["chunk"])
    token = first.get("end")
    for _ in range(params.history_pages - 1):
        if token is None:
            break
        page = await client._call(
            "GET",
            f"/rooms/{quote(room_id)}/messages",
            token=user.token,
            params={"dir": "b", "limit": str(PAGE), "from": token},
            timeout_s=300,
        )
        read += len(page.get("chunk", []))
        token = page.get("end")
    result.history_pages_s = round(time.perf_counter() - started, 2)
    result.history_events_read = read
    if read < params.history_pages * PAGE * 0.9:
        result.notes.append(f"{result.target}: only {read} events read back in history")


async def measure_burst(
    resident: Client,
    sender: User,
    target: Client,
    reader: User,
    room_id: str,
    pid: int,
    params: Params,
    result: Result,
) -> None:
    flt = json.dumps({"room": {"timeline": {"limit": 50}}, "presence": {"types": []}})
    body, _ = await target.sync(reader, flt)
    since = body["next_batch"]
    wanted = {f"burst {n}" for n in range(params.burst)}
    seen: set[str] = set()
    cpu_before = cpu_seconds(pid) or 0.0
    started = time.perf_counter()

    async def send_all() -> float:
        await bounded_gather(
            params.concurrency,
            (
                lambda n=n: resident.send(
                    sender.token, room_id, f"b{n}", {"msgtype": "m.text", "body": f"burst {n}"}
                )
                for n in range(params.burst)
            ),
        )
        return time.perf_counter() - started

    sending = asyncio.create_task(send_all())
    deadline = started + params.deadline_s
    last_arrival = started
    # Until all arrived, or none for --quiet-after seconds once the sends are done: a server
    # may drop part of a burst (Synapse prunes its inbound queue of a room beyond 100 events,
    # leaving them to be backfilled), and that shows here as events that never arrived.
    while seen != wanted and time.perf_counter() < deadline:
        if sending.done() and time.perf_counter() - last_arrival > params.quiet_after_s:
            break
        body, _ = await target.sync(reader, flt, timeout_ms=2000, since=since)
        since = body["next_batch"]
        room = body.get("rooms", {}).get("join", {}).get(room_id, {})
        for event in room.get("timeline", {}).get("events", []):
            text = event.get("content", {}).get("body")
            if text in wanted and text not in seen:
                seen.add(text)
                last_arrival = time.perf_counter()
    result.burst_sent_per_s = round(params.burst / await sending, 1)
    cpu = (cpu_seconds(pid) or 0.0) - cpu_before
    result.burst_arrived = len(seen)
    if seen != wanted:
        result.notes.append(
            f"{result.target}: {len(wanted - seen)} of {len(wanted)} burst events never"
            " reached the client's /sync"
        )
    if seen:
        result.burst_events_per_s = round(len(seen) / (last_arrival - started), 1)
        result.burst_cpu_s_per_1000 = round(cpu / len(seen) * 1000, 2)


# --- one target ---------------------------------------------------------------------------------


async def run_target(
    name: str,
    work: Path,
    ca: CertAuthority,
    resident_port: int,
    resident_data: Path,
    room_id: str,
    params: Params,
) -> Result:
    result = Result(name)
    resident_dir = work / f"resident-for-{name}"
    shutil.copytree(resident_data, resident_dir)
    # The copy's config names its own files.
    config = resident_dir / "homeserver.yaml"
    config.write_text(config.read_text().replace(str(resident_data), str(resident_dir)))
    resident = our_process("resident", resident_dir, resident_port, ca)
    target_dir = work / name
    if name == "synapse":
        target, _ = federating_synapse_process(target_dir, ca)
    else:
        port = free_port()
        dsn = None
        if name == "ours-postgres":
            dsn = await recreate_postgres_database(POSTGRES_ADMIN_DSN, POSTGRES_DATABASE)
        write_our_config(target_dir, port, ca, dsn)
        target = our_process(name, target_dir, port, ca)
    await resident.start()
    await target.start()
    assert target.ssl_context is not None
    connector = aiohttp.TCPConnector(ssl=target.ssl_context, limit=100)
    async with aiohttp.ClientSession(connector=connector) as session:
        resident_client = Client(session, resident.base_url, needs_password=False)
        target_client = Client(session, target.base_url, needs_password=True)
        try:
            sender = User(0, *await resident_client.register("burster"))
            await resident_client.join(sender.token, room_id)
            joiner = User(0, *await target_client.register("joiner"))
            await wait_for_quiet(params.quiet_wait_s, result.notes, f"{name} join")
            log(f"{name}: joining")
            sampler = RssSampler(target.pid)
            sampler.start()
            await measure_join(target_client, joiner, room_id, f"127.0.0.1:{resident_port}", result)
            await sampler.stop()
            result.join_peak_rss_mb = mb(sampler.peak_kib)
            log(f"{name}: joined in {result.join_s} s ({result.joined_members} members)")
            await measure_history(target_client, joiner, room_id, params, result)
            log(
                f"{name}: history page in {result.first_history_page_s} s,"
                f" {result.history_events_read} events in {result.history_pages_s} s"
            )
            await wait_for_quiet(params.quiet_wait_s, result.notes, f"{name} burst")
            await measure_burst(
                resident_client,
                sender,
                target_client,
                joiner,
                room_id,
                target.pid,
                params,
                result,
            )
            log(f"{name}: burst {result.burst_events_per_s} events/s")
            result.rss_after_mb = mb(RssSampler(target.pid).now_kib())
        except Exception as e:  # a failing target is reported, the others still run
            result.notes.append(f"{name}: {type(e).__name__}: {e}")
            log(f"{name}: failed: {e}")
        finally:
            await target.stop()
            await resident.stop()
    expected = params.members + 2  # the members, the burst sender and the joiner
    if result.joined_members and result.joined_members != expected:
        result.notes.append(f"{name}: {result.joined_members} joined members, expected {expected}")
    return result


ROWS: list[tuple[str, str]] = [
    ("join (s)", "join_s"),
    ("joined members seen", "joined_members"),
    ("first history page (s)", "first_history_page_s"),
    ("history pages read (s)", "history_pages_s"),
    ("history events read", "history_events_read"),
    ("burst sent to the resident (events/s)", "burst_sent_per_s"),
    ("burst events shown by /sync", "burst_arrived"),
    ("burst events/s (end to end)", "burst_events_per_s"),
    ("target CPU s per 1,000 shown", "burst_cpu_s_per_1000"),
    ("peak RSS during join (MB)", "join_peak_rss_mb"),
    ("RSS after (MB)", "rss_after_mb"),
]


def table(results: list[Result]) -> str:
    lines = ["| | " + " | ".join(r.target for r in results) + " |"]
    lines.append("|---" * (len(results) + 1) + "|")
    for label, key in ROWS:
        lines.append(f"| {label} | " + " | ".join(str(getattr(r, key)) for r in results) + " |")
    return "\n".join(lines)


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", nargs="+", choices=TARGETS, default=list(TARGETS))
    parser.add_argument("--members", type=int, default=Params.members)
    parser.add_argument("--events", type=int, default=Params.events)
    parser.add_argument("--burst", type=int, default=Params.burst)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    params = Params(members=args.members, events=args.events, burst=args.burst)
    with tempfile.TemporaryDirectory(prefix="federation-bench-") as tmp:
        work = Path(tmp)
        ca = make_ca(work)
        resident_port = free_port()
        resident_data = work / "resident"
        config_path = write_our_config(resident_data, resident_port, ca)
        log(f"building the room: {params.members} members, ~{params.events} events")
        started = time.perf_counter()
        room_id = await build_room(config_path, params.members, params.events)
        log(f"built {room_id} in {time.perf_counter() - started:.0f} s")
        results = []
        for name in args.targets:
            results.append(
                await run_target(name, work, ca, resident_port, resident_data, room_id, params)
            )
    print(f"machine: {json.dumps(machine())}")
    print(table(results))
    notes = [n for r in results for n in r.notes]
    for note in notes:
        print(f"- {note}")
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
    return 1 if notes else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["_build-room"]:
        asyncio.run(build_room_subcommand(sys.argv[2:]))
    else:
        sys.exit(asyncio.run(main(sys.argv[1:])))
