"""Restricted joins across servers (S-S API "Restricted rooms"): the resident server checks the
allow list, names one of its users who may invite as the authoriser and countersigns the join;
a server that cannot check or cannot vouch says so and the joining server tries another."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from federation.transport import RemoteError
from homeserver.crypto.signing import hash_and_sign_event
from homeserver.events.event import Event
from tests.federation.homeservers import Homeserver, homeservers
from tests.federation.test_federation_reads import path, signed_as
from tests.federation.test_federation_rooms import join_via, wait_for_members
from tests.helpers.rest import V3, User
from tests.helpers.spec_schemas import assert_response_valid

AUTHORISER = "join_authorised_via_users_server"
MAKE_JOIN = ("server-server/joins-v1.yaml", "/make_join/{roomId}/{userId}", "get")
SEND_JOIN = ("server-server/joins-v2.yaml", "/send_join/{roomId}/{eventId}", "put")


async def restricted_room(server: Homeserver, owner: User, allowed: str, **body: Any) -> str:
    return await server.rest.create_room(
        owner,
        initial_state=[
            {
                "type": "m.room.join_rules",
                "content": {
                    "join_rule": "restricted",
                    "allow": [{"type": "m.room_membership", "room_id": allowed}],
                },
            }
        ],
        **body,
    )


async def member_event(server: Homeserver, room_id: str, user_id: str) -> Event:
    storage = server.core.storage
    event_id = await storage.rooms.get_current_state_event_id(room_id, "m.room.member", user_id)
    assert event_id is not None
    event = await storage.events.get_event(event_id)
    assert event is not None
    return event


async def join(server: Homeserver, user: User, room_id: str, via: Homeserver, expect: int) -> Any:
    return await server.rest.request(
        "POST", f"{V3}/join/{room_id}", user, body={}, expect=expect, via=via.server_name
    )


async def test_restricted_join_vouched_for_by_the_resident(tmp_path: Path) -> None:
    async with homeservers(tmp_path, 3) as (a, b, c):
        alice = await a.rest.register("alice")
        bob = await b.rest.register("bob")
        mallory = await b.rest.register("mallory")
        carol = await c.rest.register("carol")
        space = await a.rest.create_room(alice, preset="public_chat")
        room_id = await restricted_room(a, alice, space, invite=[carol.user_id])
        await join_via(c, carol, room_id, a)
        await join_via(b, bob, space, a)

        await join_via(b, bob, room_id, a)

        everyone = {alice.user_id, bob.user_id, carol.user_id}
        for server, user in ((a, alice), (b, bob), (c, carol)):
            await wait_for_members(server, user, room_id, everyone)
        # Every server holds the join A vouched for, with A's signature beside B's: C took it
        # from A's relay and checked both.
        for server in (a, b, c):
            joined = await member_event(server, room_id, bob.user_id)
            assert joined.content[AUTHORISER] == alice.user_id
            assert set(joined.pdu["signatures"]) == {a.server_name, b.server_name}

        # A user of B in no allowed room is refused by A, and nothing reaches the room.
        refused = await join(b, mallory, room_id, a, 403)
        assert refused["errcode"] == "M_FORBIDDEN"
        assert await a.core.storage.rooms.get_membership(room_id, mallory.user_id) is None


async def test_make_join_and_send_join_answers(tmp_path: Path) -> None:
    async with homeservers(tmp_path, 2) as (a, b):
        alice = await a.rest.register("alice")
        bob = await b.rest.register("bob")
        space = await a.rest.create_room(alice, preset="public_chat")
        elsewhere = await b.rest.create_room(bob, preset="public_chat")
        room_id = await restricted_room(a, alice, space)
        unknowable = await restricted_room(a, alice, elsewhere)
        await join_via(b, bob, space, a)

        async with signed_as(b) as transport:
            query = {"ver": ["12"]}
            template = await transport.request(
                a.server_name, "GET", path("make_join", room_id, bob.user_id), query=query
            )
            assert_response_valid(*MAKE_JOIN, 200, template)
            assert template["event"]["content"][AUTHORISER] == alice.user_id

            # A is in none of the rooms that let members join `unknowable`: it cannot tell.
            with pytest.raises(RemoteError) as info:
                await transport.request(
                    a.server_name, "GET", path("make_join", unknowable, bob.user_id), query=query
                )
            assert info.value.status == 400
            assert info.value.errcode == "M_UNABLE_TO_AUTHORISE_JOIN"
            assert_response_valid(*MAKE_JOIN, 400, info.value.body)

            # A join naming A's user as authoriser, for a user in no allowed room, is refused
            # at send_join too (and not countersigned).
            room_version = await a.core.storage.rooms.get_room_version(room_id)
            assert room_version is not None
            stranger = b.user_id("stranger")
            pdu = {
                **template["event"],
                "sender": stranger,
                "state_key": stranger,
                "content": {"membership": "join", AUTHORISER: alice.user_id},
            }
            hash_and_sign_event(room_version, pdu, b.server_name, b.core.server.keys.signing_key)
            event = Event(pdu, room_version)
            with pytest.raises(RemoteError) as info:
                await transport.request(
                    a.server_name,
                    "PUT",
                    path("send_join", room_id, event.event_id).replace("/v1/", "/v2/"),
                    content=event.pdu,
                )
            assert info.value.status == 403
            assert_response_valid(*SEND_JOIN, 403, info.value.body)


async def test_a_resident_nobody_on_which_may_invite_joins_through_another(
    tmp_path: Path,
) -> None:
    async with homeservers(tmp_path, 2) as (a, b):
        alice = await a.rest.register("alice")
        bob = await b.rest.register("bob")
        dave = await b.rest.register("dave")
        space = await a.rest.create_room(alice, preset="public_chat")
        room_id = await restricted_room(
            a, alice, space, power_level_content_override={"invite": 50}
        )
        for user in (bob, dave):
            await join_via(b, user, space, a)
        await join_via(b, bob, room_id, a)
        await wait_for_members(b, bob, room_id, {alice.user_id, bob.user_id})

        # B is in the room but bob may not invite, so B cannot vouch for dave: it says so to
        # other servers, and joins dave through A, whose alice may.
        erin = await a.rest.register("erin")
        await a.rest.join(erin, space)
        await wait_for_members(
            b, bob, space, {alice.user_id, bob.user_id, dave.user_id, erin.user_id}
        )
        async with signed_as(a) as transport:
            with pytest.raises(RemoteError) as info:
                await transport.request(
                    b.server_name,
                    "GET",
                    path("make_join", room_id, erin.user_id),
                    query={"ver": ["12"]},
                )
            assert info.value.status == 400
            assert info.value.errcode == "M_UNABLE_TO_GRANT_JOIN"
            assert_response_valid(*MAKE_JOIN, 400, info.value.body)
        answer = await b.rest.request("POST", f"{V3}/rooms/{quote(room_id)}/join", dave, body={})
        assert answer == {"room_id": room_id}
        everyone = {alice.user_id, bob.user_id, dave.user_id}
        await wait_for_members(a, alice, room_id, everyone)
        await wait_for_members(b, bob, room_id, everyone)
        joined = await member_event(b, room_id, dave.user_id)
        assert joined.content[AUTHORISER] == alice.user_id
        assert a.server_name in joined.pdu["signatures"]
