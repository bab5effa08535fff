"""Notification counts in /sync (C-S API "Receiving notifications", "Marking notifications as
read", threaded read receipts) and GET /notifications ("Listing Notifications")."""

from __future__ import annotations

import asyncio
import json
import ssl
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

from homeserver.address_policy import OutboundAddressPolicy
from homeserver.config import RegistrationConfig
from homeserver.core import build_core
from homeserver.crypto.keys import ServerKeys
from homeserver.push.gateway import HttpPushGateway
from homeserver.storage import Storage
from tests.client_api.conftest import UNLIMITED, ClientFactory, client_app
from tests.helpers.rest import V3, RestHelper, User
from tests.helpers.spec_schemas import assert_request_valid, assert_response_valid
from tests.helpers.tls import RecordingServer, https_server, make_ca

SYNC = "client-server/sync.yaml"
NOTIFICATIONS = "client-server/notifications.yaml"
NOTIFY_API = "push-gateway/push_notifier.yaml"
THREADED = json.dumps({"room": {"timeline": {"unread_thread_notifications": True}}})


async def _room_of(rest: RestHelper, creator: User, *members: User) -> str:
    room_id = await rest.create_room(creator, preset="public_chat")
    for member in members:
        await rest.join(member, room_id)
    return room_id


async def _counts(rest: RestHelper, user: User, room_id: str, **params: str) -> dict[str, Any]:
    body = await rest.sync(user, **params)
    assert_response_valid(SYNC, "/sync", "get", 200, body)
    room: dict[str, Any] = body["rooms"]["join"][room_id]
    return room


def _unread(room: dict[str, Any]) -> tuple[int, int]:
    counts = room["unread_notifications"]
    return counts["notification_count"], counts["highlight_count"]


async def _receipt(
    rest: RestHelper, user: User, room_id: str, event_id: str, thread_id: str | None = None
) -> None:
    body = {} if thread_id is None else {"thread_id": thread_id}
    path = f"{V3}/rooms/{quote(room_id)}/receipt/m.read/{quote(event_id)}"
    await rest.request("POST", path, user, body)


async def test_messages_and_mentions(rest: RestHelper) -> None:
    alice, bob, carol = [await rest.register(n) for n in ("alice", "bob", "carol")]
    room_id = await _room_of(rest, alice, bob, carol)
    assert _unread(await _counts(rest, bob, room_id)) == (0, 0)
    await rest.send(alice, room_id, "hello all")
    await rest.send(alice, room_id, {"msgtype": "m.notice", "body": "a bot speaks"})
    await rest.send(
        alice,
        room_id,
        {"msgtype": "m.text", "body": "bob, look", "m.mentions": {"user_ids": [bob.user_id]}},
    )
    # A member event of someone else does not notify (.m.rule.member_event).
    dave = await rest.register("dave")
    await rest.join(dave, room_id)
    assert _unread(await _counts(rest, bob, room_id)) == (2, 1)
    assert _unread(await _counts(rest, carol, room_id)) == (2, 0)
    # The sender's own messages never count.
    assert _unread(await _counts(rest, alice, room_id)) == (0, 0)
    # An @room mention highlights when the sender may notify the room: alice (the creator,
    # 100) may, carol (0) may not.
    room_mention = {"msgtype": "m.text", "body": "all!", "m.mentions": {"room": True}}
    await rest.send(carol, room_id, room_mention)
    assert _unread(await _counts(rest, bob, room_id)) == (3, 1)
    await rest.send(alice, room_id, room_mention)
    assert _unread(await _counts(rest, bob, room_id)) == (4, 2)
    # Sending a message reads the room up to it.
    await rest.send(bob, room_id, "caught up")
    assert _unread(await _counts(rest, bob, room_id)) == (0, 0)


