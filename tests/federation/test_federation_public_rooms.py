"""/publicRooms across servers (S-S API "Published Room Directory"): a client on B reads A's
directory through B, A answers signed requests itself, and B falls back to GET for a server
without the POST and passes on only well-formed rooms."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from federation.transport import RemoteError
from tests.federation.homeservers import homeservers
from tests.federation.test_federation_reads import path, signed_as
from tests.helpers.rest import V3, RestHelper, User
from tests.helpers.spec_schemas import assert_response_valid
from tests.helpers.tls import RecordingServer, https_server, make_ca, unused_port

CS_API = "client-server/list_public_rooms.yaml"
SS_API = "server-server/public_rooms.yaml"
PUBLIC_ROOMS = "/_matrix/federation/v1/publicRooms"


async def public_rooms(
    rest: RestHelper, user: User, server: str, body: Any = None, expect: int = 200
) -> Any:
    method = "GET" if body is None else "POST"
    answer = await rest.request(
        method, f"{V3}/publicRooms", user, body=body, expect=expect, server=server
    )
    if expect == 200:
        assert_response_valid(CS_API, "/publicRooms", method.lower(), 200, answer)
    return answer


def room_ids(answer: Any) -> list[str]:
    return [room["room_id"] for room in answer["chunk"]]


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
async def test_a_client_on_b_reads_the_directory_of_a(tmp_path: Path, engine: str) -> None:
    async with AsyncExitStack() as stack:
        a, b = await stack.enter_async_context(homeservers(tmp_path, 2, engine))
        alice = await a.rest.register("alice")
        bob = await b.rest.register("bob")
        alpha = await a.rest.create_room(alice, visibility="public", name="Alpha")
        space = await a.rest.create_room(
            alice, visibility="public", name="Space", creation_content={"type": "m.space"}
        )
        await a.rest.create_room(alice, name="Unlisted")
        await b.rest.create_room(bob, visibility="public", name="B's own")
        expected = sorted([alpha, space])

        listed = await public_rooms(b.rest, bob, a.server_name)
        assert room_ids(listed) == expected
        assert listed["total_room_count_estimate"] == 2
        alpha_chunk = next(r for r in listed["chunk"] if r["room_id"] == alpha)
        assert alpha_chunk["name"] == "Alpha" and alpha_chunk["num_joined_members"] == 1
        found = await public_rooms(
            b.rest, bob, a.server_name, body={"filter": {"generic_search_term": "alpha"}}
        )
        assert room_ids(found) == [alpha]
        first = await public_rooms(b.rest, bob, a.server_name, body={"limit": 1})
        second = await public_rooms(
            b.rest, bob, a.server_name, body={"limit": 1, "since": first["next_batch"]}
        )
        assert room_ids(first) + room_ids(second) == expected
        assert "next_batch" not in second

        async with signed_as(b) as fed:
            answer = await fed.request(a.server_name, "GET", path("publicRooms"))
            assert_response_valid(SS_API, "/publicRooms", "get", 200, answer)
            assert room_ids(answer) == expected
            limited = await fed.request(
                a.server_name, "GET", path("publicRooms"), query={"limit": "1"}
            )
            assert room_ids(limited) == expected[:1] and "next_batch" in limited
            spaces = await fed.request(
                a.server_name,
                "POST",
                path("publicRooms"),
                content={"filter": {"room_types": ["m.space"]}},
            )
            assert_response_valid(SS_API, "/publicRooms", "post", 200, spaces)
            assert room_ids(spaces) == [space]
            with pytest.raises(RemoteError) as unsigned:
                await fed.request(a.server_name, "GET", path("publicRooms"), signed=False)
            assert unsigned.value.status == 401

        unreachable = await public_rooms(b.rest, bob, f"127.0.0.1:{unused_port()}", expect=502)
        assert unreachable["errcode"] == "M_UNKNOWN"


async def test_fallback_to_get_keeps_well_formed_rooms(tmp_path: Path) -> None:
    good = {
        "room_id": "!good:old.example",
        "num_joined_members": 5,
        "world_readable": True,
        "guest_can_join": False,
        "name": "Old times",
        "avatar_url": "https://not.mxc/",
        "extra": "dropped",
    }
    other = {**good, "room_id": "!other:old.example", "name": "Other", "avatar_url": "mxc://x/y"}
    malformed = [
        {**good, "num_joined_members": "5"},
        {**good, "room_id": "good:old.example"},
        {**good, "world_readable": None},
        "not a room",
    ]
    old_server = RecordingServer()

    async def directory(request: web.Request) -> web.StreamResponse:
        if request.method == "POST":
            return web.json_response(
                {"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}, status=400
            )
        return web.json_response(
            {"chunk": [good, *malformed, other], "next_batch": "n1", "prev_batch": 7}
        )

    old_server.route(PUBLIC_ROOMS, directory)
    ca = make_ca(tmp_path)
    async with AsyncExitStack() as stack:
        (b,) = await stack.enter_async_context(homeservers(tmp_path, 1, ca=ca))
        port = await stack.enter_async_context(
            https_server(old_server.app, ca.server_context("127.0.0.1"))
        )
        old = f"127.0.0.1:{port}"
        bob = await b.rest.register("bob")

        listed = await public_rooms(b.rest, bob, old, body={"limit": 10, "since": "n0"})
        good_chunk = {k: v for k, v in good.items() if k not in ("avatar_url", "extra")}
        other_chunk = {k: v for k, v in other.items() if k != "extra"}
        assert listed == {"chunk": [good_chunk, other_chunk], "next_batch": "n1"}
        assert [(r.method, r.raw_path) for r in old_server.seen(PUBLIC_ROOMS)] == [
            ("POST", PUBLIC_ROOMS),
            ("GET", f"{PUBLIC_ROOMS}?include_all_networks=false&limit=10&since=n0"),
        ]

        # GET has no filter: the whole directory is read and filtered here.
        found = await public_rooms(
            b.rest, bob, old, body={"limit": 10, "filter": {"generic_search_term": "old TIMES"}}
        )
        assert found == {"chunk": [good_chunk], "total_room_count_estimate": 1}
        assert old_server.seen(PUBLIC_ROOMS)[-1].raw_path == (
            f"{PUBLIC_ROOMS}?include_all_networks=false"
        )
