"""Rooms across real servers: remote joins (make_join / send_join), messages both ways, and a
third server whose join and messages reach everyone."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import pytest

from tests.federation.homeservers import Homeserver, homeservers
from tests.helpers.rest import V3, RestHelper, User

DEADLINE_S = 10.0


class Peer(Protocol):
    """A server the tests talk to through its client API: ours, or Synapse."""

    rest: RestHelper


async def join_via(server: Homeserver, user: User, room_id: str, via: Homeserver) -> None:
    answer = await server.rest.request(
        "POST", f"{V3}/join/{room_id}", user, body={}, via=via.server_name
    )
    assert answer == {"room_id": room_id}


async def wait_for_message(
    server: Peer, user: User, room_id: str, body: str, deadline_s: float = DEADLINE_S
) -> dict[str, Any]:
    """The message event with `body` once it is in the user's room (via /messages)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    while loop.time() < deadline:
        page = await server.rest.request(
            "GET", f"{V3}/rooms/{room_id}/messages", user, dir="b", limit="50"
        )
        for event in page["chunk"]:
            if event["type"] == "m.room.message" and event["content"].get("body") == body:
                return dict(event)
        await asyncio.sleep(0.05)
    raise AssertionError(f"{body!r} never reached {server.server_name}")


async def joined_members(server: Peer, user: User, room_id: str) -> set[str]:
    answer = await server.rest.request("GET", f"{V3}/rooms/{room_id}/joined_members", user)
    return set(answer["joined"])


