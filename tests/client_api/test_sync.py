"""GET /sync (C-S API "Syncing", sync.yaml) over a real socket on both databases: initial and
incremental syncs, limited timelines, state, invites, joins, leaves and errors. Every response
is checked against the spec's OpenAPI definition."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from homeserver.core import Core, build_core
from homeserver.crypto.keys import ServerKeys
from homeserver.handlers.sync import SyncConfig
from homeserver.streams import StreamToken
from tests.helpers.rest import RestHelper, User
from tests.helpers.spec_schemas import assert_response_valid


def valid(body: Any) -> Any:
    assert_response_valid("client-server/sync.yaml", "/sync", "get", 200, body)
    return body


async def sync(rest: RestHelper, user: User, **params: str) -> Any:
    return valid(await rest.sync(user, **params))


def timeline_ids(body: Any, room_id: str) -> list[str]:
    room = body["rooms"]["join"].get(room_id)
    return [] if room is None else [e["event_id"] for e in room["timeline"]["events"]]


def limit(n: int, **room: Any) -> str:
    return json.dumps({"room": {"timeline": {"limit": n}, **room}})


async def test_initial_sync_after_create_room_and_messages(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    room_id = await rest.create_room(alice, name="Lunch", preset="public_chat")
    sent = [await rest.send(alice, room_id, f"msg {i}") for i in range(3)]
    body = await sync(rest, alice)
    assert body["next_batch"]
    for key in ("presence", "account_data", "to_device"):
        assert body[key] == {"events": []} or "events" in body[key]
    assert body["device_lists"] == {"changed": [], "left": []}
    assert body["device_one_time_keys_count"] == {} or isinstance(
        body["device_one_time_keys_count"], dict
    )
    assert body["rooms"]["invite"] == {} and body["rooms"]["leave"] == {}
    room = body["rooms"]["join"][room_id]
    timeline = room["timeline"]
    # The default limit is 10: the room's 7 creation events and 3 messages fit exactly... or
    # not, depending on the preset; what matters is that the newest events end the timeline.
    assert [e["event_id"] for e in timeline["events"]][-3:] == sent
    assert all("room_id" not in e for e in timeline["events"])
    assert timeline["prev_batch"]
    # State at the start of the timeline plus timeline = the whole room state.
    keys = {(e["type"], e["state_key"]) for e in room["state"]["events"]}
    keys |= {(e["type"], e["state_key"]) for e in timeline["events"] if "state_key" in e}
    assert {("m.room.create", ""), ("m.room.member", alice.user_id), ("m.room.name", "")} <= keys
    state_ids = {e["event_id"] for e in room["state"]["events"]}
    assert not state_ids & {e["event_id"] for e in timeline["events"]}
    assert room["summary"]["m.joined_member_count"] == 1
    assert room["summary"]["m.invited_member_count"] == 0
    assert "m.heroes" not in room["summary"]  # the room has a name
    assert room["unread_notifications"] == {"highlight_count": 0, "notification_count": 0}
    assert room["ephemeral"] == {"events": []}


async def test_initial_sync_state_is_at_the_start_of_a_limited_timeline(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    room_id = await rest.create_room(alice, name="Old name")
    await rest.set_state(alice, room_id, "m.room.topic", {"topic": "before"})
    messages = [await rest.send(alice, room_id, f"m{i}") for i in range(4)]
    await rest.set_state(alice, room_id, "m.room.name", {"name": "New name"})
    body = await sync(rest, alice, filter=limit(3))
    room = body["rooms"]["join"][room_id]
    assert room["timeline"]["limited"] is True
    events = room["timeline"]["events"]
    assert [e["event_id"] for e in events[:2]] == messages[-2:]
    assert events[2]["content"] == {"name": "New name"}
    state = {(e["type"], e["state_key"]): e for e in room["state"]["events"]}
    # The state before the timeline: the old name, the topic, everything else.
    assert state[("m.room.name", "")]["content"] == {"name": "Old name"}
    assert state[("m.room.topic", "")]["content"]["topic"] == "before"
    assert ("m.room.create", "") in state and ("m.room.power_levels", "") in state


async def test_incremental_sync_returns_new_events_once(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    room_id = await rest.create_room(alice)
    first = await sync(rest, alice)
    since = first["next_batch"]
    empty = await sync(rest, alice, since=since)
    assert empty["rooms"]["join"] == {}
    assert empty["next_batch"] == since
    sent = [await rest.send(alice, room_id, f"m{i}") for i in range(3)]
    body = await sync(rest, alice, since=since)
    assert timeline_ids(body, room_id) == sent
    room = body["rooms"]["join"][room_id]
    assert room["timeline"]["limited"] is False
    assert room["state"]["events"] == []
    # The same token again gives the same answer; the new token gives nothing.
    assert timeline_ids(await sync(rest, alice, since=since), room_id) == sent
    after = await sync(rest, alice, since=body["next_batch"])
    assert after["rooms"]["join"] == {}


async def test_300_messages_none_lost_or_duplicated(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    room_id = await rest.create_room(alice)
    since = (await sync(rest, alice))["next_batch"]
    sent: list[str] = []
    seen: list[str] = []
    stop = asyncio.Event()

    async def syncer() -> None:
        nonlocal since
        while not stop.is_set() or len(seen) < len(sent):
            body = await rest.sync(alice, since=since, timeout="500", filter=limit(100))
            room = body["rooms"]["join"].get(room_id)
            if room is not None:
                assert room["timeline"]["limited"] is False
                seen.extend(e["event_id"] for e in room["timeline"]["events"])
            since = body["next_batch"]
            if stop.is_set() and len(seen) >= len(sent):
                return

    task = asyncio.create_task(syncer())
    for batch in range(12):
        sent += await asyncio.gather(
            *(rest.send(alice, room_id, f"b{batch} m{i}") for i in range(25))
        )
    stop.set()
    await asyncio.wait_for(task, 30)
    assert len(sent) == 300
    assert len(seen) == len(set(seen)) == 300
    assert set(seen) == set(sent)
    # In stream order: each sync's events follow the previous sync's.
    messages = await rest.messages(alice, room_id, limit="300")
    newest_first = [e["event_id"] for e in messages["chunk"] if e["type"] == "m.room.message"]
    assert seen == newest_first[::-1]


async def test_limited_incremental_sync_has_prev_batch_and_gap_state(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    room_id = await rest.create_room(alice, name="Before")
    since = (await sync(rest, alice))["next_batch"]
    gap = [await rest.send(alice, room_id, f"gap {i}") for i in range(3)]
    await rest.set_state(alice, room_id, "m.room.name", {"name": "In the gap"})
    tail = [await rest.send(alice, room_id, f"tail {i}") for i in range(4)]
    body = await sync(rest, alice, since=since, filter=limit(4))
    room = body["rooms"]["join"][room_id]
    assert room["timeline"]["limited"] is True
    assert timeline_ids(body, room_id) == tail
    # State between since and the start of the timeline: the rename in the gap only.
    assert [(e["type"], e["content"]) for e in room["state"]["events"]] == [
        ("m.room.name", {"name": "In the gap"})
    ]
    # prev_batch continues backwards from just before the timeline.
    page = await rest.messages(alice, room_id, **{"from": room["timeline"]["prev_batch"]})
    earlier = [e["event_id"] for e in page["chunk"]]
    assert earlier[0] != tail[0]
    assert [e for e in earlier if e in gap] == gap[::-1]


async def test_full_state_returns_all_state_on_incremental(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    room_id = await rest.create_room(alice, name="Full")
    since = (await sync(rest, alice))["next_batch"]
    body = await sync(rest, alice, since=since, full_state="true")
    room = body["rooms"]["join"][room_id]
    assert room["timeline"]["events"] == []
    types = {e["type"] for e in room["state"]["events"]}
    assert {"m.room.create", "m.room.member", "m.room.power_levels", "m.room.name"} <= types


async def test_invite_then_join(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    bob_since = (await sync(rest, bob))["next_batch"]
    room_id = await rest.create_room(alice, name="Secret", topic="stuff")
    await rest.send(alice, room_id, "before the invite")
    await rest.invite(alice, room_id, bob.user_id)
    body = await sync(rest, bob, since=bob_since)
    assert body["rooms"]["join"] == {}
    invite = body["rooms"]["invite"][room_id]["invite_state"]["events"]
    by_type = {e["type"]: e for e in invite if e["type"] != "m.room.member"}
    assert {"m.room.create", "m.room.join_rules", "m.room.name"} <= set(by_type)
    assert by_type["m.room.name"]["content"] == {"name": "Secret"}
    members = {e["state_key"]: e for e in invite if e["type"] == "m.room.member"}
    # The inviter's own member event comes too, for their name and avatar.
    assert set(members) == {alice.user_id, bob.user_id}
    assert members[alice.user_id]["content"]["membership"] == "join"
    member = members[bob.user_id]
    assert member["state_key"] == bob.user_id and member["sender"] == alice.user_id
    assert member["content"]["membership"] == "invite"
    assert all(set(e) == {"type", "state_key", "sender", "content"} for e in invite)
    # An initial sync shows the invite too.
    assert room_id in (await sync(rest, bob))["rooms"]["invite"]

    await rest.join(bob, room_id)
    joined = await sync(rest, bob, since=body["next_batch"])
    assert joined["rooms"]["invite"] == {}
    room = joined["rooms"]["join"][room_id]
    events = room["timeline"]["events"]
    assert events[-1]["type"] == "m.room.member" and events[-1]["state_key"] == bob.user_id
    # A newly joined room comes with its full state.
    everything = room["state"]["events"] + events
    keys = {(e["type"], e["state_key"]) for e in everything if "state_key" in e}
    assert {("m.room.create", ""), ("m.room.name", ""), ("m.room.member", alice.user_id)} <= keys
    assert room["summary"]["m.joined_member_count"] == 2
    # And alice sees bob join.
    alice_body = await sync(rest, alice)
    assert alice_body["rooms"]["join"][room_id]["summary"]["m.joined_member_count"] == 2


async def test_leave_shows_in_rooms_leave(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    room_id = await rest.create_room(alice, preset="public_chat")
    await rest.join(bob, room_id)
    since = (await sync(rest, bob))["next_batch"]
    said = await rest.send(alice, room_id, "bye bob")
    await rest.leave(bob, room_id)
    await rest.send(alice, room_id, "after bob left")
    body = await sync(rest, bob, since=since)
    assert body["rooms"]["join"] == {}
    left = body["rooms"]["leave"][room_id]
    events = left["timeline"]["events"]
    assert [e["event_id"] for e in events][0] == said
    assert events[-1]["type"] == "m.room.member"
    assert events[-1]["content"]["membership"] == "leave"
    assert all(e["content"].get("body") != "after bob left" for e in events)
    # Not again on the next sync; on an initial sync only with include_leave.
    assert (await sync(rest, bob, since=body["next_batch"]))["rooms"]["leave"] == {}
    assert (await sync(rest, bob))["rooms"]["leave"] == {}
    with_leave = await sync(rest, bob, filter=json.dumps({"room": {"include_leave": True}}))
    assert room_id in with_leave["rooms"]["leave"]


async def test_rejected_invite_shows_only_the_leave(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    room_id = await rest.create_room(alice)
    await rest.send(alice, room_id, "private")
    await rest.invite(alice, room_id, bob.user_id)
    since = (await sync(rest, bob))["next_batch"]
    await rest.leave(bob, room_id)
    body = await sync(rest, bob, since=since)
    left = body["rooms"]["leave"][room_id]
    assert [e["content"]["membership"] for e in left["timeline"]["events"]] == ["leave"]
    assert left["state"]["events"] == []
    assert body["rooms"]["invite"] == {}


async def test_lazy_loading_members_and_heroes(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    carol = await rest.register("carol")
    room_id = await rest.create_room(alice, preset="public_chat")
    await rest.join(bob, room_id)
    await rest.join(carol, room_id)
    await rest.send(bob, room_id, "hi from bob")
    lazy = json.dumps({"room": {"timeline": {"limit": 1}, "state": {"lazy_load_members": True}}})
    body = await sync(rest, alice, filter=lazy)
    room = body["rooms"]["join"][room_id]
    members = {e["state_key"] for e in room["state"]["events"] if e["type"] == "m.room.member"}
    # Bob sent the timeline's event; alice is the syncing user; both are heroes as well.
    assert members == {alice.user_id, bob.user_id, carol.user_id}
    assert room["summary"]["m.heroes"] == [bob.user_id, carol.user_id]
    assert room["summary"]["m.joined_member_count"] == 3
    # Without heroes to show (a named room), carol's membership is left out.
    await rest.set_state(alice, room_id, "m.room.name", {"name": "Named"})
    await rest.send(bob, room_id, "again")
    room = (await sync(rest, alice, filter=lazy))["rooms"]["join"][room_id]
    members = {e["state_key"] for e in room["state"]["events"] if e["type"] == "m.room.member"}
    assert members == {alice.user_id, bob.user_id}
    # Eager: every member.
    room = (await sync(rest, alice, filter=limit(1)))["rooms"]["join"][room_id]
    members = {e["state_key"] for e in room["state"]["events"] if e["type"] == "m.room.member"}
    assert members == {alice.user_id, bob.user_id, carol.user_id}


async def test_history_visibility_hides_events_before_a_join(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    room_id = await rest.create_room(
        alice,
        preset="public_chat",
        initial_state=[
            {"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}}
        ],
    )
    hidden = await rest.send(alice, room_id, "before bob")
    await rest.join(bob, room_id)
    shown = await rest.send(alice, room_id, "after bob")
    body = await sync(rest, bob)
    ids = timeline_ids(body, room_id)
    assert shown in ids and hidden not in ids


async def test_sync_errors(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    for params in (
        {"since": "garbage"},
        {"since": "s1_x"},
        {"timeout": "soon"},
        {"timeout": "-5"},
        {"full_state": "yes"},
        {"set_presence": "busy"},
    ):
        err = await rest.sync(alice, expect=400, **params)
        assert err["errcode"] == "M_INVALID_PARAM", params
    err = await rest.sync(User("@x:test.local", "nope", "D"), expect=401)
    assert err["errcode"] == "M_UNKNOWN_TOKEN"
    # The legacy bare number is accepted as an events position.
    valid(await rest.sync(alice, since="0"))


async def test_ignored_users_messages_and_invites_are_hidden(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    room_id = await rest.create_room(alice, preset="public_chat")
    await rest.join(bob, room_id)
    await rest.request(
        "PUT",
        f"/_matrix/client/v3/user/{alice.user_id}/account_data/m.ignored_user_list",
        alice,
        body={"ignored_users": {bob.user_id: {}}},
    )
    since = (await sync(rest, alice))["next_batch"]
    await rest.send(bob, room_id, "ignore me")
    mine = await rest.send(alice, room_id, "visible")
    other_room = await rest.create_room(bob)
    await rest.invite(bob, other_room, alice.user_id)
    body = await sync(rest, alice, since=since)
    assert timeline_ids(body, room_id) == [mine]
    assert body["rooms"]["invite"] == {}


async def test_rejoining_sends_the_room_whole_again(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    room_id = await rest.create_room(alice, preset="public_chat", name="Again")
    await rest.join(bob, room_id)
    since = (await sync(rest, bob))["next_batch"]
    await rest.leave(bob, room_id)
    await rest.join(bob, room_id)
    body = await sync(rest, bob, since=since)
    assert body["rooms"]["leave"] == {}
    room = body["rooms"]["join"][room_id]
    types = {e["type"] for e in room["state"]["events"] + room["timeline"]["events"]}
    assert {"m.room.create", "m.room.name", "m.room.power_levels"} <= types


async def test_only_rooms_with_new_events_are_sent(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    rooms = [await rest.create_room(alice, name=f"r{i}") for i in range(3)]
    since = (await sync(rest, alice))["next_batch"]
    # Twice: the second sync answers from the remembered memberships and room changes.
    for _ in range(2):
        sent = await rest.send(alice, rooms[1], "only here")
        body = await sync(rest, alice, since=since)
        assert list(body["rooms"]["join"]) == [rooms[1]]
        assert timeline_ids(body, rooms[1]) == [sent]
        since = body["next_batch"]


async def test_a_token_from_before_a_restart_returns_everything_since_it(
    rest: RestHelper, client_core: Core, server_keys: ServerKeys
) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    room_id = await rest.create_room(alice, preset="public_chat")
    await rest.join(bob, room_id)
    since = (await sync(rest, bob))["next_batch"]
    sent = [await rest.send(alice, room_id, f"m{i}") for i in range(2)]
    other = await rest.create_room(alice)
    await rest.invite(alice, other, bob.user_id)
    # A new process over the same database: its notifier knows nothing from before it started.
    restarted = build_core(client_core.storage, "test.local", server_keys)
    body = await restarted.sync.sync(
        SyncConfig(bob.user_id, bob.device_id, since=StreamToken.parse(since))
    )
    assert [e["event_id"] for e in body["rooms"]["join"][room_id]["timeline"]["events"]] == sent
    assert list(body["rooms"]["invite"]) == [other]
