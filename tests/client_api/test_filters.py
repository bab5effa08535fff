"""Filters (C-S API "Filtering", filter.yaml): upload, download, errors, and their use by
/sync (inline and by ID)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest

from homeserver.handlers.filters import field_projector, parse_filter
from tests.helpers.rest import V3, RestHelper
from tests.helpers.spec_schemas import assert_response_valid

FILTER = {
    "room": {
        "state": {"types": ["m.room.*"], "not_rooms": ["!726s6s6q:example.com"]},
        "timeline": {"limit": 10, "types": ["m.room.message"], "not_senders": ["@spam:x.org"]},
        "ephemeral": {"types": ["m.receipt", "m.typing"]},
    },
    "presence": {"types": ["m.presence"], "not_senders": ["@alice:example.com"]},
    "event_format": "client",
    "event_fields": ["type", "content", "sender"],
}


def _path(user_id: str, filter_id: str | None = None) -> str:
    base = f"{V3}/user/{quote(user_id)}/filter"
    return base if filter_id is None else f"{base}/{quote(filter_id)}"


async def test_upload_and_download(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    created = await rest.request("POST", _path(alice.user_id), alice, body=FILTER)
    assert_response_valid(
        "client-server/filter.yaml", "/user/{userId}/filter", "post", 200, created
    )
    assert not created["filter_id"].startswith("{")
    got = await rest.request("GET", _path(alice.user_id, created["filter_id"]), alice)
    assert_response_valid(
        "client-server/filter.yaml", "/user/{userId}/filter/{filterId}", "get", 200, got
    )
    assert got == FILTER
    # The same filter again gives the same ID; another gives a new one.
    again = await rest.request("POST", _path(alice.user_id), alice, body=FILTER)
    assert again["filter_id"] == created["filter_id"]
    other = await rest.request("POST", _path(alice.user_id), alice, body={"room": {}})
    assert other["filter_id"] != created["filter_id"]
    assert await rest.request("GET", _path(alice.user_id, other["filter_id"]), alice) == {
        "room": {}
    }


async def test_filter_errors(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    created = await rest.request("POST", _path(alice.user_id), alice, body={})
    # Only your own filters, and only local users.
    for method, path, body in (
        ("POST", _path(alice.user_id), {}),
        ("GET", _path(alice.user_id, created["filter_id"]), None),
        ("POST", _path("@carol:elsewhere.org"), {}),
    ):
        err = await rest.request(method, path, bob, body=body, expect=403)
        assert err["errcode"] == "M_FORBIDDEN"
    for unknown in ("12345", "nope", "1" * 40):
        err = await rest.request("GET", _path(alice.user_id, unknown), alice, expect=404)
        assert err["errcode"] == "M_NOT_FOUND"
    for bad in (
        {"room": {"timeline": {"limit": "ten"}}},
        {"room": {"timeline": {"limit": -1}}},
        {"room": {"rooms": "!a:b"}},
        {"room": {"rooms": ["not-a-room"]}},
        {"presence": {"senders": ["nobody"]}},
        {"event_format": "xml"},
        {"room": {"include_leave": "yes"}},
        {"room": []},
    ):
        err = await rest.request("POST", _path(alice.user_id), alice, body=bad, expect=400)
        assert err["errcode"] == "M_BAD_JSON", bad
    err = await rest.request("POST", _path(alice.user_id), None, body={}, expect=401)
    assert err["errcode"] == "M_MISSING_TOKEN"


async def test_sync_filter_parameter_errors(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    cases: list[tuple[str, str]] = [
        ("{not json", "M_NOT_JSON"),
        ('{"room": {"timeline": {"limit": "x"}}}', "M_BAD_JSON"),
        ("999", "M_INVALID_PARAM"),
        ("abc", "M_INVALID_PARAM"),
    ]
    for value, errcode in cases:
        err = await rest.request("GET", f"{V3}/sync", alice, expect=400, filter=value)
        assert err["errcode"] == errcode, value
    # Another user's filter ID is unknown to this one.
    bob = await rest.register("bob")
    bobs = await rest.request("POST", _path(bob.user_id), bob, body={"room": {"rooms": []}})
    mine = await rest.request("POST", _path(alice.user_id), alice, body={})
    if bobs["filter_id"] != mine["filter_id"]:
        err = await rest.request("GET", f"{V3}/sync", alice, expect=400, filter=bobs["filter_id"])
        assert err["errcode"] == "M_INVALID_PARAM"


async def test_filters_apply_to_sync(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    room_a = await rest.create_room(alice, name="A")
    room_b = await rest.create_room(alice, name="B")
    await rest.send(alice, room_a, "hello")
    await rest.send(alice, room_a, {"body": "custom"}, event_type="org.example.custom")
    stored = await rest.request(
        "POST",
        _path(alice.user_id),
        alice,
        body={
            "room": {
                "not_rooms": [room_b],
                "timeline": {"types": ["m.room.mess*"], "limit": 5},
                "state": {"types": ["m.room.name", "m.room.create"]},
            },
            "event_fields": ["type", "content.body", "event_id"],
        },
    )
    body = await rest.request("GET", f"{V3}/sync", alice, filter=stored["filter_id"])
    assert_response_valid("client-server/sync.yaml", "/sync", "get", 200, _without_projection(body))
    assert set(body["rooms"]["join"]) == {room_a}
    room = body["rooms"]["join"][room_a]
    timeline = room["timeline"]["events"]
    assert [e["type"] for e in timeline] == ["m.room.message"]
    assert timeline[0] == {
        "type": "m.room.message",
        "content": {"body": "hello"},
        "event_id": timeline[0]["event_id"],
    }
    assert sorted(e["type"] for e in room["state"]["events"]) == ["m.room.create", "m.room.name"]

    # Inline: senders that match nobody leave an empty timeline; federation format.
    inline = json.dumps(
        {
            "room": {"timeline": {"senders": ["@nobody:test.local"]}, "rooms": [room_a]},
            "event_format": "federation",
        }
    )
    body = await rest.request("GET", f"{V3}/sync", alice, filter=inline)
    room = body["rooms"]["join"][room_a]
    assert room["timeline"]["events"] == []
    assert all("auth_events" in e for e in room["state"]["events"])
    # Everything else is on by default: an initial sync with no filter shows both rooms.
    body = await rest.request("GET", f"{V3}/sync", alice)
    assert set(body["rooms"]["join"]) == {room_a, room_b}
    types = [e["type"] for e in body["rooms"]["join"][room_a]["timeline"]["events"]]
    assert types[-2:] == ["m.room.message", "org.example.custom"]


def _without_projection(body: Any) -> Any:
    """event_fields removes required keys: validate only the parts outside events."""
    return {k: v for k, v in body.items() if k != "rooms"}


def test_parse_filter_defaults_and_matching() -> None:
    f = parse_filter({})
    assert f.timeline_limit == 10 and not f.include_leave
    f = parse_filter(
        {"room": {"timeline": {"limit": 5000, "not_types": ["m.room.*"], "senders": ["@a:b"]}}}
    )
    assert f.timeline_limit == 100
    assert not f.timeline.matches("m.room.message", "@a:b")
    assert f.timeline.matches("m.reaction", "@a:b")
    assert not f.timeline.matches("m.reaction", "@c:d")
    # Account data and ephemeral events have no sender: only the type is checked.
    assert f.timeline.matches("m.reaction", None)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (["content.body"], {"content": {"body": "hi"}}),
        (["content.m\\.relates_to"], {"content": {"m.relates_to": 1}}),
        (["type", "missing.key"], {"type": "m.room.message"}),
    ],
)
def test_event_fields(fields: list[str], expected: dict[str, Any]) -> None:
    event = {"type": "m.room.message", "content": {"body": "hi", "m.relates_to": 1}}
    assert field_projector(fields)(event) == expected
