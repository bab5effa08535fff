"""End-to-end encryption between real matrix-nio clients (vodozemac Olm/Megolm) on the real server:
keys are uploaded, queried and claimed, room keys travel as Olm-encrypted to-device messages,
messages travel as Megolm-encrypted room events, and a device added later is found through
`device_lists.changed` and given the keys for what is sent after it appeared. The server only
ever relays and stores ciphertext."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import ClientResponse
from nio import (
    AsyncClient,
    AsyncClientConfig,
    EnableEncryptionBuilder,
    Event,
    JoinResponse,
    KeysClaimResponse,
    KeysQueryResponse,
    KeysUploadResponse,
    LoginResponse,
    MegolmEvent,
    RegisterResponse,
    RoomCreateResponse,
    RoomMessagesResponse,
    RoomMessageText,
    RoomPreset,
    RoomSendResponse,
    SyncResponse,
    ToDeviceResponse,
)

MEGOLM = "m.megolm.v1.aes-sha2"
OLM = "m.olm.v1.curve25519-aes-sha2"
ALICE, BOB = "@alice:e2e.test", "@bob:e2e.test"
PASSWORD = "correct horse"


class EncryptingClient(AsyncClient):
    """A nio client with its own Olm store that remembers what went over the wire: every request
    it made and the raw JSON of every /sync answer, as the server sent it before nio decrypted
    anything."""

    def __init__(self, server_url: str, user: str, store: Path) -> None:
        store.mkdir()
        super().__init__(
            server_url,
            user,
            store_path=str(store),
            config=AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True),
        )
        self.requests: list[tuple[str, str, Any]] = []
        self.raw_syncs: list[dict[str, Any]] = []
        # What each timeline event looked like on the wire, and what nio made of it.
        self.wire_events: dict[str, dict[str, Any]] = {}
        self.seen_events: dict[str, Event] = {}

    async def send(
        self,
        method: str,
        path: str,
        data: Any = None,
        headers: dict[str, str] | None = None,
        trace_context: Any = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> ClientResponse:
        body = json.loads(data) if isinstance(data, str) and data else None
        self.requests.append((method, path.split("?")[0], body))
        return await super().send(method, path, data, headers, trace_context, timeout)

    async def parse_body(self, transport_response: ClientResponse) -> dict[Any, Any]:
        body = await super().parse_body(transport_response)
        if transport_response.url.path.endswith("/sync") and transport_response.status == 200:
            self.raw_syncs.append(body)
            for room in body.get("rooms", {}).get("join", {}).values():
                for event in room.get("timeline", {}).get("events", []):
                    self.wire_events[event["event_id"]] = event
        return body

    async def housekeep(self, sync_timeout_ms: int) -> None:
        """One turn of what `sync_forever` does, with every answer checked: sync, then send
        queued to-device messages, upload, query and claim keys as nio asks."""
        synced = await self.sync(timeout=sync_timeout_ms)
        assert isinstance(synced, SyncResponse), synced
        for room in synced.rooms.join.values():
            for event in room.timeline.events:
                if isinstance(event, Event):
                    self.seen_events[event.event_id] = event
        for sent in await self.send_to_device_messages():
            assert isinstance(sent, ToDeviceResponse), sent
        if self.should_upload_keys:
            assert isinstance(await self.keys_upload(), KeysUploadResponse)
        if self.should_query_keys:
            assert isinstance(await self.keys_query(), KeysQueryResponse)
        if self.should_claim_keys:
            claimed = await self.keys_claim(self.get_users_for_key_claiming())
            assert isinstance(claimed, KeysClaimResponse), claimed

    def decrypted(self, event_id: str) -> RoomMessageText | None:
        event = self.seen_events.get(event_id)
        return event if isinstance(event, RoomMessageText) else None

    def requests_since(self, mark: int, method: str, path_part: str) -> list[Any]:
        return [body for m, p, body in self.requests[mark:] if m == method and path_part in p]


async def until(
    condition: Callable[[], bool],
    clients: list[EncryptingClient],
    what: str,
    timeout_s: float = 10,
) -> None:
    """Sync all `clients` side by side (short long-polls) until `condition` holds."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.gather(*(c.housekeep(sync_timeout_ms=200) for c in clients))


