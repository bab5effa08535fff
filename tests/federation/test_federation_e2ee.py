"""End-to-end encryption keys across servers (S-S API "End-to-End Encryption"): a client's
/keys/query and /keys/claim for another server's user go to that server's /user/keys/query
and /user/keys/claim; /user/devices lists a user's devices with their keys."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from federation.transport import FederationTransport
from tests.federation.homeservers import homeservers
from tests.helpers.e2e import CrossSigningKeys, TestDevice
from tests.helpers.rest import V3
from tests.helpers.spec_schemas import assert_response_valid


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
