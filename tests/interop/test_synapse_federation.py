"""Federation with a real Synapse: the `matrix-synapse` release the `interop` extra names,
installed on first use into a virtualenv of its own (.venv-synapse), runs as a subprocess with
a TLS federation listener on 127.0.0.1; both servers trust one test CA and allow loopback
addresses, and each fetches the other's keys itself. Runs where the `interop` extra is
installed (as the differential tests); alone with `pytest -m synapse_federation`; `.ci/run`
runs it with the rest.

What a Synapse peer needs from our side, and we from it, is in README.md ("Federating with
Synapse")."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest

from tests.federation.homeservers import Homeserver, HttpClient, homeservers
from tests.federation.test_federation_rooms import (
    Peer,
    joined_members,
    wait_for_members,
    wait_for_message,
)
from tests.helpers.rest import V3, RestHelper, User
from tests.helpers.synapse_server import federating_synapse_process, synapse_virtualenv
from tests.helpers.tls import CertAuthority, make_ca
from tests.interop.availability import require_synapse

require_synapse()

pytestmark = pytest.mark.synapse_federation
DEADLINE_S = 20.0


class Synapse:
    """The Synapse peer: its server name and its client API."""

    def __init__(self, server_name: str, rest: RestHelper) -> None:
        self.server_name = server_name
        self.rest = rest


async def start_synapse(directory: Path, ca: CertAuthority) -> AsyncIterator[Synapse]:
    # INFO, so that the log says what went wrong when a test fails.
    process, server_name = federating_synapse_process(
        directory, ca, log_level="INFO", python=await asyncio.to_thread(synapse_virtualenv)
    )
    await process.start()
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=process.ssl_context))
    try:
        yield Synapse(server_name, RestHelper(HttpClient(session, process.base_url)))
    finally:
        await session.close()
        await process.stop()


@pytest.fixture
async def peers(tmp_path: Path) -> AsyncIterator[tuple[Homeserver, Synapse]]:
    ca = make_ca(tmp_path)
    async with homeservers(tmp_path / "ours", 1, ca=ca) as (ours,):
        synapse_dir = tmp_path / "synapse"
        synapse_dir.mkdir()
        async for synapse in start_synapse(synapse_dir, ca):
            yield ours, synapse


async def wait_for_invite(server: Peer, user: User, room_id: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    since = None
    while loop.time() < deadline:
        params = {"timeout": "1000"} | ({"since": since} if since else {})
        body = await server.rest.sync(user, **params)
        if room_id in body["rooms"]["invite"]:
            return
        since = body["next_batch"]
    raise AssertionError(f"no invite to {room_id} for {user.user_id}")


async def wait_for_ephemeral(
    server: Peer, user: User, room_id: str, event_type: str, about: str
) -> None:
    """Until the user's /sync shows an ephemeral event of `event_type` in the room that
    names `about` (a typing user, or a receipt's reader)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    since = None
    while loop.time() < deadline:
        params = {"timeout": "1000"} | ({"since": since} if since else {})
        body = await server.rest.sync(user, **params)
        joined = body["rooms"]["join"].get(room_id, {})
        for event in joined.get("ephemeral", {}).get("events", []):
            if event["type"] == event_type and about in json.dumps(event["content"]):
                return
        since = body["next_batch"]
    raise AssertionError(f"no {event_type} about {about} for {user.user_id}")


async def upload(server: Peer, user: User, data: bytes) -> str:
    response = await server.rest.client.request(
        "POST",
        "/_matrix/media/v3/upload?filename=blob.bin",
        data=data,
        headers={**user.headers, "Content-Type": "application/octet-stream"},
    )
    assert response.status == 200, await response.text()
    return str((await response.json())["content_uri"])


async def download(server: Peer, user: User, mxc: str) -> bytes:
    origin, media_id = mxc.removeprefix("mxc://").split("/", 1)
    response = await server.rest.client.request(
        "GET", f"/_matrix/client/v1/media/download/{origin}/{media_id}", headers=user.headers
    )
    assert response.status == 200, await response.text()
    return bytes(await response.read())


async def test_rooms_across_our_server_and_synapse(peers: tuple[Homeserver, Synapse]) -> None:
    ours, synapse = peers
    alice = await ours.rest.register("alice")
    sam = await synapse.rest.register("sam")

    # A Synapse user creates a room and invites ours; ours joins through Synapse.
    room_id = await synapse.rest.create_room(sam, preset="private_chat", name="On Synapse")
    await synapse.rest.invite(sam, room_id, alice.user_id)
    await wait_for_invite(ours, alice, room_id)
    await ours.rest.request("POST", f"{V3}/rooms/{room_id}/join", alice, body={})
    assert await joined_members(ours, alice, room_id) == {alice.user_id, sam.user_id}
    await wait_for_members(synapse, sam, room_id, {alice.user_id, sam.user_id})
    await ours.rest.send(alice, room_id, "hello Synapse")
    await wait_for_message(synapse, sam, room_id, "hello Synapse")
    await synapse.rest.send(sam, room_id, "hello from Synapse")
    await wait_for_message(ours, alice, room_id, "hello from Synapse")

    # A Synapse user joins a room made on our server.
    ours_room = await ours.rest.create_room(alice, preset="public_chat", name="On ours")
    joined = await synapse.rest.request(
        "POST", f"{V3}/join/{ours_room}", sam, body={}, server_name=ours.server_name
    )
    assert joined["room_id"] == ours_room
    await wait_for_members(ours, alice, ours_room, {alice.user_id, sam.user_id})
    await synapse.rest.send(sam, ours_room, "Synapse in your room")
    await wait_for_message(ours, alice, ours_room, "Synapse in your room")
    await ours.rest.send(alice, ours_room, "welcome")
    await wait_for_message(synapse, sam, ours_room, "welcome")

    # Typing and read receipts across, both ways.
    await ours.rest.request(
        "PUT",
        f"{V3}/rooms/{ours_room}/typing/{alice.user_id}",
        alice,
        body={"typing": True, "timeout": 20000},
    )
    await wait_for_ephemeral(synapse, sam, ours_room, "m.typing", alice.user_id)
    await synapse.rest.request(
        "PUT",
        f"{V3}/rooms/{ours_room}/typing/{sam.user_id}",
        sam,
        body={"typing": True, "timeout": 20000},
    )
    await wait_for_ephemeral(ours, alice, ours_room, "m.typing", sam.user_id)
    welcome = await wait_for_message(ours, alice, ours_room, "welcome")
    await synapse.rest.request(
        "POST",
        f"{V3}/rooms/{ours_room}/receipt/m.read/{quote(welcome['event_id'])}",
        sam,
        body={},
    )
    await wait_for_ephemeral(ours, alice, ours_room, "m.receipt", sam.user_id)
    from_synapse = await wait_for_message(ours, alice, ours_room, "Synapse in your room")
    await ours.rest.request(
        "POST",
        f"{V3}/rooms/{ours_room}/receipt/m.read/{quote(from_synapse['event_id'])}",
        alice,
        body={},
    )
    await wait_for_ephemeral(synapse, sam, ours_room, "m.receipt", alice.user_id)

    # Media across, both ways: each server fetches the other's over federation.
    for uploader, up_user, downloader, down_user in (
        (ours, alice, synapse, sam),
        (synapse, sam, ours, alice),
    ):
        data = os.urandom(200_000)
        mxc = await upload(uploader, up_user, data)
        assert await download(downloader, down_user, mxc) == data

    # Profiles across.
    await ours.rest.request(
        "PUT", f"{V3}/profile/{alice.user_id}/displayname", alice, body={"displayname": "Alice"}
    )
    seen = await synapse.rest.request("GET", f"{V3}/profile/{alice.user_id}", sam)
    assert seen.get("displayname") == "Alice"
    await synapse.rest.request(
        "PUT", f"{V3}/profile/{sam.user_id}/displayname", sam, body={"displayname": "Sam"}
    )
    assert (await ours.rest.request("GET", f"{V3}/profile/{sam.user_id}", alice)) == {
        "displayname": "Sam"
    }
