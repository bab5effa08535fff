"""Federation reads across real servers (/event, /state, /state_ids, /event_auth, /backfill,
/get_missing_events): their answers, who may ask (room members, server ACLs, history
visibility), and a server that missed events filling the gap by itself."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from federation.inbound.acl import glob_matches, server_acl_allows
from federation.transport import FederationTransport, RemoteError
from homeserver.events.event import Event
from tests.federation.homeservers import Homeserver, homeservers
from tests.federation.test_federation_rooms import join_via, wait_for_members, wait_for_message
from tests.helpers.rest import V3, User
from tests.helpers.spec_schemas import assert_response_valid

V1 = "/_matrix/federation/v1"
DEADLINE_S = 10.0
EVENTS_API = "server-server/events.yaml"
BACKFILL_API = "server-server/backfill.yaml"


@asynccontextmanager
async def signed_as(server: Homeserver) -> AsyncIterator[FederationTransport]:
    """Requests signed with `server`'s key, as its own federation client sends them."""
    transport = FederationTransport(
        server.server_name, server.core.server.keys.signing_key, server.config.federation
    )
    try:
        yield transport
    finally:
        await transport.close()


async def shared_room(a: Homeserver, b: Homeserver, **create: Any) -> tuple[User, User, str]:
    """alice on A and bob on B, in a room of A's that B joined."""
    alice = await a.rest.register("alice")
    bob = await b.rest.register("bob")
    room_id = await a.rest.create_room(alice, preset="public_chat", **create)
    await join_via(b, bob, room_id, a)
    await wait_for_members(a, alice, room_id, {alice.user_id, bob.user_id})
    return alice, bob, room_id


def path(endpoint: str, *parts: str) -> str:
    return "/".join([f"{V1}/{endpoint}", *(quote(p, safe="") for p in parts)])


async def ids_of(server: Homeserver, room_id: str, pdus: list[dict[str, Any]]) -> list[str]:
    """The event IDs of PDUs (from room version 3 on, a PDU's ID is its hash)."""
    room_version = await server.core.storage.rooms.get_room_version(room_id)
    assert room_version is not None
    return [Event(dict(p), room_version).event_id for p in pdus]


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
async def test_each_read_answers_as_the_spec_says(tmp_path: Path, engine: str) -> None:
    async with homeservers(tmp_path, 2, engine) as (a, b):
        alice = await a.rest.register("alice")
        bob = await b.rest.register("bob")
        room_id = await a.rest.create_room(alice, preset="public_chat")
        sent = [await a.rest.send(alice, room_id, f"m{n}") for n in range(3)]
        await join_via(b, bob, room_id, a)
        await wait_for_members(a, alice, room_id, {alice.user_id, bob.user_id})
        join_id = await a.core.storage.rooms.get_current_state_event_id(
            room_id, "m.room.member", bob.user_id
        )
        assert join_id is not None
        storage = a.core.storage
        async with signed_as(b) as fed:
            answer = await fed.request(a.server_name, "GET", path("event", sent[1]))
            assert_response_valid(EVENTS_API, "/event/{eventId}", "get", 200, answer)
            assert answer["origin"] == a.server_name
            assert await ids_of(a, room_id, answer["pdus"]) == [sent[1]]
            assert answer["pdus"][0]["content"]["body"] == "m1"

            # The state before bob's join: everything but the join, and its auth chain.
            state_ids = await fed.request(
                a.server_name, "GET", path("state_ids", room_id), query={"event_id": join_id}
            )
            assert_response_valid(EVENTS_API, "/state_ids/{roomId}", "get", 200, state_ids)
            expected = await a.core.state.get_state_before(join_id)
            assert set(state_ids["pdu_ids"]) == set(expected.values())
            assert join_id not in state_ids["pdu_ids"]
            assert set(state_ids["auth_chain_ids"]) == await storage.events.get_auth_chain_ids(
                list(expected.values())
            )
            state = await fed.request(
                a.server_name, "GET", path("state", room_id), query={"event_id": join_id}
            )
            assert_response_valid(EVENTS_API, "/state/{roomId}", "get", 200, state)
            assert set(await ids_of(a, room_id, state["pdus"])) == set(state_ids["pdu_ids"])
            assert set(await ids_of(a, room_id, state["auth_chain"])) == set(
                state_ids["auth_chain_ids"]
            )

            auth = await fed.request(a.server_name, "GET", path("event_auth", room_id, join_id))
            assert_response_valid(
                "server-server/event_auth.yaml", "/event_auth/{roomId}/{eventId}", "get", 200, auth
            )
            assert set(await ids_of(a, room_id, auth["auth_chain"])) == (
                await storage.events.get_auth_chain_ids([join_id])
            )

            # Backfill: the given event first, then those before it, newest first.
            back = await fed.request(
                a.server_name,
                "GET",
                path("backfill", room_id),
                query={"v": [sent[2]], "limit": "3"},
            )
            assert_response_valid(BACKFILL_API, "/backfill/{roomId}", "get", 200, back)
            assert await ids_of(a, room_id, back["pdus"]) == sent[::-1]

            # Between m0 and bob's join: m1 and m2, oldest first.
            missing = await fed.request(
                a.server_name,
                "POST",
                path("get_missing_events", room_id),
                content={"earliest_events": [sent[0]], "latest_events": [join_id], "limit": 10},
            )
            assert_response_valid(
                BACKFILL_API, "/get_missing_events/{roomId}", "post", 200, missing
            )
            assert await ids_of(a, room_id, missing["events"]) == sent[1:]
            limited = await fed.request(
                a.server_name,
                "POST",
                path("get_missing_events", room_id),
                content={"earliest_events": [sent[0]], "latest_events": [join_id], "limit": 1},
            )
            assert await ids_of(a, room_id, limited["events"]) == [sent[2]]

            # Bad input and unknown events.
            failures = [
                ("GET", path("event", "$nowhere"), None, None, 404, "M_NOT_FOUND"),
                ("GET", path("state_ids", room_id), {}, None, 400, "M_MISSING_PARAM"),
                (
                    "GET",
                    path("state_ids", room_id),
                    {"event_id": "$nowhere"},
                    None,
                    404,
                    "M_NOT_FOUND",
                ),
                (
                    "GET",
                    path("backfill", room_id),
                    {"v": [sent[2]], "limit": "many"},
                    None,
                    400,
                    "M_INVALID_PARAM",
                ),
                (
                    "POST",
                    path("get_missing_events", room_id),
                    None,
                    {"earliest_events": "no", "latest_events": []},
                    400,
                    "M_BAD_JSON",
                ),
            ]
            for method, target, query, content, status, errcode in failures:
                with pytest.raises(RemoteError) as info:
                    await fed.request(a.server_name, method, target, query=query, content=content)
                assert (info.value.status, info.value.errcode) == (status, errcode), target


