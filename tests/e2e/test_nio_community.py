"""matrix-nio using the community features it has an API for, against the real server:
push rules (muting a room), the notification counts its rooms keep from /sync, a space's
hierarchy and an event's context."""

from __future__ import annotations

from nio import (
    AsyncClient,
    JoinResponse,
    PushEventMatch,
    PushNotify,
    PushRuleKind,
    PushSetTweak,
    RegisterResponse,
    RoomContextResponse,
    RoomCreateResponse,
    RoomPreset,
    RoomPutStateResponse,
    RoomSendResponse,
    SetPushRuleResponse,
    SpaceGetHierarchyResponse,
    SyncResponse,
)


async def _client(server_url: str, name: str) -> AsyncClient:
    client = AsyncClient(server_url, name)
    assert isinstance(await client.register(name, "correct horse"), RegisterResponse)
    return client


async def _room(client: AsyncClient, **options: object) -> str:
    created = await client.room_create(**options)  # type: ignore[arg-type]
    assert isinstance(created, RoomCreateResponse), created
    return created.room_id


async def _send(client: AsyncClient, room_id: str, body: str, **extra: object) -> str:
    content = {"msgtype": "m.text", "body": body, **extra}
    sent = await client.room_send(room_id, "m.room.message", content)
    assert isinstance(sent, RoomSendResponse), sent
    return sent.event_id


async def test_nio_mutes_a_room_and_reads_counts(server_url: str) -> None:
    alice = await _client(server_url, "alice")
    bob = await _client(server_url, "bob")
    carol = await _client(server_url, "carol")
    try:
        loud = await _room(alice, name="loud", preset=RoomPreset.public_chat)
        quiet = await _room(alice, name="quiet", preset=RoomPreset.public_chat)
        for room_id in (loud, quiet):
            for client in (bob, carol):
                assert isinstance(await client.join(room_id), JoinResponse)
        # "Mentions and keywords only" for one room (a room rule, as Element sets it).
        muted = await bob.set_pushrule("global", PushRuleKind.room, quiet, actions=[])
        assert isinstance(muted, SetPushRuleResponse), muted
        # Carol mutes it outright (an override rule, before the mention rules).
        silenced = await carol.set_pushrule(
            "global",
            PushRuleKind.override,
            "mute-quiet",
            conditions=[PushEventMatch("room_id", quiet)],
            actions=[],
        )
        assert isinstance(silenced, SetPushRuleResponse), silenced
        keyword = await bob.set_pushrule(
            "global",
            PushRuleKind.content,
            "lunch",
            pattern="lunch",
            actions=[PushNotify(), PushSetTweak("highlight", True)],
        )
        assert isinstance(keyword, SetPushRuleResponse), keyword

        await _send(alice, loud, "hello everyone")
        await _send(alice, loud, "lunch at noon?")
        await _send(alice, quiet, "nobody hears this")
        mentions = {"user_ids": [bob.user_id, carol.user_id]}
        await _send(alice, quiet, "bob! carol!", **{"m.mentions": mentions})
        synced = await bob.sync(timeout=0)
        assert isinstance(synced, SyncResponse), synced
        assert (bob.rooms[loud].unread_notifications, bob.rooms[loud].unread_highlights) == (
            2,
            1,
        )
        # Mentions only: the mention comes through, highlighted; the chatter does not.
        assert (bob.rooms[quiet].unread_notifications, bob.rooms[quiet].unread_highlights) == (
            1,
            1,
        )
        synced = await carol.sync(timeout=0)
        assert isinstance(synced, SyncResponse), synced
        assert carol.rooms[loud].unread_notifications == 2
        assert carol.rooms[loud].unread_highlights == 0
        assert carol.rooms[quiet].unread_notifications == 0
    finally:
        for client in (alice, bob, carol):
            await client.close()


async def test_nio_reads_a_space_and_an_events_context(server_url: str) -> None:
    alice = await _client(server_url, "alice")
    try:
        space = await _room(alice, name="Community", space=True)
        children = [await _room(alice, name=f"room {n}") for n in range(3)]
        server_name = alice.user_id.split(":", 1)[1]
        for child in children:
            put = await alice.room_put_state(
                space, "m.space.child", {"via": [server_name]}, state_key=child
            )
            assert isinstance(put, RoomPutStateResponse), put
        hierarchy = await alice.space_get_hierarchy(space)
        assert isinstance(hierarchy, SpaceGetHierarchyResponse), hierarchy
        assert [r["room_id"] for r in hierarchy.rooms][0] == space
        assert {r["room_id"] for r in hierarchy.rooms[1:]} == set(children)

        sent = [await _send(alice, children[0], f"message {n}") for n in range(5)]
        context = await alice.room_context(children[0], sent[2], limit=2)
        assert isinstance(context, RoomContextResponse), context
        assert context.event is not None and context.event.event_id == sent[2]
        assert [e.event_id for e in context.events_before] == [sent[1]]
        assert [e.event_id for e in context.events_after] == [sent[3]]
    finally:
        await alice.close()