async def _register(server_url: str, name: str) -> None:
    client = AsyncClient(server_url, name)
    try:
        assert isinstance(await client.register(name, PASSWORD), RegisterResponse)
    finally:
        await client.close()


async def _log_in(server_url: str, user_id: str, device: str, tmp_path: Path) -> EncryptingClient:
    client = EncryptingClient(server_url, user_id, tmp_path / f"store-{device}")
    login = await client.login(PASSWORD, device_name=device)
    assert isinstance(login, LoginResponse), login
    assert client.olm is not None and client.should_upload_keys
    uploaded = await client.keys_upload()
    assert isinstance(uploaded, KeysUploadResponse), uploaded
    assert uploaded.signed_curve25519_count > 0
    return client


def _assert_encrypted_on_the_wire(
    receiver: EncryptingClient, event_id: str, sender: EncryptingClient, body: str
) -> None:
    wire = receiver.wire_events[event_id]
    assert wire["type"] == "m.room.encrypted", wire
    assert wire["content"]["algorithm"] == MEGOLM
    assert wire["content"]["sender_key"] == sender.olm.account.identity_keys["curve25519"]
    assert body not in json.dumps(wire, ensure_ascii=False)
    message = receiver.decrypted(event_id)
    assert message is not None, receiver.seen_events.get(event_id)
    assert message.decrypted and message.body == body and message.sender == sender.user_id


async def _stored_event(server_url: str, token: str, room_id: str, event_id: str) -> str:
    """The event as the server holds it, fetched over plain HTTP (no nio in between)."""
    url = f"{server_url}/_matrix/client/v3/rooms/{quote(room_id)}/event/{quote(event_id)}"
    async with aiohttp.ClientSession() as http:
        async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
            assert response.status == 200, await response.text()
            return await response.text()