async def test_direct_message_and_receipts(rest: RestHelper) -> None:
    alice, bob = await rest.register("alice"), await rest.register("bob")
    room_id = await rest.create_room(alice, preset="trusted_private_chat", invite=[bob.user_id])
    # The invite notifies the invitee (.m.rule.invite_for_me) before they are in the room.
    invited = await rest.request("GET", f"{V3}/notifications", bob)
    assert [n["event"]["type"] for n in invited["notifications"]] == ["m.room.member"]
    await rest.join(bob, room_id)
    since = (await rest.sync(bob))["next_batch"]
    first = await rest.send(alice, room_id, "psst")
    second = await rest.send(alice, room_id, "still there?")
    # The count comes in the same /sync response as the event.
    body = await rest.sync_until(
        bob,
        since,
        lambda b: any(
            e["event_id"] == second
            for e in b["rooms"]["join"].get(room_id, {}).get("timeline", {}).get("events", [])
        ),
    )
    assert _unread(body["rooms"]["join"][room_id]) == (2, 0)
    since = body["next_batch"]
    # In a room of two, a message comes with a sound (.m.rule.room_one_to_one).
    listed = await rest.request("GET", f"{V3}/notifications", bob)
    assert_response_valid(NOTIFICATIONS, "/notifications", "get", 200, listed)
    newest = listed["notifications"][0]
    assert newest["event"]["event_id"] == second and newest["room_id"] == room_id
    assert newest["actions"] == ["notify", {"set_tweak": "sound", "value": "default"}]
    assert newest["read"] is False
    await _receipt(rest, bob, room_id, first)
    assert _unread(await _counts(rest, bob, room_id)) == (1, 0)
    await _receipt(rest, bob, room_id, second)
    # An incremental sync shows the room for the receipt, with the counts it cleared.
    body = await rest.sync_until(bob, since, lambda b: room_id in b["rooms"]["join"])
    assert_response_valid(SYNC, "/sync", "get", 200, body)
    assert _unread(body["rooms"]["join"][room_id]) == (0, 0)
    listed = await rest.request("GET", f"{V3}/notifications", bob)
    # The unthreaded receipt read the invite too: it is earlier in the room.
    assert [n["read"] for n in listed["notifications"]] == [True, True, True]


async def test_muted_room(rest: RestHelper) -> None:
    alice, bob, carol = [await rest.register(n) for n in ("alice", "bob", "carol")]
    room_id = await _room_of(rest, alice, bob, carol)
    other_id = await _room_of(rest, alice, bob, carol)
    mute = {
        "actions": ["dont_notify"],
        "conditions": [{"kind": "event_match", "key": "room_id", "pattern": room_id}],
    }
    await rest.request("PUT", f"{V3}/pushrules/global/override/mute", bob, mute)
    mention = {"msgtype": "m.text", "body": "bob!", "m.mentions": {"user_ids": [bob.user_id]}}
    for target in (room_id, other_id):
        await rest.send(alice, target, mention)
    assert _unread(await _counts(rest, bob, room_id)) == (0, 0)
    assert _unread(await _counts(rest, bob, other_id)) == (1, 1)
    # The master rule silences everything.
    await rest.request(
        "PUT", f"{V3}/pushrules/global/override/.m.rule.master/enabled", bob, {"enabled": True}
    )
    await rest.send(alice, other_id, mention)
    assert _unread(await _counts(rest, bob, other_id)) == (1, 1)


async def test_threaded_receipts(rest: RestHelper) -> None:
    alice, bob, carol = [await rest.register(n) for n in ("alice", "bob", "carol")]
    room_id = await _room_of(rest, alice, bob, carol)
    root = await rest.send(alice, room_id, "a thread starts")
    other_root = await rest.send(alice, room_id, "another one")

    def reply(thread_root: str, body: str) -> dict[str, Any]:
        return {
            "msgtype": "m.text",
            "body": body,
            "m.relates_to": {"rel_type": "m.thread", "event_id": thread_root},
        }

    in_thread = [await rest.send(alice, room_id, reply(root, f"reply {i}")) for i in range(2)]
    await rest.send(alice, room_id, reply(other_root, "elsewhere"))
    room = await _counts(rest, bob, room_id, filter=THREADED)
    assert _unread(room) == (2, 0)
    threads = room["unread_thread_notifications"]
    assert threads == {
        root: {"highlight_count": 0, "notification_count": 2},
        other_root: {"highlight_count": 0, "notification_count": 1},
    }
    # Without the filter's unread_thread_notifications every count is in the room's.
    plain = await _counts(rest, bob, room_id)
    assert _unread(plain) == (5, 0) and "unread_thread_notifications" not in plain

    # A threaded receipt reads its thread only.
    await _receipt(rest, bob, room_id, in_thread[1], thread_id=root)
    room = await _counts(rest, bob, room_id, filter=THREADED)
    assert _unread(room) == (2, 0)
    assert room["unread_thread_notifications"] == {
        other_root: {"highlight_count": 0, "notification_count": 1}
    }
    # "main" reads the main timeline only, up to its event.
    await _receipt(rest, bob, room_id, root, thread_id="main")
    room = await _counts(rest, bob, room_id, filter=THREADED)
    assert _unread(room) == (1, 0)
    assert set(room["unread_thread_notifications"]) == {other_root}
    # An unthreaded receipt reads everything up to its event, whatever the thread.
    last = await rest.send(alice, room_id, "latest")
    await _receipt(rest, bob, room_id, last)
    room = await _counts(rest, bob, room_id, filter=THREADED)
    assert _unread(room) == (0, 0) and room["unread_thread_notifications"] == {}