async def test_servers_outside_the_room_or_denied_by_its_acl_get_403(tmp_path: Path) -> None:
    async with homeservers(tmp_path, 3) as (a, b, c):
        alice, _bob, room_id = await shared_room(a, b)
        message = await a.rest.send(alice, room_id, "hello")
        reads = [
            ("GET", path("event", message), None, None),
            ("GET", path("state_ids", room_id), {"event_id": message}, None),
            ("GET", path("state", room_id), {"event_id": message}, None),
            ("GET", path("event_auth", room_id, message), None, None),
            ("GET", path("backfill", room_id), {"v": [message], "limit": "5"}, None),
            (
                "POST",
                path("get_missing_events", room_id),
                None,
                {"earliest_events": [], "latest_events": [message]},
            ),
        ]

        async def refused(server: Homeserver) -> None:
            async with signed_as(server) as fed:
                for method, target, query, content in reads:
                    with pytest.raises(RemoteError) as info:
                        await fed.request(
                            a.server_name, method, target, query=query, content=content
                        )
                    assert (info.value.status, info.value.errcode) == (403, "M_FORBIDDEN")

        async def answered(server: Homeserver) -> None:
            async with signed_as(server) as fed:
                for method, target, query, content in reads:
                    await fed.request(a.server_name, method, target, query=query, content=content)

        await answered(b)
        await refused(c)  # no user of C is in the room
        # The test servers are all 127.0.0.1 (the ACL ignores ports): denying that host shuts
        # B out, though its user is still in the room.
        await a.rest.set_state(
            alice, room_id, "m.room.server_acl", {"allow": ["*"], "deny": ["127.0.0.*"]}
        )
        await refused(b)


def test_server_acl_rules() -> None:
    acl = {"allow": ["*.example.org", "good.?om"], "deny": ["bad.example.org"]}
    assert server_acl_allows(acl, "chat.example.org:8448")
    assert server_acl_allows(acl, "GOOD.COM")
    assert not server_acl_allows(acl, "bad.example.org")  # deny wins over allow
    assert not server_acl_allows(acl, "example.org")  # `*.` needs something before the dot
    assert not server_acl_allows(acl, "good.coom")  # `?` is exactly one character
    assert not server_acl_allows({}, "example.org")  # no allow list: nobody
    assert server_acl_allows({"allow": ["*"]}, "[::1]:8448")
    assert not server_acl_allows({"allow": ["*"], "allow_ip_literals": False}, "[::1]:8448")
    assert not server_acl_allows({"allow": ["*"], "allow_ip_literals": False}, "10.0.0.1")
    assert server_acl_allows({"allow": [1, "*"], "deny": "x"}, "example.org")  # junk ignored
    assert glob_matches("a*b*c", "axxbyyc") and not glob_matches("a*b*c", "axxbyy")
    assert glob_matches("*", "") and not glob_matches("?", "")