async def wait_for_members(server: Peer, user: User, room_id: str, expected: set[str]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while loop.time() < deadline:
        if await joined_members(server, user, room_id) == expected:
            return
        await asyncio.sleep(0.05)
    assert await joined_members(server, user, room_id) == expected


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
async def test_remote_join_and_messages_both_ways(tmp_path: Path, engine: str) -> None:
    async with homeservers(tmp_path, 3, engine) as (a, b, c):
        alice = await a.rest.register("alice")
        bob = await b.rest.register("bob")
        carol = await c.rest.register("carol")
        room_id = await a.rest.create_room(alice, preset="public_chat", name="Across servers")

        await join_via(b, bob, room_id, a)
        # B now holds the room: its state, with its name, and both members.
        assert await joined_members(b, bob, room_id) == {alice.user_id, bob.user_id}
        name = await b.rest.request("GET", f"{V3}/rooms/{room_id}/state/m.room.name", bob)
        assert name == {"name": "Across servers"}
        await wait_for_members(a, alice, room_id, {alice.user_id, bob.user_id})

        await a.rest.send(alice, room_id, "hello from A")
        from_a = await wait_for_message(b, bob, room_id, "hello from A")
        assert from_a["sender"] == alice.user_id
        await b.rest.send(bob, room_id, "hello from B")
        assert (await wait_for_message(a, alice, room_id, "hello from B"))["sender"] == bob.user_id

        # A third server joins through B; A hears of the join from B, and C's messages
        # reach both.
        await join_via(c, carol, room_id, b)
        everyone = {alice.user_id, bob.user_id, carol.user_id}
        await wait_for_members(a, alice, room_id, everyone)
        await wait_for_members(b, bob, room_id, everyone)
        await c.rest.send(carol, room_id, "hello from C")
        for server, user in ((a, alice), (b, bob)):
            assert (await wait_for_message(server, user, room_id, "hello from C"))[
                "sender"
            ] == carol.user_id
        # A member on another server gets counts from their join on: carol's message since
        # bob's own read his room up to it.
        counts = (await b.rest.sync(bob))["rooms"]["join"][room_id]["unread_notifications"]
        assert counts == {"notification_count": 1, "highlight_count": 0}
        await a.rest.send(alice, room_id, "A again")
        await wait_for_message(c, carol, room_id, "A again")


async def test_joining_a_room_nobody_can_help_with(tmp_path: Path) -> None:
    async with homeservers(tmp_path, 2) as (a, b):
        alice = await a.rest.register("alice")
        bob = await b.rest.register("bob")
        room_id = await a.rest.create_room(alice)  # private: needs an invite
        refused = await b.rest.request(
            "POST", f"{V3}/join/{room_id}", bob, body={}, expect=403, via=a.server_name
        )
        assert refused["errcode"] == "M_FORBIDDEN"
        unknown = await b.rest.request(
            "POST", f"{V3}/join/!nowhere", bob, body={}, expect=404, via=a.server_name
        )
        assert unknown["errcode"] == "M_NOT_FOUND"


async def test_join_by_remote_alias_and_remote_profiles(tmp_path: Path) -> None:
    async with homeservers(tmp_path, 2) as (a, b):
        alice = await a.rest.register("alice")
        await a.rest.request(
            "PUT",
            f"{V3}/profile/{alice.user_id}/displayname",
            alice,
            body={"displayname": "Alice A"},
        )
        bob = await b.rest.register("bob")
        room_id = await a.rest.create_room(alice, preset="public_chat")
        alias = f"#lobby:{a.server_name}"
        path = f"{V3}/directory/room/{quote(alias)}"
        await a.rest.request("PUT", path, alice, body={"room_id": room_id})

        # B resolves the alias by asking A, then joins through the servers A named.
        resolved = await b.rest.request("GET", path, bob)
        assert resolved == {"room_id": room_id, "servers": [a.server_name]}
        joined = await b.rest.request("POST", f"{V3}/join/{quote(alias)}", bob, body={})
        assert joined == {"room_id": room_id}
        assert await joined_members(b, bob, room_id) == {alice.user_id, bob.user_id}

        # Profiles of another server's users come from that server.
        profile = await b.rest.request("GET", f"{V3}/profile/{alice.user_id}", bob)
        assert profile == {"displayname": "Alice A"}
        missing = await b.rest.request(
            "GET", f"{V3}/profile/@nobody:{a.server_name}", bob, expect=404
        )
        assert missing["errcode"] == "M_NOT_FOUND"
        unknown_alias = await b.rest.request(
            "GET", f"{V3}/directory/room/%23nothing:{a.server_name}", bob, expect=404
        )
        assert unknown_alias["errcode"] == "M_NOT_FOUND"


async def test_remote_invite_then_join(tmp_path: Path) -> None:
    async with homeservers(tmp_path, 2) as (a, b):
        alice = await a.rest.register("alice")
        bob = await b.rest.register("bob")
        since = (await b.rest.sync(bob))["next_batch"]
        room_id = await a.rest.create_room(alice, name="Invitation only")
        await a.rest.invite(alice, room_id, bob.user_id)

        # Bob's /sync shows the invite, with the stripped state A sent along.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE_S
        invited: dict[str, Any] = {}
        while not invited and loop.time() < deadline:
            body = await b.rest.sync(bob, since=since, timeout="1000")
            invited = body["rooms"]["invite"]
            since = body["next_batch"]
        stripped = invited[room_id]["invite_state"]["events"]
        assert {
            "type": "m.room.name",
            "state_key": "",
            "sender": alice.user_id,
            "content": {"name": "Invitation only"},
        } in stripped
        member = [e for e in stripped if e["type"] == "m.room.member"]
        assert any(
            e["state_key"] == bob.user_id and e["content"]["membership"] == "invite" for e in member
        )

        # Joining needs no via: the inviter's server can help.
        await b.rest.request("POST", f"{V3}/rooms/{room_id}/join", bob, body={})
        await wait_for_members(a, alice, room_id, {alice.user_id, bob.user_id})
        assert await joined_members(b, bob, room_id) == {alice.user_id, bob.user_id}
        await b.rest.send(bob, room_id, "thanks for the invite")
        await wait_for_message(a, alice, room_id, "thanks for the invite")

        # Inviting someone who does not exist on the other server is refused there.
        refused = await a.rest.request(
            "POST",
            f"{V3}/rooms/{room_id}/invite",
            alice,
            body={"user_id": f"@nobody:{b.server_name}"},
            expect=502,
        )
        assert refused["errcode"] == "M_UNKNOWN"


async def test_a_server_that_was_down_gets_the_messages_in_order(tmp_path: Path) -> None:
    async with homeservers(tmp_path, 2) as (a, b):
        alice = await a.rest.register("alice")
        bob = await b.rest.register("bob")
        room_id = await a.rest.create_room(alice, preset="public_chat")
        await join_via(b, bob, room_id, a)
        await wait_for_members(a, alice, room_id, {alice.user_id, bob.user_id})
        await b.stop()
        sent = [f"while B was down {n}" for n in range(5)]
        for body in sent:
            await a.rest.send(alice, room_id, body)
        await b.start()
        # B says something, so A knows B is back and retries it at once.
        await b.rest.send(bob, room_id, "B is back")
        await wait_for_message(b, bob, room_id, sent[-1])
        page = await b.rest.request(
            "GET", f"{V3}/rooms/{room_id}/messages", bob, dir="b", limit="50"
        )
        bodies = [
            e["content"]["body"]
            for e in reversed(page["chunk"])
            if e["type"] == "m.room.message" and e["sender"] == alice.user_id
        ]
        assert bodies == sent


async def test_declining_a_remote_invite(tmp_path: Path) -> None:
    async with homeservers(tmp_path, 2) as (a, b):
        alice = await a.rest.register("alice")
        bob = await b.rest.register("bob")
        room_id = await a.rest.create_room(alice)
        await a.rest.invite(alice, room_id, bob.user_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE_S
        since = None
        while loop.time() < deadline:
            params = {"timeout": "1000"} | ({"since": since} if since else {})
            body = await b.rest.sync(bob, **params)
            since = body["next_batch"]
            if room_id in body["rooms"]["invite"]:
                break
        # B is not in the room: the leave goes through A (make_leave / send_leave).
        await b.rest.request("POST", f"{V3}/rooms/{room_id}/leave", bob, body={})
        member = await a.rest.request(
            "GET", f"{V3}/rooms/{room_id}/state/m.room.member/{quote(bob.user_id)}", alice
        )
        assert member["membership"] == "leave"
        after = await b.rest.sync(bob, since=since)
        assert room_id in after["rooms"]["leave"]
        assert room_id not in after["rooms"]["invite"]


async def test_knocking_on_a_remote_room(tmp_path: Path) -> None:
    async with homeservers(tmp_path, 2) as (a, b):
        alice = await a.rest.register("alice")
        bob = await b.rest.register("bob")
        room_id = await a.rest.create_room(alice, name="Knock first")
        await a.rest.request(
            "PUT",
            f"{V3}/rooms/{room_id}/state/m.room.join_rules",
            alice,
            body={"join_rule": "knock"},
        )
        since = (await b.rest.sync(bob))["next_batch"]
        answer = await b.rest.request(
            "POST",
            f"{V3}/knock/{room_id}",
            bob,
            body={"reason": "let me in"},
            via=a.server_name,
        )
        assert answer == {"room_id": room_id}
        member_path = f"{V3}/rooms/{room_id}/state/m.room.member/{quote(bob.user_id)}"
        member = await a.rest.request("GET", member_path, alice)
        assert (member["membership"], member["reason"]) == ("knock", "let me in")
        # Bob's /sync shows the knock with the stripped state A sent back.
        body = await b.rest.sync(bob, since=since)
        stripped = body["rooms"]["knock"][room_id]["knock_state"]["events"]
        assert {
            "type": "m.room.name",
            "state_key": "",
            "sender": alice.user_id,
            "content": {"name": "Knock first"},
        } in stripped
        # Retracting the knock goes through A too.
        await b.rest.request("POST", f"{V3}/rooms/{room_id}/leave", bob, body={})
        assert (await a.rest.request("GET", member_path, alice))["membership"] == "leave"
