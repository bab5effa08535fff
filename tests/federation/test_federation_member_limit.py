"""limits.max_joined_members_per_room holds for remote users joining over federation: a full
room's resident server refuses make_join and send_join with 403 M_FORBIDDEN (S-S API
"Joining Rooms"), and the joining user's client gets that refusal."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from federation.transport import RemoteError
from homeserver.crypto.signing import hash_and_sign_event
from homeserver.events.event import Event
from tests.federation.homeservers import homeservers
from tests.federation.test_federation_reads import path, signed_as
from tests.federation.test_federation_restricted_joins import MAKE_JOIN, SEND_JOIN, join
from tests.federation.test_federation_rooms import join_via, wait_for_members
from tests.helpers.spec_schemas import assert_response_valid

FULL = "at most 2 joined members"


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
async def test_a_full_room_refuses_remote_joins(tmp_path: Path, engine: str) -> None:
    async with homeservers(tmp_path, 2, engine) as (a, b):
        a.config.limits = dataclasses.replace(a.config.limits, max_joined_members_per_room=2)
        await a.stop()
        await a.start()
        alice, dave = await a.rest.register("alice"), await a.rest.register("dave")
        bob = await b.rest.register("bob")
        carol = b.user_id("carol")
        room_id = await a.rest.create_room(alice, preset="public_chat")
        query = {"ver": ["12"]}
        async with signed_as(b) as transport:
            # A template fetched while there was room, to send once there is none.
            template = await transport.request(
                a.server_name, "GET", path("make_join", room_id, carol), query=query
            )
            await a.rest.join(dave, room_id)

            refused = await join(b, bob, room_id, via=a, expect=403)
            assert refused["errcode"] == "M_FORBIDDEN"
            assert FULL in refused["error"]

            with pytest.raises(RemoteError) as info:
                await transport.request(
                    a.server_name, "GET", path("make_join", room_id, carol), query=query
                )
            assert (info.value.status, info.value.errcode) == (403, "M_FORBIDDEN")
            assert_response_valid(*MAKE_JOIN, 403, info.value.body)

            room_version = await a.core.storage.rooms.get_room_version(room_id)
            assert room_version is not None
            pdu = dict(template["event"])
            hash_and_sign_event(room_version, pdu, b.server_name, b.core.server.keys.signing_key)
            event = Event(pdu, room_version)
            with pytest.raises(RemoteError) as info:
                await transport.request(
                    a.server_name,
                    "PUT",
                    path("send_join", room_id, event.event_id).replace("/v1/", "/v2/"),
                    content=event.pdu,
                )
            assert (info.value.status, info.value.errcode) == (403, "M_FORBIDDEN")
            assert_response_valid(*SEND_JOIN, 403, info.value.body)
            assert await a.core.storage.events.get_event(event.event_id) is None

        # Once someone leaves, the remote user gets in.
        await a.rest.leave(dave, room_id)
        await join_via(b, bob, room_id, a)
        await wait_for_members(a, alice, room_id, {alice.user_id, bob.user_id})