async def test_encrypted_dm_and_a_device_added_later(
    server_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    await _register(server_url, "alice")
    await _register(server_url, "bob")
    alice = await _log_in(server_url, ALICE, "alice_laptop", tmp_path)
    bob = await _log_in(server_url, BOB, "bob_phone", tmp_path)
    tablet: EncryptingClient | None = None
    try:
        # An encrypted DM: encrypted from its first event on, Bob invited and joining.
        created = await alice.room_create(
            is_direct=True,
            preset=RoomPreset.trusted_private_chat,
            invite=[BOB],
            initial_state=[EnableEncryptionBuilder().as_dict()],
        )
        assert isinstance(created, RoomCreateResponse), created
        room_id = created.room_id
        await until(lambda: room_id in bob.invited_rooms, [alice, bob], "Bob's invite")
        assert isinstance(await bob.join(room_id), JoinResponse)
        await until(
            lambda: (
                room_id in alice.rooms
                and BOB in alice.rooms[room_id].users
                and room_id in bob.rooms
                and bob.rooms[room_id].encrypted
            ),
            [alice, bob],
            "Bob's join",
        )
        assert alice.rooms[room_id].encrypted

        # Alice -> Bob: Alice queries Bob's keys, claims a one-time key, sends the Megolm
        # session Olm-encrypted to his device, then the Megolm-encrypted message.
        mark = len(alice.requests)
        first_text = "first secret from Alice 🔐"
        sent = await alice.room_send(
            room_id, "m.room.message", {"msgtype": "m.text", "body": first_text}, None, True
        )
        assert isinstance(sent, RoomSendResponse), sent
        assert any(
            BOB in body["one_time_keys"]
            for body in alice.requests_since(mark, "POST", "/keys/claim")
        )
        await until(
            lambda: bob.decrypted(sent.event_id) is not None, [alice, bob], "Bob decrypting"
        )
        _assert_encrypted_on_the_wire(bob, sent.event_id, alice, first_text)

        # Bob -> Alice, over a session Bob sets up the same way.
        reply_text = "Bob's secret reply 🗝️"
        reply = await bob.room_send(
            room_id, "m.room.message", {"msgtype": "m.text", "body": reply_text}, None, True
        )
        assert isinstance(reply, RoomSendResponse), reply
        await until(
            lambda: alice.decrypted(reply.event_id) is not None, [alice, bob], "Alice decrypting"
        )
        _assert_encrypted_on_the_wire(alice, reply.event_id, bob, reply_text)

        # The server never had the plaintext: not in the event it stores and serves, not in
        # anything it sent either client, and (on SQLite, where the data is files under
        # tmp_path) not anywhere on disk, although the ciphertext is.
        for event_id, text in ((sent.event_id, first_text), (reply.event_id, reply_text)):
            stored = json.loads(
                await _stored_event(server_url, bob.access_token, room_id, event_id)
            )
            assert stored["type"] == "m.room.encrypted" and stored["content"]["ciphertext"]
            assert text not in json.dumps(stored, ensure_ascii=False)
            for client in (alice, bob):
                assert not any(text in json.dumps(s, ensure_ascii=False) for s in client.raw_syncs)
        if request.node.callspec.params["server_url"] == "sqlite":
            on_disk = b"".join(
                p.read_bytes() for p in (tmp_path / "data").rglob("homeserver.db*") if p.is_file()
            )
            assert alice.wire_events[reply.event_id]["content"]["ciphertext"].encode() in on_disk
            for text in (first_text, reply_text):
                assert text.encode() not in on_disk

        # Bob signs in on a tablet. Alice's client hears of it through device_lists.changed,
        # queries Bob's keys, claims a one-time key of the tablet and shares a new Megolm
        # session with it Olm-encrypted, so the tablet reads what Alice sends from now on.
        tablet = await _log_in(server_url, BOB, "bob_tablet", tmp_path)
        tablet_id = tablet.device_id
        syncs_before = len(alice.raw_syncs)
        await until(
            lambda: any(d.id == tablet_id for d in alice.device_store.active_user_devices(BOB)),
            [alice, bob, tablet],
            "Alice learning of Bob's tablet",
        )
        assert any(
            BOB in s.get("device_lists", {}).get("changed", [])
            for s in alice.raw_syncs[syncs_before:]
        )
        mark = len(alice.requests)
        later_text = "for every device Bob has now 📱"
        later = await alice.room_send(
            room_id, "m.room.message", {"msgtype": "m.text", "body": later_text}, None, True
        )
        assert isinstance(later, RoomSendResponse), later
        claims = alice.requests_since(mark, "POST", "/keys/claim")
        assert any(tablet_id in body["one_time_keys"].get(BOB, {}) for body in claims), claims
        to_device = alice.requests_since(mark, "PUT", "/sendToDevice/m.room.encrypted/")
        to_tablet = [
            b["messages"][BOB][tablet_id]
            for b in to_device
            if tablet_id in b["messages"].get(BOB, {})
        ]
        assert [m["algorithm"] for m in to_tablet] == [OLM]
        assert later_text not in json.dumps(to_device, ensure_ascii=False)

        await until(
            lambda: (
                tablet.decrypted(later.event_id) is not None
                and bob.decrypted(later.event_id) is not None
            ),
            [alice, bob, tablet],
            "the tablet and the phone decrypting",
        )
        _assert_encrypted_on_the_wire(tablet, later.event_id, alice, later_text)
        _assert_encrypted_on_the_wire(bob, later.event_id, alice, later_text)
        tablet_to_device = [
            e for s in tablet.raw_syncs for e in s.get("to_device", {}).get("events", [])
        ]
        assert any(
            e["type"] == "m.room.encrypted"
            and e["sender"] == ALICE
            and e["content"]["algorithm"] == OLM
            for e in tablet_to_device
        )

        # What was sent before the tablet existed stays unreadable to it.
        history = await tablet.room_messages(room_id, start=tablet.next_batch, limit=50)
        assert isinstance(history, RoomMessagesResponse), history
        early = {
            e.event_id: e for e in history.chunk if e.event_id in (sent.event_id, reply.event_id)
        }
        assert len(early) == 2 and all(isinstance(e, MegolmEvent) for e in early.values()), early
    finally:
        for closing in (alice, bob, tablet):
            if closing is not None:
                await closing.close()
