"""Server-side key backups (C-S API "Server-side key backups"): backup versions, storing,
reading and deleting keys, the replacement rules, etag and count."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from tests.helpers.rest import V3, RestHelper, User
from tests.helpers.spec_schemas import assert_response_valid

API = "client-server/key_backup.yaml"
ALGORITHM = "m.megolm_backup.v1.curve25519-aes-sha2"
ROOM = "!room:test.local"
OTHER_ROOM = "!other:test.local"


def auth_data(public_key: str = "abcdefg") -> dict[str, Any]:
    return {"public_key": public_key, "signatures": {"@alice:test.local": {"ed25519:D": "sig"}}}


def key(
    first_message_index: int = 1,
    forwarded_count: int = 0,
    is_verified: bool = False,
    tag: str = "a",
) -> dict[str, Any]:
    return {
        "first_message_index": first_message_index,
        "forwarded_count": forwarded_count,
        "is_verified": is_verified,
        "session_data": {"ephemeral": "e", "ciphertext": tag, "mac": "m"},
    }


def keys_path(room_id: str | None = None, session_id: str | None = None) -> tuple[str, str]:
    """(URL, spec path template) of the /room_keys/keys endpoint for this scope."""
    if room_id is None:
        return f"{V3}/room_keys/keys", "/room_keys/keys"
    if session_id is None:
        return f"{V3}/room_keys/keys/{quote(room_id)}", "/room_keys/keys/{roomId}"
    return (
        f"{V3}/room_keys/keys/{quote(room_id)}/{quote(session_id)}",
        "/room_keys/keys/{roomId}/{sessionId}",
    )


async def create(rest: RestHelper, user: User, public_key: str = "abcdefg") -> str:
    body = await rest.request(
        "POST",
        f"{V3}/room_keys/version",
        user,
        body={"algorithm": ALGORITHM, "auth_data": auth_data(public_key)},
    )
    assert_response_valid(API, "/room_keys/version", "post", 200, body)
    return str(body["version"])


async def version_info(
    rest: RestHelper, user: User, version: str | None = None, expect: int = 200
) -> Any:
    if version is None:
        url, template = f"{V3}/room_keys/version", "/room_keys/version"
    else:
        url, template = f"{V3}/room_keys/version/{version}", "/room_keys/version/{version}"
    body = await rest.request("GET", url, user, expect=expect)
    assert_response_valid(API, template, "get", expect, body)
    return body


async def put_keys(
    rest: RestHelper,
    user: User,
    version: str,
    body: Any,
    room_id: str | None = None,
    session_id: str | None = None,
    expect: int = 200,
) -> Any:
    url, template = keys_path(room_id, session_id)
    result = await rest.request("PUT", url, user, body=body, expect=expect, version=version)
    if expect in (200, 403):
        assert_response_valid(API, template, "put", expect, result)
    return result


async def get_keys(
    rest: RestHelper,
    user: User,
    version: str,
    room_id: str | None = None,
    session_id: str | None = None,
    expect: int = 200,
) -> Any:
    url, template = keys_path(room_id, session_id)
    result = await rest.request("GET", url, user, expect=expect, version=version)
    assert_response_valid(API, template, "get", expect, result)
    return result


async def delete_keys(
    rest: RestHelper,
    user: User,
    version: str,
    room_id: str | None = None,
    session_id: str | None = None,
    expect: int = 200,
) -> Any:
    url, template = keys_path(room_id, session_id)
    result = await rest.request("DELETE", url, user, expect=expect, version=version)
    assert_response_valid(API, template, "delete", expect, result)
    return result


def rooms(*entries: tuple[str, str, dict[str, Any]]) -> dict[str, Any]:
    """A /room_keys/keys body from (room, session, key) triples."""
    body: dict[str, Any] = {}
    for room_id, session_id, data in entries:
        body.setdefault(room_id, {"sessions": {}})["sessions"][session_id] = data
    return {"rooms": body}


# -- versions ------------------------------------------------------------------------------


async def test_versions_are_created_per_user_and_the_latest_is_current(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    await version_info(rest, alice, expect=404)
    first = await create(rest, alice, "k1")
    second = await create(rest, alice, "k2")
    assert int(second) > int(first)
    # Bob's versions are his own: he has none, and Alice's numbers mean nothing to him.
    assert (await version_info(rest, bob, expect=404))["errcode"] == "M_NOT_FOUND"
    await version_info(rest, bob, first, expect=404)
    latest = await version_info(rest, alice)
    assert latest == {
        "algorithm": ALGORITHM,
        "auth_data": auth_data("k2"),
        "count": 0,
        "etag": latest["etag"],
        "version": second,
    }
    older = await version_info(rest, alice, first)
    assert (older["version"], older["auth_data"]) == (first, auth_data("k1"))


async def test_missing_versions_answer_not_found_with_the_spec_wording(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    none = await version_info(rest, alice, expect=404)
    assert none == {"errcode": "M_NOT_FOUND", "error": "No current backup version"}
    version = await create(rest, alice)
    for unknown in ("99", "abc", "0" + version, " " + version, "-1", "9" * 40):
        body = await version_info(rest, alice, quote(unknown), expect=404)
        assert body == {"errcode": "M_NOT_FOUND", "error": "Unknown backup version"}


async def test_update_replaces_auth_data_only(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    version = await create(rest, alice, "old")
    await put_keys(rest, alice, version, {"sessions": {"s": key()}}, ROOM)
    etag = (await version_info(rest, alice, version))["etag"]
    url = f"{V3}/room_keys/version/{version}"
    for body in (
        {"algorithm": ALGORITHM, "auth_data": auth_data("new")},
        {"algorithm": ALGORITHM, "auth_data": auth_data("newer"), "version": version},
    ):
        done = await rest.request("PUT", url, alice, body=body)
        assert_response_valid(API, "/room_keys/version/{version}", "put", 200, done)
        assert done == {}
        info = await version_info(rest, alice, version)
        assert info["auth_data"] == body["auth_data"]
        assert (info["count"], info["etag"]) == (1, etag)


@pytest.mark.parametrize(
    "body, errcode",
    [
        ({"algorithm": "m.other", "auth_data": {}}, "M_INVALID_PARAM"),
        ({"algorithm": ALGORITHM, "auth_data": {}, "version": "999"}, "M_INVALID_PARAM"),
        ({"algorithm": ALGORITHM, "auth_data": {}, "version": 1}, "M_INVALID_PARAM"),
        ({"auth_data": {}}, "M_MISSING_PARAM"),
        ({"algorithm": ALGORITHM}, "M_MISSING_PARAM"),
        ({"algorithm": ALGORITHM, "auth_data": "x"}, "M_INVALID_PARAM"),
        ({"algorithm": 7, "auth_data": {}}, "M_INVALID_PARAM"),
    ],
)
async def test_update_rejects_bad_bodies(
    rest: RestHelper, body: dict[str, Any], errcode: str
) -> None:
    alice = await rest.register("alice")
    version = await create(rest, alice, "kept")
    url = f"{V3}/room_keys/version/{version}"
    error = await rest.request("PUT", url, alice, body=body, expect=400)
    assert_response_valid(API, "/room_keys/version/{version}", "put", 400, error)
    assert error["errcode"] == errcode
    assert (await version_info(rest, alice, version))["auth_data"] == auth_data("kept")


async def test_update_of_an_unknown_version_is_not_found(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    body = {"algorithm": ALGORITHM, "auth_data": {}}
    error = await rest.request("PUT", f"{V3}/room_keys/version/1", alice, body=body, expect=404)
    assert_response_valid(API, "/room_keys/version/{version}", "put", 404, error)
    assert error == {"errcode": "M_NOT_FOUND", "error": "Unknown backup version"}


@pytest.mark.parametrize(
    "body",
    [{}, {"algorithm": ALGORITHM}, {"auth_data": {}}, {"algorithm": ALGORITHM, "auth_data": []}],
)
async def test_create_rejects_bad_bodies(rest: RestHelper, body: dict[str, Any]) -> None:
    alice = await rest.register("alice")
    error = await rest.request("POST", f"{V3}/room_keys/version", alice, body=body, expect=400)
    assert error["errcode"] in ("M_MISSING_PARAM", "M_INVALID_PARAM")
    await version_info(rest, alice, expect=404)


async def test_delete_version_removes_it_and_its_keys(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    first = await create(rest, alice)
    second = await create(rest, alice)
    await put_keys(rest, alice, second, rooms((ROOM, "s", key())))
    url = f"{V3}/room_keys/version/{second}"
    done = await rest.request("DELETE", url, alice)
    assert_response_valid(API, "/room_keys/version/{version}", "delete", 200, done)
    assert done == {}
    gone = await version_info(rest, alice, second, expect=404)
    assert gone == {"errcode": "M_NOT_FOUND", "error": "Unknown backup version"}
    await get_keys(rest, alice, second, expect=404)
    await delete_keys(rest, alice, second, expect=404)
    # Deleting it again succeeds (the spec's 200 for a backup deleted before).
    assert await rest.request("DELETE", url, alice) == {}
    # The older version is current again; a new one never reuses the deleted number.
    assert (await version_info(rest, alice))["version"] == first
    third = await create(rest, alice)
    assert int(third) > int(second)
    assert (await version_info(rest, alice, third))["count"] == 0


async def test_delete_of_an_unknown_version_is_not_found(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    for unknown in ("1", "x"):
        error = await rest.request("DELETE", f"{V3}/room_keys/version/{unknown}", alice, expect=404)
        assert_response_valid(API, "/room_keys/version/{version}", "delete", 404, error)
        assert error == {"errcode": "M_NOT_FOUND", "error": "Unknown backup version"}


async def test_another_users_version_cannot_be_touched(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    version = await create(rest, alice)
    await put_keys(rest, alice, version, {"sessions": {"s": key()}}, ROOM)
    await rest.request("DELETE", f"{V3}/room_keys/version/{version}", bob, expect=404)
    await get_keys(rest, bob, version, expect=404)
    await put_keys(rest, bob, version, key(), ROOM, "s", expect=404)
    assert (await version_info(rest, alice, version))["count"] == 1


# -- keys ----------------------------------------------------------------------------------


async def test_keys_are_stored_and_read_at_every_scope(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    version = await create(rest, alice)
    done = await put_keys(
        rest, alice, version, rooms((ROOM, "s1", key(tag="1")), (ROOM, "s2", key(tag="2")))
    )
    assert done["count"] == 2
    done = await put_keys(rest, alice, version, {"sessions": {"s3": key(tag="3")}}, OTHER_ROOM)
    assert done["count"] == 3
    done = await put_keys(rest, alice, version, key(tag="4"), OTHER_ROOM, "s4")
    assert done["count"] == 4
    everything = await get_keys(rest, alice, version)
    assert everything == {
        "rooms": {
            ROOM: {"sessions": {"s1": key(tag="1"), "s2": key(tag="2")}},
            OTHER_ROOM: {"sessions": {"s3": key(tag="3"), "s4": key(tag="4")}},
        }
    }
    room = await get_keys(rest, alice, version, ROOM)
    assert room == {"sessions": {"s1": key(tag="1"), "s2": key(tag="2")}}
    assert await get_keys(rest, alice, version, OTHER_ROOM, "s4") == key(tag="4")
    info = await version_info(rest, alice, version)
    assert (info["count"], info["etag"]) == (4, done["etag"])


async def test_empty_reads(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    version = await create(rest, alice)
    assert await get_keys(rest, alice, version) == {"rooms": {}}
    assert await get_keys(rest, alice, version, ROOM) == {"sessions": {}}
    missing = await get_keys(rest, alice, version, ROOM, "nope", expect=404)
    assert missing["errcode"] == "M_NOT_FOUND"
    await put_keys(rest, alice, version, key(), ROOM, "s")
    await get_keys(rest, alice, version, ROOM, "other", expect=404)
    await get_keys(rest, alice, version, OTHER_ROOM, "s", expect=404)


@pytest.mark.parametrize(
    "stored, uploaded, replaced",
    [
        # Verification decides first, whatever the indexes.
        (key(0, 0, False), key(5, 5, True), True),
        (key(5, 5, True), key(0, 0, False), False),
        # Then the lower first_message_index.
        (key(3, 0, True), key(2, 9, True), True),
        (key(2, 0, False), key(3, 0, False), False),
        # Then the lower forwarded_count.
        (key(2, 3, False), key(2, 1, False), True),
        (key(2, 1, True), key(2, 3, True), False),
        # A key no better than the stored one leaves it, even with other session_data.
        (key(2, 1, True), key(2, 1, True), False),
    ],
)
async def test_a_stored_key_is_replaced_only_by_a_better_one(
    rest: RestHelper, stored: dict[str, Any], uploaded: dict[str, Any], replaced: bool
) -> None:
    alice = await rest.register("alice")
    version = await create(rest, alice)
    first = await put_keys(rest, alice, version, stored, ROOM, "s")
    new = {**uploaded, "session_data": {"ciphertext": "new"}}
    second = await put_keys(rest, alice, version, new, ROOM, "s")
    assert await get_keys(rest, alice, version, ROOM, "s") == (new if replaced else stored)
    assert second["count"] == 1
    # The etag follows the stored keys: it changes only with them.
    assert (second["etag"] != first["etag"]) == replaced


async def test_one_put_mixes_new_replaced_and_kept_keys(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    version = await create(rest, alice)
    await put_keys(rest, alice, version, rooms((ROOM, "a", key(1)), (ROOM, "b", key(1))))
    await put_keys(
        rest,
        alice,
        version,
        rooms((ROOM, "a", key(0, tag="a2")), (ROOM, "b", key(4, tag="b2")), (ROOM, "c", key())),
    )
    assert await get_keys(rest, alice, version, ROOM) == {
        "sessions": {"a": key(0, tag="a2"), "b": key(1), "c": key()}
    }


async def test_etag_changes_with_the_stored_keys_only(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    version = await create(rest, alice)
    etags = [(await version_info(rest, alice, version))["etag"]]
    etags.append((await put_keys(rest, alice, version, key(), ROOM, "s"))["etag"])
    # An empty upload and a delete of nothing change nothing.
    assert (await put_keys(rest, alice, version, {"rooms": {}}))["etag"] == etags[-1]
    assert (await delete_keys(rest, alice, version, ROOM, "nope"))["etag"] == etags[-1]
    assert (await delete_keys(rest, alice, version, OTHER_ROOM))["etag"] == etags[-1]
    etags.append((await delete_keys(rest, alice, version, ROOM, "s"))["etag"])
    assert len(set(etags)) == 3
    assert (await version_info(rest, alice, version))["etag"] == etags[-1]


async def test_delete_keys_at_every_scope(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    version = await create(rest, alice)
    await put_keys(
        rest,
        alice,
        version,
        rooms(
            (ROOM, "s1", key()),
            (ROOM, "s2", key()),
            (OTHER_ROOM, "s3", key()),
            (OTHER_ROOM, "s4", key()),
            ("!third:test.local", "s5", key()),
        ),
    )
    assert (await delete_keys(rest, alice, version, ROOM, "s1"))["count"] == 4
    assert (await delete_keys(rest, alice, version, OTHER_ROOM))["count"] == 2
    assert await get_keys(rest, alice, version) == {
        "rooms": {
            ROOM: {"sessions": {"s2": key()}},
            "!third:test.local": {"sessions": {"s5": key()}},
        }
    }
    assert (await delete_keys(rest, alice, version))["count"] == 0
    assert await get_keys(rest, alice, version) == {"rooms": {}}


async def test_keys_of_versions_are_separate(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    first = await create(rest, alice)
    await put_keys(rest, alice, first, key(tag="old"), ROOM, "s")
    second = await create(rest, alice)
    assert (await version_info(rest, alice, second))["count"] == 0
    await put_keys(rest, alice, second, key(tag="new"), ROOM, "s")
    assert await get_keys(rest, alice, first, ROOM, "s") == key(tag="old")
    assert await get_keys(rest, alice, second, ROOM, "s") == key(tag="new")


async def test_keys_go_to_the_current_version_only(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    none = await put_keys(rest, alice, "1", key(), ROOM, "s", expect=404)
    assert none["errcode"] == "M_NOT_FOUND"
    first = await create(rest, alice)
    second = await create(rest, alice)
    for stale in (first, "99", "junk"):
        for body, room_id, session_id in (
            (rooms((ROOM, "s", key())), None, None),
            ({"sessions": {"s": key()}}, ROOM, None),
            (key(), ROOM, "s"),
        ):
            error = await put_keys(rest, alice, stale, body, room_id, session_id, expect=403)
            assert error == {
                "errcode": "M_WRONG_ROOM_KEYS_VERSION",
                "error": "Wrong backup version.",
                "current_version": second,
            }
    assert (await version_info(rest, alice, first))["count"] == 0
    # Keys already in an older version can still be read and deleted.
    await rest.request("DELETE", f"{V3}/room_keys/version/{second}", alice)
    await put_keys(rest, alice, first, key(), ROOM, "s")
    await create(rest, alice)
    assert await get_keys(rest, alice, first, ROOM, "s") == key()
    assert (await delete_keys(rest, alice, first, ROOM, "s"))["count"] == 0


async def test_version_parameter_is_required(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    await create(rest, alice)
    url = f"{V3}/room_keys/keys/{quote(ROOM)}/s"
    for method in ("PUT", "GET", "DELETE"):
        body = key() if method == "PUT" else None
        error = await rest.request(method, url, alice, body=body, expect=400)
        assert error["errcode"] == "M_MISSING_PARAM"


async def test_unknown_versions_when_reading_and_deleting_keys(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    version = await create(rest, alice)
    for unknown in ("99", "junk", ""):
        for room_id, session_id in ((None, None), (ROOM, None), (ROOM, "s")):
            got = await get_keys(rest, alice, unknown, room_id, session_id, expect=404)
            assert got == {"errcode": "M_NOT_FOUND", "error": "Unknown backup version"}
            gone = await delete_keys(rest, alice, unknown, room_id, session_id, expect=404)
            assert gone["errcode"] == "M_NOT_FOUND"
    assert (await version_info(rest, alice, version))["version"] == version


@pytest.mark.parametrize(
    "data",
    [
        "not an object",
        {k: v for k, v in key().items() if k != "first_message_index"},
        {k: v for k, v in key().items() if k != "forwarded_count"},
        {k: v for k, v in key().items() if k != "is_verified"},
        {k: v for k, v in key().items() if k != "session_data"},
        {**key(), "first_message_index": "1"},
        {**key(), "first_message_index": 1.5},
        {**key(), "first_message_index": True},
        {**key(), "first_message_index": -1},
        {**key(), "first_message_index": 2**63},
        {**key(), "forwarded_count": None},
        {**key(), "is_verified": 1},
        {**key(), "is_verified": "true"},
        {**key(), "session_data": "opaque"},
        {**key(), "session_data": None},
    ],
)
async def test_malformed_keys_are_rejected(rest: RestHelper, data: Any) -> None:
    alice = await rest.register("alice")
    version = await create(rest, alice)
    for body, room_id, session_id in (
        ({"rooms": {ROOM: {"sessions": {"s": data}}}}, None, None),
        ({"sessions": {"s": data}}, ROOM, None),
    ):
        error = await put_keys(rest, alice, version, body, room_id, session_id, expect=400)
        assert error["errcode"] in ("M_BAD_JSON", "M_INVALID_PARAM", "M_MISSING_PARAM")
    if isinstance(data, dict):
        error = await put_keys(rest, alice, version, data, ROOM, "s", expect=400)
        assert error["errcode"] in ("M_BAD_JSON", "M_INVALID_PARAM", "M_MISSING_PARAM")
    # Nothing of a rejected upload is stored, not even its valid keys.
    mixed = {"rooms": {ROOM: {"sessions": {"good": key(), "bad": data}}}}
    await put_keys(rest, alice, version, mixed, expect=400)
    info = await version_info(rest, alice, version)
    assert info["count"] == 0


@pytest.mark.parametrize(
    "body, room_id",
    [
        ({}, None),
        ({"rooms": []}, None),
        ({"rooms": {ROOM: "x"}}, None),
        ({"rooms": {ROOM: {}}}, None),
        ({"rooms": {ROOM: {"sessions": []}}}, None),
        ({}, ROOM),
        ({"sessions": "x"}, ROOM),
    ],
)
async def test_malformed_key_maps_are_rejected(
    rest: RestHelper, body: dict[str, Any], room_id: str | None
) -> None:
    alice = await rest.register("alice")
    version = await create(rest, alice)
    error = await put_keys(rest, alice, version, body, room_id, expect=400)
    assert error["errcode"] in ("M_BAD_JSON", "M_INVALID_PARAM", "M_MISSING_PARAM")


async def test_endpoints_need_an_access_token(rest: RestHelper) -> None:
    for method, url in (
        ("POST", f"{V3}/room_keys/version"),
        ("GET", f"{V3}/room_keys/version"),
        ("GET", f"{V3}/room_keys/version/1"),
        ("DELETE", f"{V3}/room_keys/version/1"),
        ("GET", f"{V3}/room_keys/keys?version=1"),
        ("PUT", f"{V3}/room_keys/keys?version=1"),
    ):
        error = await rest.request(method, url, expect=401)
        assert error["errcode"] == "M_MISSING_TOKEN"


async def test_large_upload_and_unicode_ids(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    version = await create(rest, alice)
    room_id = "!räum:test.local"
    entries = [(room_id, f"sess-✓-{i}", key(i, tag=f"c{i}")) for i in range(500)]
    done = await put_keys(rest, alice, version, rooms(*entries))
    assert done["count"] == 500
    stored = await get_keys(rest, alice, version, room_id)
    assert stored["sessions"] == {session: data for _, session, data in entries}
    assert await get_keys(rest, alice, version, room_id, "sess-✓-7") == key(7, tag="c7")
