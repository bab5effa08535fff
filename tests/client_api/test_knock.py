"""POST /knock (C-S API "Knocking on rooms", knocking.yaml) over a real server on both
databases: a knock seen by members and in the knocker's /sync, accepted by an invite, rejected
by a kick, withdrawn by a leave, and refused where the room version or join rule forbids it."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from tests.helpers.rest import V3, RestHelper, User
from tests.helpers.spec_schemas import assert_response_valid

KNOCK = ("client-server/knocking.yaml", "/knock/{roomIdOrAlias}", "post")
KICK = ("client-server/kicking.yaml", "/rooms/{roomId}/kick", "post")
LEAVE = ("client-server/leaving.yaml", "/rooms/{roomId}/leave", "post")


def valid_sync(body: Any) -> Any:
    assert_response_valid("client-server/sync.yaml", "/sync", "get", 200, body)
    return body


async def knock(rest: RestHelper, user: User, room: str, expect: int = 200, **body: Any) -> Any:
    result = await rest.request("POST", f"{V3}/knock/{quote(room)}", user, body, expect)
    assert_response_valid(*KNOCK, expect, result)
    return result


async def member(rest: RestHelper, viewer: User, room_id: str, user_id: str) -> Any:
    """The current m.room.member event of `user_id`, as `viewer` reads the room's state."""
    events = await rest.request("GET", f"{V3}/rooms/{quote(room_id)}/state", viewer)
    [event] = [e for e in events if e["type"] == "m.room.member" and e["state_key"] == user_id]
    return event


async def knock_room(rest: RestHelper, owner: User, join_rule: str = "knock", **body: Any) -> str:
    initial_state = [{"type": "m.room.join_rules", "content": {"join_rule": join_rule}}]
    return await rest.create_room(owner, **{"initial_state": initial_state, **body})