async def _listed(rest: RestHelper, user: User) -> list[str]:
    body = await rest.request("GET", f"{V3}/notifications", user)
    assert_response_valid(NOTIFICATIONS, "/notifications", "get", 200, body)
    return [n["event"]["event_id"] for n in body["notifications"]]


async def test_counts_run_from_joining_to_leaving(rest: RestHelper) -> None:
    """A room's notifications count for a member from their join on: nothing from before
    they joined, nothing while they were away."""
    alice, bob, carol = [await rest.register(n) for n in ("alice", "bob", "carol")]
    room_id = await _room_of(rest, alice, carol)
    root = await rest.send(alice, room_id, "before bob")
    await rest.send(
        alice,
        room_id,
        {
            "msgtype": "m.text",
            "body": "a reply before bob",
            "m.relates_to": {"rel_type": "m.thread", "event_id": root},
        },
    )
    await rest.join(bob, room_id)
    room = await _counts(rest, bob, room_id, filter=THREADED)
    assert _unread(room) == (0, 0) and room["unread_thread_notifications"] == {}
    assert await _listed(rest, bob) == []
    welcome = await rest.send(alice, room_id, "welcome bob")
    assert _unread(await _counts(rest, bob, room_id)) == (1, 0)
    assert await _listed(rest, bob) == [welcome]
    await rest.request("POST", f"{V3}/rooms/{quote(room_id)}/leave", bob, {})
    await rest.send(alice, room_id, "while bob is away")
    await rest.join(bob, room_id)
    assert _unread(await _counts(rest, bob, room_id)) == (0, 0)
    back = await rest.send(alice, room_id, "welcome back")
    assert _unread(await _counts(rest, bob, room_id)) == (1, 0)
    assert (await _listed(rest, bob))[0] == back
    # Carol, there all along, has every message of alice's but her own join's.
    assert _unread(await _counts(rest, carol, room_id)) == (5, 0)


async def test_rules_of_ones_own_in_a_shared_room(rest: RestHelper) -> None:
    """Members whose rules differ from the defaults count differently from the rest: a
    keyword that highlights for one member, a sender another member silenced."""
    alice, bob, carol, dan = [await rest.register(n) for n in ("alice", "bob", "carol", "dan")]
    room_id = await _room_of(rest, alice, bob, carol, dan)
    keyword = {"pattern": "pizza", "actions": ["notify", {"set_tweak": "highlight"}]}
    await rest.request("PUT", f"{V3}/pushrules/global/content/pizza", bob, keyword)
    await rest.request(
        "PUT", f"{V3}/pushrules/global/sender/{quote(carol.user_id)}", dan, {"actions": []}
    )
    pizza = await rest.send(alice, room_id, "pizza time")
    assert _unread(await _counts(rest, bob, room_id)) == (1, 1)
    assert _unread(await _counts(rest, dan, room_id)) == (1, 0)
    await rest.send(carol, room_id, "hi all")
    assert _unread(await _counts(rest, bob, room_id)) == (2, 1)
    assert _unread(await _counts(rest, dan, room_id)) == (1, 0)
    assert _unread(await _counts(rest, alice, room_id)) == (1, 0)
    # Carol's message read the room for her, up to it.
    assert _unread(await _counts(rest, carol, room_id)) == (0, 0)
    highlights = await rest.request("GET", f"{V3}/notifications", bob, only="highlight")
    assert [n["event"]["event_id"] for n in highlights["notifications"]] == [pizza]
    assert pizza in await _listed(rest, dan) and len(await _listed(rest, dan)) == 1


