"""Room aliases (directory.yaml) on both databases."""

from __future__ import annotations

from urllib.parse import quote

from tests.client_api.test_rooms import room_state
from tests.helpers.rest import V3, RestHelper
from tests.helpers.spec_schemas import assert_response_valid

API = "client-server/directory.yaml"
ALIAS = "/directory/room/{roomAlias}"
ALIASES = "/rooms/{roomId}/aliases"


def alias_path(alias: str) -> str:
    return f"{V3}/directory/room/{quote(alias)}"


async def test_alias_lifecycle(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    room_id = await rest.create_room(alice, preset="public_chat")
    alias = "#lobby:test.local"

    created = await rest.request("PUT", alias_path(alias), alice, body={"room_id": room_id})
    assert_response_valid(API, ALIAS, "put", 200, created)
    resolved = await rest.request("GET", alias_path(alias))  # no access token needed
    assert_response_valid(API, ALIAS, "get", 200, resolved)
    assert resolved == {"room_id": room_id, "servers": ["test.local"]}
    taken = await rest.request(
        "PUT", alias_path(alias), alice, body={"room_id": room_id}, expect=409
    )
    assert_response_valid(API, ALIAS, "put", 409, taken)

    listed = await rest.request("GET", f"{V3}/rooms/{quote(room_id)}/aliases", alice)
    assert_response_valid(API, ALIASES, "get", 200, listed)
    assert listed == {"aliases": [alias]}
    outsider = await rest.request("GET", f"{V3}/rooms/{quote(room_id)}/aliases", bob, expect=403)
    assert_response_valid(API, ALIASES, "get", 403, outsider)

    # Make it canonical; deleting the alias takes it out of the canonical alias event.
    await rest.set_state(alice, room_id, "m.room.canonical_alias", {"alias": alias})
    # bob joined has power 0: he may not delete alice's alias.
    await rest.join(bob, room_id)
    refused = await rest.request("DELETE", alias_path(alias), bob, expect=403)
    assert refused["errcode"] == "M_FORBIDDEN"
    deleted = await rest.request("DELETE", alias_path(alias), alice)
    assert_response_valid(API, ALIAS, "delete", 200, deleted)
    gone = await rest.request("GET", alias_path(alias), expect=404)
    assert_response_valid(API, ALIAS, "get", 404, gone)
    missing = await rest.request("DELETE", alias_path(alias), alice, expect=404)
    assert_response_valid(API, ALIAS, "delete", 404, missing)
    state = await room_state(rest, alice, room_id)
    assert state[("m.room.canonical_alias", "")]["content"] == {}


async def test_alias_errors(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    room_id = await rest.create_room(alice)
    for alias in ("lobby", "#lobby", "#:test.local", "#a:b:c:d"):
        bad = await rest.request(
            "PUT", alias_path(alias), alice, body={"room_id": room_id}, expect=400
        )
        assert_response_valid(API, ALIAS, "put", 400, bad)
        assert bad["errcode"] == "M_INVALID_PARAM", alias
    elsewhere = await rest.request(
        "PUT", alias_path("#x:elsewhere.example"), alice, body={"room_id": room_id}, expect=400
    )
    assert elsewhere["errcode"] == "M_INVALID_PARAM"
    remote = await rest.request("GET", alias_path("#x:elsewhere.example"), expect=404)
    assert "another server" in remote["error"]
    bad_get = await rest.request("GET", alias_path("nope"), expect=400)
    assert_response_valid(API, ALIAS, "get", 400, bad_get)
    # Only members of the room may point an alias at it.
    not_member = await rest.request(
        "PUT", alias_path("#bobs:test.local"), bob, body={"room_id": room_id}, expect=403
    )
    assert not_member["errcode"] == "M_FORBIDDEN"
    unknown = await rest.request(
        "PUT", alias_path("#u:test.local"), alice, body={"room_id": "!nope:test.local"}, expect=404
    )
    assert unknown["errcode"] == "M_NOT_FOUND"
    no_room = await rest.request("PUT", alias_path("#u:test.local"), alice, body={}, expect=400)
    assert no_room["errcode"] == "M_MISSING_PARAM"
    await rest.request("PUT", alias_path("#u:test.local"), body={"room_id": room_id}, expect=401)
