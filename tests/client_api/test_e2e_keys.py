"""End-to-end encryption keys (C-S API "End-to-End Encryption"): /keys/upload, /keys/query,
/keys/claim, cross-signing keys and signatures, and the key sections of /sync."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.helpers.e2e import CrossSigningKeys, TestDevice
from tests.helpers.rest import V3, RestHelper, User
from tests.helpers.spec_schemas import assert_response_valid, assert_valid

KEYS_API = "client-server/keys.yaml"
CROSS_SIGNING_API = "client-server/cross_signing.yaml"
ERROR = "api/client-server/definitions/errors/error.yaml"


def device_of(user: User) -> TestDevice:
    return TestDevice(user.user_id, user.device_id)


async def upload(rest: RestHelper, user: User, body: Any, expect: int = 200) -> Any:
    result = await rest.request("POST", f"{V3}/keys/upload", user, body=body, expect=expect)
    if expect == 200:
        assert_response_valid(KEYS_API, "/keys/upload", "post", 200, result)
    else:
        assert_valid(ERROR, result)
    return result


async def query(rest: RestHelper, user: User, wanted: dict[str, list[str]]) -> Any:
    result = await rest.request("POST", f"{V3}/keys/query", user, body={"device_keys": wanted})
    assert_response_valid(KEYS_API, "/keys/query", "post", 200, result)
    return result


async def claim(rest: RestHelper, user: User, wanted: dict[str, dict[str, str]]) -> Any:
    result = await rest.request("POST", f"{V3}/keys/claim", user, body={"one_time_keys": wanted})
    assert_response_valid(KEYS_API, "/keys/claim", "post", 200, result)
    return result


async def upload_cross_signing(rest: RestHelper, user: User, body: Any, expect: int = 200) -> Any:
    result = await rest.request(
        "POST", f"{V3}/keys/device_signing/upload", user, body=body, expect=expect
    )
    if expect == 200:
        assert_response_valid(CROSS_SIGNING_API, "/keys/device_signing/upload", "post", 200, result)
    return result


async def upload_signatures(rest: RestHelper, user: User, body: Any) -> Any:
    result = await rest.request("POST", f"{V3}/keys/signatures/upload", user, body=body)
    assert_response_valid(CROSS_SIGNING_API, "/keys/signatures/upload", "post", 200, result)
    return result


# -- device keys -----------------------------------------------------------------------------


async def test_device_keys_upload_and_query(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    device = device_of(alice)
    keys = device.device_keys()
    result = await upload(rest, alice, {"device_keys": keys})
    assert result == {"one_time_key_counts": {"signed_curve25519": 0}}
    found = await query(rest, bob, {alice.user_id: [], "@nobody:test.local": []})
    assert found["device_keys"][alice.user_id] == {alice.device_id: keys}
    assert found["device_keys"]["@nobody:test.local"] == {}
    # The device's name comes along, outside what the device signed.
    await rest.request(
        "PUT", f"{V3}/devices/{alice.device_id}", alice, body={"display_name": "phone"}
    )
    found = await query(rest, bob, {alice.user_id: []})
    shown = found["device_keys"][alice.user_id][alice.device_id]
    assert shown == dict(keys, unsigned={"device_display_name": "phone"})
    # Asking for a named device, and for one that does not exist.
    named = await query(rest, bob, {alice.user_id: [alice.device_id, "NOPE"]})
    assert list(named["device_keys"][alice.user_id]) == [alice.device_id]


async def test_device_keys_must_be_signed_by_the_device(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    device = device_of(alice)
    keys = device.device_keys()
    forged = dict(keys, algorithms=["m.megolm.v1.aes-sha2"])  # changed after signing
    error = await upload(rest, alice, {"device_keys": forged}, expect=400)
    assert error["errcode"] == "M_INVALID_SIGNATURE"
    # Signed by another key than the one the keys name.
    other = TestDevice(alice.user_id, alice.device_id)
    mixed = other.sign({k: v for k, v in keys.items() if k != "signatures"})
    mixed["keys"] = keys["keys"]
    error = await upload(rest, alice, {"device_keys": other.sign(mixed)}, expect=400)
    assert error["errcode"] == "M_INVALID_SIGNATURE"
    unsigned = {k: v for k, v in keys.items() if k != "signatures"}
    error = await upload(rest, alice, {"device_keys": unsigned}, expect=400)
    assert error["errcode"] == "M_INVALID_SIGNATURE"
    # Keys naming another user or device.
    for wrong in (TestDevice(bob.user_id, alice.device_id), TestDevice(alice.user_id, "OTHER")):
        error = await upload(rest, alice, {"device_keys": wrong.device_keys()}, expect=400)
        assert error["errcode"] == "M_INVALID_PARAM"
    # Malformed key objects.
    for body in (
        {"device_keys": "no"},
        {"device_keys": dict(keys, keys=["x"])},
        {"device_keys": dict(keys, algorithms="m.megolm.v1.aes-sha2")},
        {"one_time_keys": {"signed_curve25519:A": 5}},
        {"one_time_keys": {"no-colon": "key"}},
        {"one_time_keys": {"signed_curve25519:A": {"signatures": {}}}},
        {"fallback_keys": [1]},
    ):
        error = await upload(rest, alice, body, expect=400)
        assert error["errcode"] in ("M_BAD_JSON", "M_INVALID_PARAM"), body
    # Nothing of it was stored.
    found = await query(rest, bob, {alice.user_id: []})
    assert found["device_keys"][alice.user_id] == {}


async def test_deleting_a_device_deletes_its_keys(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    await upload(rest, alice, {"device_keys": device_of(alice).device_keys()})
    await rest.request("POST", f"{V3}/logout", alice)
    bob = await rest.register("bob")
    found = await query(rest, bob, {alice.user_id: []})
    assert found["device_keys"][alice.user_id] == {}


# -- one-time and fallback keys -----------------------------------------------------------------


async def test_one_time_keys_are_claimed_once_then_the_fallback(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    device = device_of(alice)
    otks = device.one_time_keys(2)
    fallback = device.one_time_keys(1, fallback=True)
    result = await upload(rest, alice, {"one_time_keys": otks, "fallback_keys": fallback})
    assert result["one_time_key_counts"] == {"signed_curve25519": 2}
    synced = await rest.sync(alice)
    assert synced["device_one_time_keys_count"] == {"signed_curve25519": 2}
    assert synced["device_unused_fallback_key_types"] == ["signed_curve25519"]

    wanted = {alice.user_id: {alice.device_id: "signed_curve25519"}}
    got = []
    for _ in range(4):
        claimed = await claim(rest, bob, wanted)
        got.append(claimed["one_time_keys"][alice.user_id][alice.device_id])
    assert [dict(g) for g in got[:2]] == [{k: v} for k, v in sorted(otks.items())]
    # Then the fallback key, as often as asked, and it is reported used.
    assert got[2] == got[3] == fallback
    synced = await rest.sync(alice)
    assert synced["device_one_time_keys_count"] == {"signed_curve25519": 0}
    assert synced["device_unused_fallback_key_types"] == []
    # The same fallback key again is a retry: still used. A new one is unused.
    await upload(rest, alice, {"fallback_keys": fallback})
    assert (await rest.sync(alice))["device_unused_fallback_key_types"] == []
    await upload(rest, alice, {"fallback_keys": device.one_time_keys(1, fallback=True)})
    assert (await rest.sync(alice))["device_unused_fallback_key_types"] == ["signed_curve25519"]
    # A device with no keys of the algorithm, and an unknown device, get nothing.
    nothing = await claim(rest, bob, {alice.user_id: {alice.device_id: "other", "NOPE": "x"}})
    assert nothing["one_time_keys"] == {}


async def test_concurrent_claims_never_share_a_key(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    claimers = [await rest.register(f"claimer{i}") for i in range(4)]
    device = device_of(alice)
    otks = device.one_time_keys(10)
    await upload(rest, alice, {"one_time_keys": otks})
    wanted = {alice.user_id: {alice.device_id: "signed_curve25519"}}
    results = await asyncio.gather(*(claim(rest, claimers[i % 4], wanted) for i in range(16)))
    claimed = [
        key_id
        for r in results
        for key_id in r["one_time_keys"].get(alice.user_id, {}).get(alice.device_id, {})
    ]
    assert sorted(claimed) == sorted(otks)  # each once; six claims found none left


async def test_one_time_key_id_reused_with_another_key_is_refused(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    device = device_of(alice)
    otks = device.one_time_keys(1)
    await upload(rest, alice, {"one_time_keys": otks})
    # The same upload again (a retry) is fine and adds nothing.
    again = await upload(rest, alice, {"one_time_keys": otks})
    assert again["one_time_key_counts"] == {"signed_curve25519": 1}
    (key_id,) = otks
    clash = {key_id: device.sign({"key": "another"})}
    error = await upload(rest, alice, {"one_time_keys": clash}, expect=400)
    assert error["errcode"] == "M_INVALID_PARAM"


async def test_bad_claims_and_queries(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    for path, body in (
        ("claim", {}),
        ("claim", {"one_time_keys": {"not-a-user": {"D": "signed_curve25519"}}}),
        ("claim", {"one_time_keys": {alice.user_id: {"D": 5}}}),
        ("query", {"device_keys": {alice.user_id: "D"}}),
        ("query", {"device_keys": []}),
    ):
        error = await rest.request("POST", f"{V3}/keys/{path}", alice, body=body, expect=400)
        assert_valid(ERROR, error)
    # Remote users are reported as failures until federation is there.
    result = await query(rest, alice, {"@someone:elsewhere.example": []})
    assert "elsewhere.example" in result["failures"]


# -- cross-signing ------------------------------------------------------------------------------


async def test_cross_signing_upload_and_query(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    keys = CrossSigningKeys(alice.user_id)
    await upload_cross_signing(rest, alice, keys.upload_body())
    # The same keys again need no authentication (a retry after a lost response).
    await upload_cross_signing(rest, alice, keys.upload_body())
    mine = await query(rest, alice, {alice.user_id: []})
    assert mine["master_keys"][alice.user_id] == keys.key_object("master")
    assert mine["self_signing_keys"][alice.user_id] == keys.key_object("self_signing")
    assert mine["user_signing_keys"][alice.user_id] == keys.key_object("user_signing")
    theirs = await query(rest, bob, {alice.user_id: []})
    assert alice.user_id in theirs["master_keys"]
    assert alice.user_id in theirs["self_signing_keys"]
    assert theirs["user_signing_keys"] == {}  # only the owner sees it


async def test_replacing_cross_signing_keys_needs_authentication(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    await upload_cross_signing(rest, alice, CrossSigningKeys(alice.user_id).upload_body())
    replacement = CrossSigningKeys(alice.user_id).upload_body()
    challenge = await upload_cross_signing(rest, alice, replacement, expect=401)
    assert ["m.login.password"] in [f["stages"] for f in challenge["flows"]]
    replacement["auth"] = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": "alice"},
        "password": "correct horse",
        "session": challenge["session"],
    }
    await upload_cross_signing(rest, alice, replacement)
    mine = await query(rest, alice, {alice.user_id: []})
    assert mine["master_keys"][alice.user_id] == replacement["master_key"]


async def test_bad_cross_signing_uploads(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    keys = CrossSigningKeys(alice.user_id)
    # Self-signing key without any master key.
    error = await upload_cross_signing(
        rest, alice, {"self_signing_key": keys.key_object("self_signing")}, expect=400
    )
    assert error["errcode"] == "M_MISSING_PARAM"
    # Self-signing key signed by another master key.
    other = CrossSigningKeys(alice.user_id)
    body = {
        "master_key": keys.key_object("master"),
        "self_signing_key": other.key_object("self_signing"),
    }
    error = await upload_cross_signing(rest, alice, body, expect=400)
    assert error["errcode"] == "M_INVALID_SIGNATURE"
    # Keys of another user, wrong usage, two keys in one object.
    wrong_user = CrossSigningKeys(bob.user_id).upload_body()
    error = await upload_cross_signing(rest, alice, wrong_user, expect=400)
    assert error["errcode"] == "M_INVALID_PARAM"
    wrong_usage = dict(keys.key_object("master"), usage=["self_signing"])
    error = await upload_cross_signing(rest, alice, {"master_key": wrong_usage}, expect=400)
    assert error["errcode"] == "M_INVALID_PARAM"
    two = keys.key_object("master")
    two["keys"]["ed25519:other"] = "other"
    error = await upload_cross_signing(rest, alice, {"master_key": two}, expect=400)
    assert error["errcode"] == "M_INVALID_PARAM"
    # A public key that is one of the user's device IDs.
    clash = await rest.login("alice", device_id=keys.public("master"))
    error = await upload_cross_signing(
        rest, clash, {"master_key": keys.key_object("master")}, expect=403
    )
    assert error["errcode"] == "M_FORBIDDEN"
    # Nothing was stored.
    assert (await query(rest, bob, {alice.user_id: []}))["master_keys"] == {}
    # And the other way round: no device may take a cross-signing key's ID.
    await rest.request("POST", f"{V3}/logout", clash)
    await upload_cross_signing(rest, alice, keys.upload_body())
    refused = await rest.request(
        "POST",
        f"{V3}/login",
        body={
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": "alice"},
            "password": "correct horse",
            "device_id": keys.public("self_signing"),
        },
        expect=400,
    )
    assert refused["errcode"] == "M_INVALID_PARAM"


async def test_signatures_upload(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    carol = await rest.register("carol")
    alice_device = device_of(alice)
    alice_keys = CrossSigningKeys(alice.user_id)
    bob_keys = CrossSigningKeys(bob.user_id)
    await upload(rest, alice, {"device_keys": alice_device.device_keys()})
    await upload_cross_signing(rest, alice, alice_keys.upload_body())
    await upload_cross_signing(rest, bob, bob_keys.upload_body())

    stored_device = (await query(rest, alice, {alice.user_id: []}))["device_keys"][alice.user_id][
        alice.device_id
    ]
    signed_device = alice_keys.sign_with("self_signing", stored_device)
    signed_master = alice_device.sign(alice_keys.key_object("master"))
    bobs_master_signed = alice_keys.sign_with("user_signing", bob_keys.key_object("master"))
    forged = alice_keys.sign_with("master", stored_device)  # not the self-signing key
    result = await upload_signatures(
        rest,
        alice,
        {
            alice.user_id: {
                alice.device_id: signed_device,
                alice_keys.public("master"): signed_master,
                "NODEVICE": signed_device,
            },
            bob.user_id: {bob_keys.public("master"): bobs_master_signed},
            carol.user_id: {"CAROLKEY": bobs_master_signed},
        },
    )
    assert result["failures"] == {
        alice.user_id: {"NODEVICE": result["failures"][alice.user_id]["NODEVICE"]},
        carol.user_id: {"CAROLKEY": result["failures"][carol.user_id]["CAROLKEY"]},
    }
    assert result["failures"][alice.user_id]["NODEVICE"]["errcode"] == "M_NOT_FOUND"
    bad = await upload_signatures(rest, alice, {alice.user_id: {alice.device_id: forged}})
    assert bad["failures"][alice.user_id][alice.device_id]["errcode"] == "M_INVALID_SIGNATURE"
    tampered = alice_keys.sign_with("self_signing", stored_device)
    ssk_id = f"ed25519:{alice_keys.public('self_signing')}"
    tampered["signatures"][alice.user_id][ssk_id] = tampered["signatures"][alice.user_id][ssk_id][
        ::-1
    ]
    bad = await upload_signatures(rest, alice, {alice.user_id: {alice.device_id: tampered}})
    assert bad["failures"][alice.user_id][alice.device_id]["errcode"] == "M_INVALID_SIGNATURE"

    # Everyone sees the device's and the master key's signatures...
    seen_by_carol = await query(rest, carol, {alice.user_id: [], bob.user_id: []})
    device_sigs = seen_by_carol["device_keys"][alice.user_id][alice.device_id]["signatures"]
    assert device_sigs[alice.user_id][ssk_id] == signed_device["signatures"][alice.user_id][ssk_id]
    master_sigs = seen_by_carol["master_keys"][alice.user_id]["signatures"][alice.user_id]
    assert f"ed25519:{alice.device_id}" in master_sigs
    # ...but only Alice sees her user-signing signature of Bob's master key.
    usk_id = f"ed25519:{alice_keys.public('user_signing')}"
    assert alice.user_id not in seen_by_carol["master_keys"][bob.user_id].get("signatures", {})
    seen_by_alice = await query(rest, alice, {bob.user_id: []})
    assert usk_id in seen_by_alice["master_keys"][bob.user_id]["signatures"][alice.user_id]


# -- device lists -------------------------------------------------------------------------------


async def test_device_list_changes_reach_users_sharing_a_room(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    carol = await rest.register("carol")
    room = await rest.create_room(alice, preset="public_chat")
    await rest.join(bob, room)
    bob_since = (await rest.sync(bob))["next_batch"]
    carol_since = (await rest.sync(carol))["next_batch"]

    # Bob's long poll wakes for Alice's new keys.
    poll = asyncio.ensure_future(rest.sync(bob, since=bob_since, timeout="10000"))
    await asyncio.sleep(0.1)
    await upload(rest, alice, {"device_keys": device_of(alice).device_keys()})
    woken = await asyncio.wait_for(poll, 5)
    assert_response_valid("client-server/sync.yaml", "/sync", "get", 200, woken)
    assert woken["device_lists"]["changed"] == [alice.user_id]
    changes = await rest.request(
        "GET", f"{V3}/keys/changes", bob, **{"from": bob_since, "to": woken["next_batch"]}
    )
    assert_response_valid(KEYS_API, "/keys/changes", "get", 200, changes)
    assert changes == {"changed": [alice.user_id], "left": []}
    # Carol shares no room with Alice: she hears nothing.
    quiet = await rest.sync(carol, since=carol_since)
    assert quiet["device_lists"] == {"changed": [], "left": []}

    # Carol joins: Alice and Bob now share a room with her, both ways.
    alice_since = (await rest.sync(alice))["next_batch"]
    await rest.join(carol, room)
    joined = await rest.sync(carol, since=carol_since)
    assert sorted(joined["device_lists"]["changed"]) == [alice.user_id, bob.user_id]
    alice_view = await rest.sync(alice, since=alice_since)
    assert alice_view["device_lists"]["changed"] == [carol.user_id]

    # Bob leaves: Alice and Carol share no other room with him.
    alice_since = alice_view["next_batch"]
    bob_since = (await rest.sync(bob))["next_batch"]
    await rest.leave(bob, room)
    assert (await rest.sync(alice, since=alice_since))["device_lists"]["left"] == [bob.user_id]
    bob_view = await rest.sync(bob, since=bob_since)
    assert sorted(bob_view["device_lists"]["left"]) == [alice.user_id, carol.user_id]

    # A deleted device is a change too, and the user's own other devices hear of it.
    alice2 = await rest.login("alice")
    alice_since = (await rest.sync(alice))["next_batch"]
    carol_since = (await rest.sync(carol))["next_batch"]
    await rest.request("POST", f"{V3}/logout", alice2)
    assert (await rest.sync(carol, since=carol_since))["device_lists"]["changed"] == [alice.user_id]
    assert (await rest.sync(alice, since=alice_since))["device_lists"]["changed"] == [alice.user_id]


async def test_key_changes_needs_both_tokens(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    since = (await rest.sync(alice))["next_batch"]
    for params in ({"from": since}, {"to": since}, {"from": "garbage", "to": since}):
        error = await rest.request("GET", f"{V3}/keys/changes", alice, expect=400, **params)
        assert_valid(ERROR, error)
