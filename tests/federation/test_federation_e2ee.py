"""End-to-end encryption keys across servers (S-S API "End-to-End Encryption"): a client's
/keys/query and /keys/claim for another server's user go to that server's /user/keys/query
and /user/keys/claim; /user/devices lists a user's devices with their keys."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import quote

from federation.transport import FederationTransport
from tests.federation.homeservers import Homeserver, homeservers
from tests.federation.test_federation_rooms import join_via, wait_for_members
from tests.helpers.e2e import CrossSigningKeys, TestDevice
from tests.helpers.rest import V3, User
from tests.helpers.spec_schemas import assert_response_valid

DEADLINE_S = 10.0


async def test_keys_of_another_servers_user(tmp_path: Path) -> None:
    async with homeservers(tmp_path, 2) as (a, b):
        alice = await a.rest.register("alice")
        await a.rest.request(
            "PUT", f"{V3}/devices/{alice.device_id}", alice, body={"display_name": "Home PC"}
        )
        bob = await b.rest.register("bob")
        device = TestDevice(alice.user_id, alice.device_id)
        keys = device.device_keys()
        otks = device.one_time_keys(2)
        await a.rest.request(
            "POST", f"{V3}/keys/upload", alice, body={"device_keys": keys, "one_time_keys": otks}
        )
        cross_signing = CrossSigningKeys(alice.user_id)
        await a.rest.request(
            "POST", f"{V3}/keys/device_signing/upload", alice, body=cross_signing.upload_body()
        )

        found = await b.rest.request(
            "POST",
            f"{V3}/keys/query",
            bob,
            body={"device_keys": {alice.user_id: [], "@x:unreachable.invalid": []}},
        )
        assert_response_valid("client-server/keys.yaml", "/keys/query", "post", 200, found)
        # The keys as signed, without the device's name: names stay on their server.
        assert found["device_keys"][alice.user_id] == {alice.device_id: keys}
        assert found["master_keys"][alice.user_id] == cross_signing.key_object("master")
        assert "unreachable.invalid" in found["failures"]

        claimed = await b.rest.request(
            "POST",
            f"{V3}/keys/claim",
            bob,
            body={"one_time_keys": {alice.user_id: {alice.device_id: "signed_curve25519"}}},
        )
        got = claimed["one_time_keys"][alice.user_id][alice.device_id]
        assert len(got) == 1 and next(iter(got)) in otks

        transport = FederationTransport(
            b.server_name, b.core.server.keys.signing_key, b.config.federation
        )
        try:
            devices = await transport.request(
                a.server_name, "GET", f"/_matrix/federation/v1/user/devices/{quote(alice.user_id)}"
            )
        finally:
            await transport.close()
        assert devices["user_id"] == alice.user_id
        assert devices["devices"] == [{"device_id": alice.device_id, "keys": keys}]
        assert devices["master_key"] == cross_signing.key_object("master")
        assert isinstance(devices["stream_id"], int)


async def wait_for_changed(server: Homeserver, user: User, since: str, who: str) -> str:
    """Until the user's /sync lists `who` in device_lists.changed; returns the next token."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while loop.time() < deadline:
        body = await server.rest.sync(user, since=since, timeout="1000")
        since = body["next_batch"]
        if who in body["device_lists"]["changed"]:
            return since
    raise AssertionError(f"{who} never showed as changed to {user.user_id}")


async def test_device_changes_reach_users_on_other_servers(tmp_path: Path) -> None:
    async with homeservers(tmp_path, 2) as (a, b):
        alice = await a.rest.register("alice")
        bob = await b.rest.register("bob")
        room_id = await a.rest.create_room(alice, preset="public_chat")
        await join_via(b, bob, room_id, a)
        await wait_for_members(a, alice, room_id, {alice.user_id, bob.user_id})
        since = (await b.rest.sync(bob))["next_batch"]

        # A new device with keys (m.device_list_update), then cross-signing keys
        # (m.signing_key_update), then the device logs out (a deletion): Bob's client on
        # the other server hears of each, and re-reading gets what is there now.
        laptop = await a.rest.login("alice")
        keys = TestDevice(alice.user_id, laptop.device_id).device_keys()
        await a.rest.request("POST", f"{V3}/keys/upload", laptop, body={"device_keys": keys})
        since = await wait_for_changed(b, bob, since, alice.user_id)
        found = await b.rest.request(
            "POST", f"{V3}/keys/query", bob, body={"device_keys": {alice.user_id: []}}
        )
        assert found["device_keys"][alice.user_id] == {laptop.device_id: keys}

        await a.rest.request(
            "POST",
            f"{V3}/keys/device_signing/upload",
            alice,
            body=CrossSigningKeys(alice.user_id).upload_body(),
        )
        since = await wait_for_changed(b, bob, since, alice.user_id)

        await a.rest.request("POST", f"{V3}/logout", laptop, body={})
        await wait_for_changed(b, bob, since, alice.user_id)
        found = await b.rest.request(
            "POST", f"{V3}/keys/query", bob, body={"device_keys": {alice.user_id: []}}
        )
        assert found["device_keys"][alice.user_id] == {}
