"""Dehydrated devices (MSC3814): upload with keys, fetch, collect to-device messages in
batches without deleting them, replace and delete."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from tests.helpers.e2e import TestDevice, curve25519_public
from tests.helpers.rest import V3, RestHelper, User
from tests.helpers.spec_schemas import assert_valid

DEHYDRATED = "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device"
ERROR = "api/client-server/definitions/errors/error.yaml"
DATA = {"algorithm": "org.matrix.msc3814.v1.olm", "device_pickle": "opaque"}


def dehydrated_body(user: User, device_id: str | None = None) -> dict[str, Any]:
    device = TestDevice(user.user_id, device_id or curve25519_public())
    keys = device.device_keys()
    keys["dehydrated"] = True
    return {
        "device_id": device.device_id,
        "device_data": DATA,
        "initial_device_display_name": "Dehydrated device",
        "device_keys": device.sign({k: v for k, v in keys.items() if k != "signatures"}),
        "one_time_keys": device.one_time_keys(3),
        "fallback_keys": device.one_time_keys(1, fallback=True),
    }


async def error(
    rest: RestHelper, method: str, path: str, user: User, body: Any, status: int
) -> str:
    result = await rest.request(method, path, user, body=body, expect=status)
    assert_valid(ERROR, result)
    return str(result["errcode"])


async def test_dehydrated_device_receives_messages_for_later(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    assert await error(rest, "GET", DEHYDRATED, alice, None, 404) == "M_NOT_FOUND"
    body = dehydrated_body(alice)
    device_id = body["device_id"]
    put = await rest.request("PUT", DEHYDRATED, alice, body=body)
    assert put == {"device_id": device_id}
    assert await rest.request("GET", DEHYDRATED, alice) == {
        "device_id": device_id,
        "device_data": DATA,
    }
    # Others see it like any device: its keys, and a one-time key to claim.
    found = await rest.request(
        "POST", f"{V3}/keys/query", bob, body={"device_keys": {alice.user_id: []}}
    )
    assert found["device_keys"][alice.user_id][device_id]["dehydrated"] is True
    claimed = await rest.request(
        "POST",
        f"{V3}/keys/claim",
        bob,
        body={"one_time_keys": {alice.user_id: {device_id: "signed_curve25519"}}},
    )
    assert list(claimed["one_time_keys"][alice.user_id]) == [device_id]

    # Messages to it wait; they come back in batches, and a batch is not deleted by reading
    # the next one (an interrupted rehydration starts again).
    for n in range(150):
        await rest.request(
            "PUT",
            f"{V3}/sendToDevice/m.room.encrypted/t{n}",
            bob,
            body={"messages": {alice.user_id: {device_id: {"n": n}}}},
        )
    # The device ID is a base64 key: "/" and "+" in it are escaped, as clients do.
    events_path = f"{DEHYDRATED}/{quote(device_id, safe='')}/events"
    first = await rest.request("POST", events_path, alice, body={})
    assert [e["content"]["n"] for e in first["events"]] == list(range(100))
    assert first["events"][0] == {
        "sender": bob.user_id,
        "type": "m.room.encrypted",
        "content": {"n": 0},
    }
    second = await rest.request(
        "POST", events_path, alice, body={"next_batch": first["next_batch"]}
    )
    assert [e["content"]["n"] for e in second["events"]] == list(range(100, 150))
    last = await rest.request("POST", events_path, alice, body={"next_batch": second["next_batch"]})
    assert last["events"] == []
    again = await rest.request("POST", events_path, alice, body={})
    assert again["events"] == first["events"]

    # Only the owner's own dehydrated device can be read that way.
    assert await error(rest, "POST", events_path, bob, {}, 403) == "M_FORBIDDEN"
    mine = f"{DEHYDRATED}/{alice.device_id}/events"
    assert await error(rest, "POST", mine, alice, {}, 403) == "M_FORBIDDEN"
    bad = {"next_batch": "nope"}
    assert await error(rest, "POST", events_path, alice, bad, 400) == "M_INVALID_PARAM"


async def test_replacing_and_deleting_the_dehydrated_device(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    first = dehydrated_body(alice)
    await rest.request("PUT", DEHYDRATED, alice, body=first)
    second = dehydrated_body(alice)
    await rest.request("PUT", DEHYDRATED, alice, body=second)
    devices = await rest.request("GET", f"{V3}/devices", alice)
    ids = {d["device_id"] for d in devices["devices"]}
    assert second["device_id"] in ids and first["device_id"] not in ids
    assert await rest.request("DELETE", DEHYDRATED, alice) == {"device_id": second["device_id"]}
    devices = await rest.request("GET", f"{V3}/devices", alice)
    assert {d["device_id"] for d in devices["devices"]} == {alice.device_id}
    assert await error(rest, "DELETE", DEHYDRATED, alice, None, 404) == "M_NOT_FOUND"
    assert await error(rest, "GET", DEHYDRATED, alice, None, 404) == "M_NOT_FOUND"


async def test_bad_dehydrated_devices(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    good = dehydrated_body(alice)
    for body, status, code in (
        ({k: v for k, v in good.items() if k != "device_keys"}, 400, "M_MISSING_PARAM"),
        (dict(good, device_id=""), 400, "M_INVALID_PARAM"),
        (dict(good, device_data="x"), 400, "M_BAD_JSON"),
        (dict(good, device_data={}), 400, "M_BAD_JSON"),
        (dict(good, one_time_keys=[1]), 400, "M_BAD_JSON"),
        # Keys signed for another device, or as another user.
        (dict(good, device_id="OTHER"), 400, "M_INVALID_PARAM"),
        (dehydrated_body(bob), 400, "M_INVALID_PARAM"),
        # A running device's ID.
        (dehydrated_body(alice, alice.device_id), 400, "M_INVALID_PARAM"),
    ):
        assert await error(rest, "PUT", DEHYDRATED, alice, body, status) == code, body
    assert await error(rest, "GET", DEHYDRATED, alice, None, 404) == "M_NOT_FOUND"
    # The running device kept its tokens.
    await rest.request("GET", f"{V3}/account/whoami", alice)