async def test_knock_seen_in_sync_then_accepted_by_invite(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    room_id = await knock_room(rest, alice, name="Club", topic="members only")
    alice_since = (await rest.sync(alice))["next_batch"]
    bob_since = (await rest.sync(bob))["next_batch"]

    assert await knock(rest, bob, room_id, reason="let me in") == {"room_id": room_id}
    event = await member(rest, alice, room_id, bob.user_id)
    assert event["sender"] == bob.user_id
    assert event["content"]["membership"] == "knock"
    assert event["content"]["reason"] == "let me in"
    # The member who may accept sees the knock arrive.
    alice_body = valid_sync(await rest.sync(alice, since=alice_since))
    timeline = alice_body["rooms"]["join"][room_id]["timeline"]["events"]
    assert [e["event_id"] for e in timeline] == [event["event_id"]]

    body = valid_sync(await rest.sync(bob, since=bob_since))
    assert body["rooms"]["join"] == {} and body["rooms"]["invite"] == {}
    stripped = body["rooms"]["knock"][room_id]["knock_state"]["events"]
    by_type = {e["type"]: e for e in stripped}
    assert {"m.room.create", "m.room.join_rules", "m.room.name", "m.room.topic"} <= set(by_type)
    assert by_type["m.room.join_rules"]["content"] == {"join_rule": "knock"}
    assert by_type["m.room.name"]["content"] == {"name": "Club"}
    knock_event = by_type["m.room.member"]
    assert knock_event["state_key"] == bob.user_id
    assert knock_event["content"]["membership"] == "knock"
    assert all(set(e) == {"type", "state_key", "sender", "content"} for e in stripped)
    assert room_id in valid_sync(await rest.sync(bob))["rooms"]["knock"]
    # A repeated knock is the same knock.
    await knock(rest, bob, room_id, reason="let me in")
    assert (await member(rest, alice, room_id, bob.user_id))["event_id"] == event["event_id"]

    # Accepting the knock is an invite; the knocker then joins.
    invited = await rest.invite(alice, room_id, bob.user_id)
    assert_response_valid(
        "client-server/inviting.yaml", "/rooms/{roomId}/invite ", "post", 200, invited
    )
    body = valid_sync(await rest.sync(bob, since=body["next_batch"]))
    assert room_id not in body["rooms"]["knock"]
    assert room_id in body["rooms"]["invite"]
    await rest.join(bob, room_id)
    assert (await member(rest, alice, room_id, bob.user_id))["content"]["membership"] == "join"
    assert room_id in (await rest.request("GET", f"{V3}/joined_rooms", bob))["joined_rooms"]


async def test_knock_by_alias(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    room_id = await knock_room(rest, alice, room_alias_name="door")
    assert await knock(rest, bob, "#door:test.local") == {"room_id": room_id}
    event = await member(rest, alice, room_id, bob.user_id)
    assert event["content"]["membership"] == "knock"


async def test_knock_rejected_by_kick(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    carol = await rest.register("carol")
    # Inviting needs 50 here, kicking the default 50 too: carol (0) may do neither.
    room_id = await knock_room(
        rest, alice, power_level_content_override={"invite": 50}, invite=[carol.user_id]
    )
    await rest.join(carol, room_id)
    await knock(rest, bob, room_id)

    refused = await rest.invite(carol, room_id, bob.user_id, expect=403)
    assert refused["errcode"] == "M_FORBIDDEN"
    path = f"{V3}/rooms/{quote(room_id)}/kick"
    refused = await rest.request("POST", path, carol, {"user_id": bob.user_id}, 403)
    assert_response_valid(*KICK, 403, refused)
    assert (await member(rest, alice, room_id, bob.user_id))["content"]["membership"] == "knock"

    since = (await rest.sync(bob))["next_batch"]
    kicked = await rest.request("POST", path, alice, {"user_id": bob.user_id, "reason": "no"})
    assert_response_valid(*KICK, 200, kicked)
    event = await member(rest, alice, room_id, bob.user_id)
    assert event["sender"] == alice.user_id
    assert event["content"] == {"membership": "leave", "reason": "no"}
    body = valid_sync(await rest.sync(bob, since=since))
    assert room_id not in body["rooms"]["knock"]
    assert (
        body["rooms"]["leave"][room_id]["timeline"]["events"][-1]["event_id"] == (event["event_id"])
    )
    # A rejected knocker may knock again.
    await knock(rest, bob, room_id)
    assert (await member(rest, alice, room_id, bob.user_id))["content"]["membership"] == "knock"


async def test_knock_withdrawn_by_leave(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    room_id = await knock_room(rest, alice)
    await knock(rest, bob, room_id)
    since = (await rest.sync(bob))["next_batch"]
    left = await rest.leave(bob, room_id)
    assert_response_valid(*LEAVE, 200, left)
    event = await member(rest, alice, room_id, bob.user_id)
    assert event["sender"] == bob.user_id and event["content"]["membership"] == "leave"
    body = valid_sync(await rest.sync(bob, since=since))
    assert room_id not in body["rooms"]["knock"] and room_id in body["rooms"]["leave"]
    assert valid_sync(await rest.sync(bob))["rooms"]["knock"] == {}
    # Withdrawn, the knocker cannot join: the room still needs an invite.
    await rest.join(bob, room_id, expect=403)


@pytest.mark.parametrize(
    ("room_version", "join_rule"),
    [
        ("12", "invite"),
        ("12", "public"),
        ("12", "restricted"),
        # v6 knows no knocking, v7-v9 no knock_restricted.
        ("6", "knock"),
        ("9", "knock_restricted"),
    ],
)
async def test_knock_refused_by_room_version_or_join_rule(
    rest: RestHelper, room_version: str, join_rule: str
) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    room_id = await knock_room(rest, alice, join_rule, room_version=room_version)
    refused = await knock(rest, bob, room_id, expect=403)
    assert refused["errcode"] == "M_FORBIDDEN"
    events = await rest.request("GET", f"{V3}/rooms/{quote(room_id)}/state", alice)
    assert all(e["state_key"] != bob.user_id for e in events)


async def test_knock_refused_for_members_invitees_and_the_banned(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    carol = await rest.register("carol")
    room_id = await knock_room(rest, alice, room_version="10", invite=[bob.user_id])
    await rest.request(
        "POST", f"{V3}/rooms/{quote(room_id)}/ban", alice, {"user_id": carol.user_id}
    )
    for user, membership in ((alice, "join"), (bob, "invite"), (carol, "ban")):
        refused = await knock(rest, user, room_id, expect=403)
        assert refused["errcode"] == "M_FORBIDDEN"
        event = await member(rest, alice, room_id, user.user_id)
        assert event["content"]["membership"] == membership


async def test_knock_on_unknown_room(rest: RestHelper) -> None:
    bob = await rest.register("bob")
    for room in ("!nowhere:test.local", "#nowhere:test.local", "!elsewhere:other.example"):
        missing = await knock(rest, bob, room, expect=404)
        assert missing["errcode"] == "M_NOT_FOUND"
    bad = await rest.request("POST", f"{V3}/knock/nowhere", bob, {}, 400)
    assert bad["errcode"] == "M_INVALID_PARAM"


async def test_invite_and_knock_state_carry_the_recommended_stripped_state(
    rest: RestHelper,
) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    carol = await rest.register("carol")
    room_id = await knock_room(
        rest,
        alice,
        name="Club",
        topic="members only",
        room_alias_name="club",
        initial_state=[
            {"type": "m.room.join_rules", "content": {"join_rule": "knock"}},
            {"type": "m.room.avatar", "content": {"url": "mxc://test.local/abc"}},
            {"type": "m.room.encryption", "content": {"algorithm": "m.megolm.v1.aes-sha2"}},
        ],
    )
    await rest.invite(alice, room_id, bob.user_id)
    await knock(rest, carol, room_id)
    expected = {
        "m.room.create": None,
        "m.room.join_rules": {"join_rule": "knock"},
        "m.room.name": {"name": "Club"},
        "m.room.avatar": {"url": "mxc://test.local/abc"},
        "m.room.topic": None,
        "m.room.canonical_alias": {"alias": "#club:test.local"},
        "m.room.encryption": {"algorithm": "m.megolm.v1.aes-sha2"},
    }
    for user, section, key, membership in (
        (bob, "invite", "invite_state", "invite"),
        (carol, "knock", "knock_state", "knock"),
    ):
        stripped = valid_sync(await rest.sync(user))["rooms"][section][room_id][key]["events"]
        by_key = {(e["type"], e["state_key"]): e for e in stripped}
        for event_type, content in expected.items():
            assert (event_type, "") in by_key, (user.user_id, event_type)
            if content is not None:
                assert by_key[(event_type, "")]["content"] == content
        assert by_key[("m.room.create", "")]["content"]["room_version"] == "12"
        own = by_key[("m.room.member", user.user_id)]
        assert own["content"]["membership"] == membership
        # The invite names its inviter through its sender.
        expected_sender = alice.user_id if membership == "invite" else carol.user_id
        assert own["sender"] == expected_sender