async def test_notifications_pagination(rest: RestHelper) -> None:
    alice, bob, carol = [await rest.register(n) for n in ("alice", "bob", "carol")]
    room_id = await _room_of(rest, alice, bob, carol)
    sent = []
    for i in range(5):
        content: dict[str, Any] = {"msgtype": "m.text", "body": f"message {i}"}
        if i % 2 == 0:
            content["m.mentions"] = {"user_ids": [bob.user_id]}
        sent.append(await rest.send(alice, room_id, content))
    seen: list[str] = []
    token: str | None = None
    while True:
        params = {"limit": "2"} | ({"from": token} if token else {})
        page = await rest.request("GET", f"{V3}/notifications", bob, **params)
        assert_response_valid(NOTIFICATIONS, "/notifications", "get", 200, page)
        assert len(page["notifications"]) <= 2
        seen += [n["event"]["event_id"] for n in page["notifications"]]
        token = page.get("next_token")
        if token is None:
            break
    assert seen == sent[::-1]
    highlights = await rest.request("GET", f"{V3}/notifications", bob, only="highlight")
    assert [n["event"]["event_id"] for n in highlights["notifications"]] == sent[::-2]
    assert all("room_id" not in n["event"] for n in highlights["notifications"])
    bad = await rest.request("GET", f"{V3}/notifications", bob, expect=400, limit="many")
    assert bad["errcode"] == "M_INVALID_PARAM"
    await rest.request("GET", f"{V3}/notifications", bob, expect=400, **{"from": "x"})
    empty = await rest.request("GET", f"{V3}/notifications", carol, only="highlight")
    assert empty == {"notifications": []}


async def test_http_pusher(
    storage: Storage, server_keys: ServerKeys, aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    ca = make_ca(tmp_path)
    gateway = HttpPushGateway(
        OutboundAddressPolicy(["127.0.0.1"]).is_allowed,
        partial(ssl.create_default_context, cafile=str(ca.ca_file)),
    )
    core = build_core(
        storage,
        "test.local",
        server_keys,
        registration=RegistrationConfig(enabled=True),
        limits=UNLIMITED,
        push_gateway=gateway,
    )
    rest = RestHelper(await aiohttp_client(client_app(core)))
    push_gateway = RecordingServer()
    notify_path = "/_matrix/push/v1/notify"
    push_gateway.json(notify_path, {"rejected": ["gone-key"]})
    try:
        async with https_server(push_gateway.app, ca.server_context("127.0.0.1")) as port:
            alice, bob = await rest.register("alice"), await rest.register("bob")
            room_id = await rest.create_room(alice, preset="public_chat")
            await rest.join(bob, room_id)
            url = f"https://127.0.0.1:{port}{notify_path}"
            pusher = {
                "kind": "http",
                "app_id": "org.example.app",
                "app_display_name": "Example",
                "device_display_name": "Phone",
                "lang": "en",
                "data": {"url": url, "custom": "kept"},
            }
            for pushkey in ("live-key", "gone-key"):
                await rest.request("POST", f"{V3}/pushers/set", bob, {**pusher, "pushkey": pushkey})
            event_id = await rest.send(alice, room_id, "ping")
            for _ in range(100):
                if len(push_gateway.seen(notify_path)) >= 2:
                    break
                await asyncio.sleep(0.05)
            bodies = [json.loads(r.body) for r in push_gateway.seen(notify_path)]
            assert len(bodies) == 2
            for body in bodies:
                assert_request_valid(NOTIFY_API, "/notify", "post", body)
                notification = body["notification"]
                assert notification["event_id"] == event_id
                assert notification["room_id"] == room_id
                assert notification["sender"] == alice.user_id
                assert notification["content"]["body"] == "ping"
                assert notification["counts"] == {"unread": 1}
                [device] = notification["devices"]
                assert device["data"] == {"custom": "kept"}
                assert device["tweaks"] == {"sound": "default"}  # a room of two
            assert {b["notification"]["devices"][0]["pushkey"] for b in bodies} == {
                "live-key",
                "gone-key",
            }
            # The gateway rejected one pushkey: that pusher goes (once its worker has read
            # the answer).
            for _ in range(100):
                left = await rest.request("GET", f"{V3}/pushers", bob)
                if len(left["pushers"]) == 1:
                    break
                await asyncio.sleep(0.05)
            assert [p["pushkey"] for p in left["pushers"]] == ["live-key"]
    finally:
        await core.pusher_pool.close()
