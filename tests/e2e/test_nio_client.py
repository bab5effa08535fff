"""matrix-nio's AsyncClient (a real Matrix client, from PyPI) against the real server."""

from __future__ import annotations

import asyncio

from nio import (
    AsyncClient,
    JoinResponse,
    LoginResponse,
    LogoutResponse,
    PresenceGetResponse,
    PresenceSetResponse,
    ProfileGetDisplayNameResponse,
    ProfileSetDisplayNameResponse,
    ReceiptEvent,
    RegisterResponse,
    RoomCreateResponse,
    RoomMessagesResponse,
    RoomMessageText,
    RoomPreset,
    RoomReadMarkersResponse,
    RoomSendResponse,
    RoomTypingResponse,
    SyncResponse,
    TypingNoticeEvent,
    WhoamiError,
    WhoamiResponse,
)


async def test_register_login_whoami_logout(server_url: str) -> None:
    alice = AsyncClient(server_url, "alice")
    try:
        registered = await alice.register("alice", "correct horse", device_name="laptop")
        assert isinstance(registered, RegisterResponse), registered
        assert registered.user_id == "@alice:e2e.test"
        whoami = await alice.whoami()
        assert isinstance(whoami, WhoamiResponse) and whoami.user_id == "@alice:e2e.test"

        phone = AsyncClient(server_url, "@alice:e2e.test")
        try:
            login = await phone.login("correct horse", device_name="phone")
            assert isinstance(login, LoginResponse), login
            assert login.device_id != registered.device_id
            assert isinstance(await phone.logout(), LogoutResponse)
            assert isinstance(await phone.whoami(), WhoamiError)
        finally:
            await phone.close()
        # Logging out the phone left the laptop signed in.
        assert isinstance(await alice.whoami(), WhoamiResponse)
    finally:
        await alice.close()


async def _registered(server_url: str, name: str) -> AsyncClient:
    client = AsyncClient(server_url, name)
    response = await client.register(name, "correct horse")
    assert isinstance(response, RegisterResponse), response
    return client


async def test_a_group_chat_with_real_clients(server_url: str) -> None:
    alice = await _registered(server_url, "alice")
    bob = await _registered(server_url, "bob")
    try:
        # Group room and DM, invite and join, seen through /sync.
        created = await alice.room_create(name="Hall", invite=["@bob:e2e.test"])
        assert isinstance(created, RoomCreateResponse), created
        room_id = created.room_id
        dm = await alice.room_create(
            is_direct=True, preset=RoomPreset.trusted_private_chat, invite=["@bob:e2e.test"]
        )
        assert isinstance(dm, RoomCreateResponse), dm
        first = await bob.sync(timeout=0)
        assert isinstance(first, SyncResponse), first
        assert {room_id, dm.room_id} <= set(first.rooms.invite)
        for rid in (room_id, dm.room_id):
            assert isinstance(await bob.join(rid), JoinResponse)
        since = (await bob.sync(timeout=0)).next_batch

        # A long-polling sync is woken by Alice's message, which arrives exactly as sent.
        text = "héllo 👋 𝄞 — ünïcödé \u200b and a non-BMP 🧑‍🤝‍🧑"
        waiting = asyncio.create_task(bob.sync(timeout=10_000, since=since))
        await asyncio.sleep(0.2)
        sent = await alice.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": text})
        assert isinstance(sent, RoomSendResponse), sent
        delivered = await asyncio.wait_for(waiting, 5)
        assert isinstance(delivered, SyncResponse), delivered
        bodies = [
            e.body
            for e in delivered.rooms.join[room_id].timeline.events
            if isinstance(e, RoomMessageText)
        ]
        assert bodies == [text]

        # Hundreds of messages paginate back complete and in order.
        for i in range(250):
            await alice.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": str(i)})
        latest = await bob.sync(timeout=0, since=delivered.next_batch)
        assert isinstance(latest, SyncResponse)
        token, seen = latest.next_batch, []
        while True:
            page = await bob.room_messages(room_id, start=token, limit=100)
            assert isinstance(page, RoomMessagesResponse), page
            seen += [e.body for e in page.chunk if isinstance(e, RoomMessageText)]
            if not page.chunk or page.end is None:
                break
            token = page.end
        assert seen[:250] == [str(i) for i in reversed(range(250))]
        assert seen[250] == text

        # Typing, receipts, profile and presence reach the other client.
        assert isinstance(await alice.room_typing(room_id, True, timeout=5000), RoomTypingResponse)
        read = await bob.room_read_markers(room_id, sent.event_id, read_event=sent.event_id)
        assert isinstance(read, RoomReadMarkersResponse), read
        assert isinstance(await alice.set_displayname("Alice 🌷"), ProfileSetDisplayNameResponse)
        assert isinstance(await alice.set_presence("online", "here"), PresenceSetResponse)
        now = await bob.sync(timeout=0, since=latest.next_batch)
        assert isinstance(now, SyncResponse)
        ephemeral = now.rooms.join[room_id].ephemeral
        assert any(
            isinstance(e, TypingNoticeEvent) and "@alice:e2e.test" in e.users for e in ephemeral
        )
        name = await bob.get_displayname("@alice:e2e.test")
        assert isinstance(name, ProfileGetDisplayNameResponse) and name.displayname == "Alice 🌷"
        presence = await bob.get_presence("@alice:e2e.test")
        assert isinstance(presence, PresenceGetResponse) and presence.presence == "online"
        alice_view = await alice.sync(timeout=0)
        assert isinstance(alice_view, SyncResponse)
        receipts = [
            e for e in alice_view.rooms.join[room_id].ephemeral if isinstance(e, ReceiptEvent)
        ]
        assert any(
            r.event_id == sent.event_id and r.user_id == "@bob:e2e.test"
            for e in receipts
            for r in e.receipts
        )
    finally:
        await alice.close()
        await bob.close()