async def test_joined_history_hides_what_came_before_a_servers_users_joined(
    tmp_path: Path,
) -> None:
    async with homeservers(tmp_path, 2) as (a, b):
        alice = await a.rest.register("alice")
        bob = await b.rest.register("bob")
        room_id = await a.rest.create_room(
            alice,
            preset="public_chat",
            initial_state=[
                {
                    "type": "m.room.history_visibility",
                    "state_key": "",
                    "content": {"history_visibility": "joined"},
                }
            ],
        )
        before = await a.rest.send(alice, room_id, "before bob")
        await join_via(b, bob, room_id, a)
        await wait_for_members(a, alice, room_id, {alice.user_id, bob.user_id})
        after = await a.rest.send(alice, room_id, "after bob")
        async with signed_as(b) as fed:
            hidden = await fed.request(a.server_name, "GET", path("event", before))
            shown = await fed.request(a.server_name, "GET", path("event", after))
            assert await ids_of(a, room_id, hidden["pdus"]) == [before]
            assert hidden["pdus"][0]["content"] == {}  # redacted: its place in the DAG only
            assert shown["pdus"][0]["content"]["body"] == "after bob"
            back = await fed.request(
                a.server_name, "GET", path("backfill", room_id), query={"v": [after], "limit": "4"}
            )
            contents = {
                i: p["content"]
                for i, p in zip(await ids_of(a, room_id, back["pdus"]), back["pdus"], strict=True)
            }
            assert contents[after]["body"] == "after bob"
            assert contents[before] == {}


async def messages_on(server: Homeserver, user: User, room_id: str) -> list[str]:
    """The message bodies of the room on `server`, oldest first."""
    page = await server.rest.messages(user, room_id, limit="100")
    return [
        e["content"].get("body", "")
        for e in reversed(page["chunk"])
        if e["type"] == "m.room.message"
    ]


async def make_a_gap(a: Homeserver, b: Homeserver, send_while_down: Any) -> None:
    """Stop B; run `send_while_down` on A; make A forget it owes B those events (as if its
    queue were lost), then restart both."""
    await b.stop()
    await send_while_down()
    outbox = a.core.storage.federation_outbox

    async def queued_all_and_backing_off() -> bool:
        position = await outbox.sender_position() or 0
        return (
            position >= a.core.storage.stream_ids.current
            and await outbox.get_backoff(b.server_name) is not None
        )

    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while not await queued_all_and_backing_off() and loop.time() < deadline:
        await asyncio.sleep(0.05)
    assert await queued_all_and_backing_off()
    await a.core.storage.db.execute(
        "DELETE FROM federation_outbox WHERE destination = $1", b.server_name
    )
    await outbox.clear_backoff(b.server_name)
    await b.start()
    # A restart ends the back-off A's sender waits out in memory.
    await a.stop()
    await a.start()


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
async def test_a_server_fills_a_gap_with_get_missing_events(tmp_path: Path, engine: str) -> None:
    async with homeservers(tmp_path, 2, engine) as (a, b):
        alice, bob, room_id = await shared_room(a, b)
        await a.rest.send(alice, room_id, "before the gap")
        await wait_for_message(b, bob, room_id, "before the gap")
        missed = [f"missed {n}" for n in range(4)]

        async def send_missed() -> None:
            for body in missed:
                await a.rest.send(alice, room_id, body)

        await make_a_gap(a, b, send_missed)
        await a.rest.send(alice, room_id, "after the gap")
        await wait_for_message(b, bob, room_id, "after the gap")
        assert await messages_on(b, bob, room_id) == ["before the gap", *missed, "after the gap"]
        # B's room goes on from there: its next message reaches A.
        await b.rest.send(bob, room_id, "B is back")
        await wait_for_message(a, alice, room_id, "B is back")


async def test_a_gap_longer_than_one_answer_takes_the_state_from_the_sender(
    tmp_path: Path,
) -> None:
    async with homeservers(tmp_path, 2) as (a, b):
        alice, bob, room_id = await shared_room(a, b, name="Before")
        await a.rest.send(alice, room_id, "before the gap")
        await wait_for_message(b, bob, room_id, "before the gap")
        missed = [f"missed {n}" for n in range(12)]

        async def send_missed() -> None:
            await a.rest.set_state(alice, room_id, "m.room.name", {"name": "Renamed in the gap"})
            for body in missed:
                await a.rest.send(alice, room_id, body)

        await make_a_gap(a, b, send_missed)
        await a.rest.send(alice, room_id, "after the gap")
        await wait_for_message(b, bob, room_id, "after the gap")
        # One /get_missing_events brings the last 10; the event before them comes with the
        # state at it from /state_ids, the rename in it (fetched with /event). The two
        # messages still missing are backfilled once /messages reads across the gap.
        assert await messages_on(b, bob, room_id) == ["before the gap", *missed, "after the gap"]
        name = await b.rest.request("GET", f"{V3}/rooms/{room_id}/state/m.room.name", bob)
        assert name == {"name": "Renamed in the gap"}
        await b.rest.send(bob, room_id, "B is back")
        await wait_for_message(a, alice, room_id, "B is back")
