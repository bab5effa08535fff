"""Relationships: /relations (pagination, filters, recursion), /threads, bundled aggregations
in /sync, /messages and /event, edits by others ignored, duplicate reactions refused,
redactions breaking relationships; on both databases."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

from tests.helpers.rest import V3, RestHelper, User
from tests.helpers.spec_schemas import assert_response_valid

V1 = "/_matrix/client/v1"
RELATIONS = ("client-server/relations.yaml", "/rooms/{roomId}/relations/{eventId}", "get")
RELATIONS_TYPE = (
    "client-server/relations.yaml",
    "/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}",
    "get",
)
THREADS = ("client-server/threads_list.yaml", "/rooms/{roomId}/threads", "get")
MESSAGES = ("client-server/message_pagination.yaml", "/rooms/{roomId}/messages", "get")
GET_EVENT = ("client-server/rooms.yaml", "/rooms/{roomId}/event/{eventId}", "get")


def text(body: str, rel_type: str | None = None, parent: str | None = None, **rel: Any) -> Any:
    content: dict[str, Any] = {"msgtype": "m.text", "body": body}
    if rel_type is not None:
        content["m.relates_to"] = {"rel_type": rel_type, "event_id": parent, **rel}
    return content


def edit(parent: str, body: str) -> Any:
    return {
        **text(f"* {body}", "m.replace", parent),
        "m.new_content": {"msgtype": "m.text", "body": body},
    }


async def relations(
    rest: RestHelper, user: User, room_id: str, event_id: str, *path: str, **params: str
) -> Any:
    expect = int(params.pop("expect", "200"))
    suffix = "".join(f"/{quote(p)}" for p in path)
    return await rest.request(
        "GET",
        f"{V1}/rooms/{quote(room_id)}/relations/{quote(event_id)}{suffix}",
        user,
        expect=expect,
        **params,
    )


async def threads(rest: RestHelper, user: User, room_id: str, **params: str) -> Any:
    return await rest.request("GET", f"{V1}/rooms/{quote(room_id)}/threads", user, **params)


async def get_event(rest: RestHelper, user: User, room_id: str, event_id: str) -> Any:
    path = f"{V3}/rooms/{quote(room_id)}/event/{quote(event_id)}"
    return await rest.request("GET", path, user)


async def room_with(rest: RestHelper, *names: str) -> tuple[str, list[User]]:
    users = [await rest.register(n) for n in names]
    room_id = await rest.create_room(users[0], preset="public_chat")
    for user in users[1:]:
        await rest.join(user, room_id)
    return room_id, users


async def test_relations_paginate_backwards_and_forwards(rest: RestHelper) -> None:
    room_id, [alice] = await room_with(rest, "alice")
    root = await rest.send(alice, room_id, "root")
    replies = [await rest.send(alice, room_id, text(f"r{i}", "m.thread", root)) for i in range(5)]
    await rest.send(alice, room_id, "unrelated")

    first = await relations(rest, alice, room_id, root, limit="2")
    assert_response_valid(*RELATIONS, 200, first)
    assert [e["event_id"] for e in first["chunk"]] == [replies[4], replies[3]]
    second = await relations(rest, alice, room_id, root, limit="2", **{"from": first["next_batch"]})
    assert [e["event_id"] for e in second["chunk"]] == [replies[2], replies[1]]
    third = await relations(rest, alice, room_id, root, limit="2", **{"from": second["next_batch"]})
    assert [e["event_id"] for e in third["chunk"]] == [replies[0]]
    assert "next_batch" not in third

    forwards = await relations(rest, alice, room_id, root, dir="f", limit="3")
    assert [e["event_id"] for e in forwards["chunk"]] == replies[:3]
    rest_of = await relations(
        rest, alice, room_id, root, dir="f", **{"from": forwards["next_batch"]}
    )
    assert [e["event_id"] for e in rest_of["chunk"]] == replies[3:]
    # `to` stops a backwards page at the first page's end.
    bounded = await relations(rest, alice, room_id, root, to=first["next_batch"])
    assert [e["event_id"] for e in bounded["chunk"]] == [replies[4], replies[3]]
    await relations(rest, alice, room_id, root, dir="x", expect="400")
    await relations(rest, alice, room_id, root, recurse="maybe", expect="400")


async def test_relations_filter_by_type_and_recurse(rest: RestHelper) -> None:
    room_id, [alice] = await room_with(rest, "alice")
    root = await rest.send(alice, room_id, "root")
    reply = await rest.send(alice, room_id, text("in thread", "m.thread", root))
    reaction = await rest.send(
        alice,
        room_id,
        {"m.relates_to": {"rel_type": "m.annotation", "event_id": root, "key": "👍"}},
        event_type="m.reaction",
    )
    reply_edit = await rest.send(alice, room_id, edit(reply, "in thread, edited"))

    by_rel = await relations(rest, alice, room_id, root, "m.annotation")
    assert [e["event_id"] for e in by_rel["chunk"]] == [reaction]
    by_type = await relations(rest, alice, room_id, root, "m.thread", "m.room.message")
    assert_response_valid(*RELATIONS_TYPE, 200, by_type)
    assert [e["event_id"] for e in by_type["chunk"]] == [reply]
    assert (await relations(rest, alice, room_id, root, "m.thread", "m.reaction"))["chunk"] == []

    direct = await relations(rest, alice, room_id, root)
    assert {e["event_id"] for e in direct["chunk"]} == {reply, reaction}
    assert "recursion_depth" not in direct
    deep = await relations(rest, alice, room_id, root, recurse="true")
    assert [e["event_id"] for e in deep["chunk"]] == [reply_edit, reaction, reply]
    assert deep["recursion_depth"] == 3
    # The filter applies to every level: the edit of the reply is an m.replace.
    edits = await relations(rest, alice, room_id, root, "m.replace", recurse="true")
    assert [e["event_id"] for e in edits["chunk"]] == [reply_edit]


async def test_relations_respect_history_visibility(rest: RestHelper) -> None:
    room_id, [alice] = await room_with(rest, "alice")
    await rest.set_state(
        alice, room_id, "m.room.history_visibility", {"history_visibility": "joined"}
    )
    root = await rest.send(alice, room_id, "before bob")
    await rest.send(alice, room_id, text("early reply", "m.thread", root))
    bob = await rest.register("bob")
    await relations(rest, bob, room_id, root, expect="404")
    await rest.join(bob, room_id)
    # Bob still may not see the root, from before he joined.
    await relations(rest, bob, room_id, root, expect="404")
    visible_root = await rest.send(alice, room_id, "after bob")
    late = await rest.send(alice, room_id, text("late reply", "m.thread", visible_root))
    got = await relations(rest, bob, room_id, visible_root)
    assert [e["event_id"] for e in got["chunk"]] == [late]
    await relations(rest, alice, room_id, "$nope", expect="404")


async def test_threads_list_all_and_participated(rest: RestHelper) -> None:
    room_id, [alice, bob] = await room_with(rest, "alice", "bob")
    alice_root = await rest.send(alice, room_id, "alice's thread")
    bob_root = await rest.send(bob, room_id, "bob's thread")
    await rest.send(bob, room_id, text("bob in bob's", "m.thread", bob_root))
    await rest.send(alice, room_id, text("alice in alice's", "m.thread", alice_root))
    third_root = await rest.send(bob, room_id, "another of bob's")
    await rest.send(bob, room_id, text("b", "m.thread", third_root))

    everything = await threads(rest, alice, room_id)
    assert_response_valid(*THREADS, 200, everything)
    # Latest activity first.
    assert [e["event_id"] for e in everything["chunk"]] == [third_root, alice_root, bob_root]
    thread = everything["chunk"][1]["unsigned"]["m.relations"]["m.thread"]
    assert thread["count"] == 1 and thread["current_user_participated"] is True

    mine = await threads(rest, alice, room_id, include="participated")
    assert [e["event_id"] for e in mine["chunk"]] == [alice_root]
    # Activity moves a thread to the top.
    await rest.send(alice, room_id, text("alice joins bob's", "m.thread", bob_root))
    mine = await threads(rest, alice, room_id, include="participated")
    assert [e["event_id"] for e in mine["chunk"]] == [bob_root, alice_root]

    page = await threads(rest, alice, room_id, limit="2")
    assert [e["event_id"] for e in page["chunk"]] == [bob_root, third_root]
    rest_of = await threads(rest, alice, room_id, limit="2", **{"from": page["next_batch"]})
    assert [e["event_id"] for e in rest_of["chunk"]] == [alice_root]
    assert "next_batch" not in rest_of
    await threads(rest, alice, room_id, include="mine", expect=400)
    await threads(rest, alice, room_id, limit="0", expect=400)


async def test_bundled_aggregations_in_sync_messages_and_event(rest: RestHelper) -> None:
    room_id, [alice, bob] = await room_with(rest, "alice", "bob")
    root = await rest.send(alice, room_id, "root")
    await rest.send(bob, room_id, text("first", "m.thread", root))
    latest = await rest.send(bob, room_id, text("second", "m.thread", root))
    latest_edit = await rest.send(bob, room_id, edit(latest, "second!"))
    first_edit = await rest.send(alice, room_id, edit(root, "root v2"))
    second_edit = await rest.send(alice, room_id, edit(root, "root v3"))
    # An edit by someone else is no edit at all.
    await rest.send(bob, room_id, edit(root, "bob's version"))
    reference = await rest.send(
        bob, room_id, {"m.relates_to": {"rel_type": "m.reference", "event_id": root}}, "m.note"
    )

    def check(event: dict[str, Any], viewer_participated: bool) -> None:
        bundle = event["unsigned"]["m.relations"]
        assert event["content"]["body"] == "root"  # the content is never replaced (v1.7)
        assert bundle["m.replace"]["event_id"] == second_edit != first_edit
        assert bundle["m.reference"] == {"chunk": [{"event_id": reference}]}
        thread = bundle["m.thread"]
        assert thread["count"] == 2
        assert thread["current_user_participated"] is viewer_participated
        assert thread["latest_event"]["event_id"] == latest
        # The latest event carries its own aggregations.
        nested = thread["latest_event"]["unsigned"]["m.relations"]
        assert nested["m.replace"]["event_id"] == latest_edit

    page = await rest.messages(alice, room_id, limit="20")
    assert_response_valid(*MESSAGES, 200, page)
    check(next(e for e in page["chunk"] if e["event_id"] == root), True)

    got = await get_event(rest, bob, room_id, root)
    assert_response_valid(*GET_EVENT, 200, got)
    check(got, True)  # bob replied in the thread

    carol = await rest.register("carol")
    await rest.join(carol, room_id)
    check(await get_event(rest, carol, room_id, root), False)

    synced = await rest.sync(alice)
    timeline = synced["rooms"]["join"][room_id]["timeline"]["events"]
    check(next(e for e in timeline if e["event_id"] == root), True)


async def test_duplicate_annotation_refused_until_redacted(rest: RestHelper) -> None:
    room_id, [alice, bob] = await room_with(rest, "alice", "bob")
    root = await rest.send(alice, room_id, "react to me")
    thumbs = {"m.relates_to": {"rel_type": "m.annotation", "event_id": root, "key": "👍"}}
    first = await rest.send(alice, room_id, thumbs, "m.reaction")
    path = f"{V3}/rooms/{quote(room_id)}/send/m.reaction/again"
    refused = await rest.request("PUT", path, alice, body=thumbs, expect=400)
    assert refused["errcode"] == "M_DUPLICATE_ANNOTATION"
    # Another key, or another user, is a different annotation.
    other_key = {"m.relates_to": {**thumbs["m.relates_to"], "key": "🎉"}}
    await rest.send(alice, room_id, other_key, "m.reaction")
    await rest.send(bob, room_id, thumbs, "m.reaction")

    await rest.request(
        "PUT", f"{V3}/rooms/{quote(room_id)}/redact/{quote(first)}/r1", alice, body={}
    )
    again = await rest.send(alice, room_id, thumbs, "m.reaction")
    listed = await relations(rest, alice, room_id, root, "m.annotation")
    assert first not in {e["event_id"] for e in listed["chunk"]}
    assert again in {e["event_id"] for e in listed["chunk"]}


async def test_concurrent_identical_annotations_land_once(rest: RestHelper) -> None:
    room_id, [alice, bob] = await room_with(rest, "alice", "bob")
    root = await rest.send(alice, room_id, "react to me")
    thumbs = {"m.relates_to": {"rel_type": "m.annotation", "event_id": root, "key": "👍"}}

    async def put(user: User, txn_id: str, content: Any) -> tuple[int, Any]:
        path = f"{V3}/rooms/{quote(room_id)}/send/m.reaction/{txn_id}"
        response = await rest.client.request("PUT", path, json=content, headers=user.headers)
        return response.status, await response.json()

    party = {"m.relates_to": {**thumbs["m.relates_to"], "key": "🎉"}}
    answers = await asyncio.gather(
        *(put(alice, f"race{i}", thumbs) for i in range(8)),
        # Other keys and other users are not held up or refused.
        put(alice, "other-key", party),
        put(bob, "other-user", thumbs),
    )

    statuses = [status for status, _ in answers[:8]]
    assert sorted(statuses) == [200] + [400] * 7
    assert all(
        body["errcode"] == "M_DUPLICATE_ANNOTATION" for status, body in answers[:8] if status == 400
    )
    assert [status for status, _ in answers[8:]] == [200, 200]
    listed = await relations(rest, alice, room_id, root, "m.annotation")
    senders_keys = sorted(
        (e["sender"], e["content"]["m.relates_to"]["key"]) for e in listed["chunk"]
    )
    assert senders_keys == sorted(
        [(alice.user_id, "👍"), (alice.user_id, "🎉"), (bob.user_id, "👍")]
    )


async def test_thread_from_a_related_event_refused(rest: RestHelper) -> None:
    room_id, [alice] = await room_with(rest, "alice")
    root = await rest.send(alice, room_id, "root")
    reply = await rest.send(alice, room_id, text("reply", "m.thread", root))
    path = f"{V3}/rooms/{quote(room_id)}/send/m.room.message/nested"
    refused = await rest.request(
        "PUT", path, alice, body=text("nested", "m.thread", reply), expect=400
    )
    assert refused["errcode"] == "M_UNKNOWN"


async def test_redactions_break_relationships(rest: RestHelper) -> None:
    room_id, [alice] = await room_with(rest, "alice")
    root = await rest.send(alice, room_id, "root")
    await rest.send(alice, room_id, edit(root, "root v2"))
    reply = await rest.send(alice, room_id, text("reply", "m.thread", root))
    later = await rest.send(alice, room_id, text("later", "m.thread", root))
    assert "m.replace" in (await get_event(rest, alice, room_id, root))["unsigned"]["m.relations"]

    # A redacted reply leaves the thread; the thread's latest event falls back.
    await rest.request(
        "PUT", f"{V3}/rooms/{quote(room_id)}/redact/{quote(later)}/r1", alice, body={}
    )
    thread = (await get_event(rest, alice, room_id, root))["unsigned"]["m.relations"]["m.thread"]
    assert thread["count"] == 1 and thread["latest_event"]["event_id"] == reply
    listed = await threads(rest, alice, room_id)
    assert (
        listed["chunk"][0]["unsigned"]["m.relations"]["m.thread"]["latest_event"]["event_id"]
        == reply
    )

    # A redacted original loses its edits (but keeps its thread).
    await rest.request(
        "PUT", f"{V3}/rooms/{quote(room_id)}/redact/{quote(root)}/r2", alice, body={}
    )
    redacted = await get_event(rest, alice, room_id, root)
    assert "redacted_because" in redacted["unsigned"]
    bundle = redacted["unsigned"]["m.relations"]
    assert "m.replace" not in bundle and bundle["m.thread"]["count"] == 1


async def test_aggregations_leave_out_ignored_users(rest: RestHelper) -> None:
    room_id, [alice, bob, carol] = await room_with(rest, "alice", "bob", "carol")
    root = await rest.send(alice, room_id, "root")
    alice_reply = await rest.send(alice, room_id, text("alice", "m.thread", root))
    await rest.send(bob, room_id, text("bob", "m.thread", root))
    await rest.send(
        bob, room_id, {"m.relates_to": {"rel_type": "m.reference", "event_id": root}}, "m.note"
    )
    seen = (await get_event(rest, carol, room_id, root))["unsigned"]["m.relations"]
    assert seen["m.thread"]["count"] == 2 and "m.reference" in seen

    path = f"{V3}/user/{quote(carol.user_id)}/account_data/m.ignored_user_list"
    await rest.request("PUT", path, carol, body={"ignored_users": {bob.user_id: {}}})
    seen = (await get_event(rest, carol, room_id, root))["unsigned"]["m.relations"]
    assert seen["m.thread"]["count"] == 1
    assert seen["m.thread"]["latest_event"]["event_id"] == alice_reply
    assert "m.reference" not in seen


async def test_threads_leave_out_roots_sent_by_ignored_users(rest: RestHelper) -> None:
    room_id, [alice, bob, carol] = await room_with(rest, "alice", "bob", "carol")
    alice_root = await rest.send(alice, room_id, "alice's thread")
    await rest.send(bob, room_id, text("bob in alice's", "m.thread", alice_root))
    bob_root = await rest.send(bob, room_id, "bob's thread")
    await rest.send(alice, room_id, text("alice in bob's", "m.thread", bob_root))
    path = f"{V3}/user/{quote(carol.user_id)}/account_data/m.ignored_user_list"

    await rest.request("PUT", path, carol, body={"ignored_users": {bob.user_id: {}}})
    seen = await threads(rest, carol, room_id)
    assert_response_valid(*THREADS, 200, seen)
    # bob's reply does not hide alice's thread, only that reply (the thread then has none).
    assert [e["event_id"] for e in seen["chunk"]] == [alice_root]
    assert "m.thread" not in seen["chunk"][0]["unsigned"].get("m.relations", {})
    # The pages still reach the threads after it.
    page = await threads(rest, carol, room_id, limit="1")
    assert page["chunk"] == [] and "next_batch" in page
    rest_of = await threads(rest, carol, room_id, limit="1", **{"from": page["next_batch"]})
    assert [e["event_id"] for e in rest_of["chunk"]] == [alice_root]
    # Others still see bob's thread, and carol does once she stops ignoring him.
    assert [e["event_id"] for e in (await threads(rest, alice, room_id))["chunk"]] == [
        bob_root,
        alice_root,
    ]
    await rest.request("PUT", path, carol, body={"ignored_users": {}})
    seen = await threads(rest, carol, room_id)
    assert [e["event_id"] for e in seen["chunk"]] == [bob_root, alice_root]
