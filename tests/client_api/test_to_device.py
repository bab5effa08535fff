"""Send-to-device messaging (C-S API "Send-to-Device messaging"): PUT /sendToDevice and the
to_device section of /sync, with acknowledgement by `since`, batching and durability."""

from __future__ import annotations

import asyncio
from typing import Any

from homeserver.core import Core, build_core
from homeserver.crypto.keys import ServerKeys
from homeserver.handlers.sync import SyncConfig
from homeserver.handlers.to_device import MAX_PER_SYNC
from homeserver.storage import storage_on
from homeserver.streams import StreamToken
from tests.helpers.rest import V3, RestHelper, User
from tests.helpers.spec_schemas import assert_response_valid, assert_valid

API = "client-server/to_device.yaml"
PATH = "/sendToDevice/{eventType}/{txnId}"
ERROR = "api/client-server/definitions/errors/error.yaml"
PROMPTLY_S = 5.0
_txn = 0


async def send(
    rest: RestHelper,
    sender: User,
    messages: Any,
    event_type: str = "m.test",
    txn_id: str | None = None,
    expect: int = 200,
) -> Any:
    global _txn
    if txn_id is None:
        _txn += 1
        txn_id = f"t{_txn}"
    body = await rest.request(
        "PUT",
        f"{V3}/sendToDevice/{event_type}/{txn_id}",
        sender,
        body={"messages": messages} if messages is not None else {},
        expect=expect,
    )
    if expect == 200:
        assert_response_valid(API, PATH, "put", 200, body)
    return body


async def sync(rest: RestHelper, user: User, **params: str) -> Any:
    body = await rest.sync(user, **params)
    assert_response_valid("client-server/sync.yaml", "/sync", "get", 200, body)
    return body


def events(body: Any) -> list[Any]:
    return list(body["to_device"]["events"])


async def test_send_to_one_device_and_to_all(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    bob2 = await rest.login("bob")
    since1 = (await sync(rest, bob))["next_batch"]
    since2 = (await sync(rest, bob2))["next_batch"]
    await send(rest, alice, {bob.user_id: {bob.device_id: {"n": 1}}}, "m.one")
    await send(rest, alice, {bob.user_id: {"*": {"n": 2}}}, "m.all")
    first = await sync(rest, bob, since=since1)
    assert events(first) == [
        {"sender": alice.user_id, "type": "m.one", "content": {"n": 1}},
        {"sender": alice.user_id, "type": "m.all", "content": {"n": 2}},
    ]
    second = await sync(rest, bob2, since=since2)
    assert events(second) == [{"sender": alice.user_id, "type": "m.all", "content": {"n": 2}}]
    # Only the addressed user's devices get them.
    assert events(await sync(rest, alice)) == []


async def test_initial_sync_delivers_pending_messages(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    await send(rest, alice, {bob.user_id: {bob.device_id: {"k": "v"}}})
    assert [e["content"] for e in events(await sync(rest, bob))] == [{"k": "v"}]


async def test_transaction_id_is_idempotent_per_device(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    alice2 = await rest.login("alice")
    bob = await rest.register("bob")
    since = (await sync(rest, bob))["next_batch"]
    for _ in range(2):
        await send(rest, alice, {bob.user_id: {"*": {"n": 1}}}, txn_id="same")
    # The same txnId from another device is another transaction.
    await send(rest, alice2, {bob.user_id: {"*": {"n": 2}}}, txn_id="same")
    body = await sync(rest, bob, since=since)
    assert [e["content"] for e in events(body)] == [{"n": 1}, {"n": 2}]


async def test_same_since_repeats_and_later_since_acknowledges(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    since = (await sync(rest, bob))["next_batch"]
    await send(rest, alice, {bob.user_id: {bob.device_id: {"n": 1}}})
    first = await sync(rest, bob, since=since)
    again = await sync(rest, bob, since=since)
    assert events(first) == events(again) != []
    acked = await sync(rest, bob, since=again["next_batch"])
    assert events(acked) == []
    # Acknowledged messages are deleted: even the old token no longer brings them back.
    assert events(await sync(rest, bob, since=since)) == []
    assert events(await sync(rest, bob)) == []


async def test_unknown_users_and_devices_are_ignored(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    since = (await sync(rest, bob))["next_batch"]
    await send(
        rest,
        alice,
        {
            "@nobody:test.local": {"*": {"x": 1}},
            "@remote:elsewhere.example": {"DEV": {"x": 2}},
            bob.user_id: {"NOSUCHDEVICE": {"x": 3}, bob.device_id: {"x": 4}},
        },
    )
    assert [e["content"] for e in events(await sync(rest, bob, since=since))] == [{"x": 4}]


async def test_a_long_queue_arrives_over_several_syncs_exactly_once(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    since = (await sync(rest, bob))["next_batch"]
    total = MAX_PER_SYNC * 2 + 5
    for i in range(total):
        await send(rest, alice, {bob.user_id: {bob.device_id: {"i": i}}})
    received: list[int] = []
    sizes = []
    while True:
        body = await sync(rest, bob, since=since)
        got = [e["content"]["i"] for e in events(body)]
        if not got:
            break
        sizes.append(len(got))
        received += got
        since = body["next_batch"]
    assert received == list(range(total))
    assert sizes == [MAX_PER_SYNC, MAX_PER_SYNC, 5]


async def test_a_long_poll_wakes_on_a_to_device_message(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    since = (await sync(rest, bob))["next_batch"]
    waiting = asyncio.create_task(sync(rest, bob, since=since, timeout="20000"))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    await send(rest, alice, {bob.user_id: {"*": {"wake": True}}})
    body = await asyncio.wait_for(waiting, PROMPTLY_S)
    assert [e["content"] for e in events(body)] == [{"wake": True}]


async def test_messages_survive_a_restart(
    rest: RestHelper, client_core: Core, server_keys: ServerKeys
) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    since = (await sync(rest, bob))["next_batch"]
    await send(rest, alice, {bob.user_id: {"*": {"n": 1}}})
    # A new process over the same database, with stores that have cached nothing.
    restarted = build_core(await storage_on(client_core.storage.db), "test.local", server_keys)
    body = await restarted.sync.sync(
        SyncConfig(bob.user_id, bob.device_id, since=StreamToken.parse(since))
    )
    assert [e["content"] for e in body["to_device"]["events"]] == [{"n": 1}]


async def test_offline_recipient_gets_each_message_exactly_once_across_restarts(
    rest: RestHelper, client_core: Core, server_keys: ServerKeys
) -> None:
    alice = await rest.register("alice")
    carol = await rest.register("carol")
    bob = await rest.register("bob")
    bob2 = await rest.login("bob")
    since = (await sync(rest, bob))["next_batch"]
    # Bob is offline while messages pile up: to one device, to all, from two senders.
    sent = []
    for n in range(5):
        sender = alice if n % 2 else carol
        await send(rest, sender, {bob.user_id: {bob.device_id: {"n": n}}})
        sent.append({"sender": sender.user_id, "type": "m.test", "content": {"n": n}})
    await send(rest, alice, {bob.user_id: {"*": {"n": "all"}}})
    sent.append({"sender": alice.user_id, "type": "m.test", "content": {"n": "all"}})
    await client_core.persister.close()

    async def sync_after_restart(token: str) -> dict[str, Any]:
        core = build_core(await storage_on(client_core.storage.db), "test.local", server_keys)
        try:
            return await core.sync.sync(
                SyncConfig(bob.user_id, bob.device_id, since=StreamToken.parse(token))
            )
        finally:
            await core.persister.close()

    first = await sync_after_restart(since)
    assert first["to_device"]["events"] == sent
    # Not acknowledged yet (the client may not have got the response): the same again.
    assert (await sync_after_restart(since))["to_device"]["events"] == sent
    # Syncing with the new token acknowledges them: never again, through another restart.
    acknowledged = await sync_after_restart(first["next_batch"])
    assert acknowledged["to_device"]["events"] == []
    assert (await sync_after_restart(acknowledged["next_batch"]))["to_device"]["events"] == []
    # Bob's other device still has its copy of the message to all devices.
    other = build_core(await storage_on(client_core.storage.db), "test.local", server_keys)
    body = await other.sync.sync(SyncConfig(bob.user_id, bob2.device_id))
    await other.persister.close()
    assert body["to_device"]["events"] == [sent[-1]]


async def test_oversized_payload_is_refused_and_nothing_is_queued(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    huge = {bob.user_id: {bob.device_id: {"blob": "x" * (2 * 1024 * 1024)}}}
    body = await send(rest, alice, huge, expect=413)
    assert body["errcode"] == "M_TOO_LARGE"
    assert_valid(ERROR, body)
    assert events(await sync(rest, bob)) == []


async def test_the_position_survives_a_restart_with_an_empty_inbox(
    rest: RestHelper, client_core: Core, server_keys: ServerKeys
) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    await send(rest, alice, {bob.user_id: {"*": {"n": 1}}})
    old = (await sync(rest, bob))["next_batch"]
    assert events(await sync(rest, bob, since=old)) == []  # acknowledged and deleted
    restarted = build_core(await storage_on(client_core.storage.db), "test.local", server_keys)
    position = StreamToken.parse(old).to_device
    assert position > 0
    assert await restarted.to_device.current_position() == position
    # A message sent after the restart lies after `old`: not taken as acknowledged by it.
    await restarted.to_device.send(
        alice.user_id, alice.device_id, "m.test", "after", {"messages": {bob.user_id: {"*": {}}}}
    )
    body = await restarted.sync.sync(
        SyncConfig(bob.user_id, bob.device_id, since=StreamToken.parse(old))
    )
    assert body["to_device"]["events"] == [
        {"sender": alice.user_id, "type": "m.test", "content": {}}
    ]


async def test_deleting_a_device_drops_its_inbox(rest: RestHelper, client_core: Core) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    bob2 = await rest.login("bob")
    await send(rest, alice, {bob.user_id: {"*": {"n": 1}}})
    await rest.request("POST", f"{V3}/logout", bob2, body={})
    rows = await client_core.storage.db.fetch(
        "SELECT device_id FROM device_inbox WHERE user_id = $1", bob.user_id
    )
    assert [r[0] for r in rows] == [bob.device_id]


async def test_malformed_bodies_are_refused(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    cases: list[tuple[Any, str]] = [
        (None, "M_BAD_JSON"),
        ("not an object", "M_BAD_JSON"),
        ({"@bob:test.local": "x"}, "M_BAD_JSON"),
        ({"@bob:test.local": {"DEV": "x"}}, "M_BAD_JSON"),
        ({"bob": {"DEV": {}}}, "M_INVALID_PARAM"),
        ({"@bob:test.local": {"": {}}}, "M_INVALID_PARAM"),
    ]
    for messages, errcode in cases:
        body = await send(rest, alice, messages, expect=400)
        assert body["errcode"] == errcode, (messages, body)
        assert_valid(ERROR, body)


async def test_missing_token_is_refused(rest: RestHelper) -> None:
    body = await rest.request(
        "PUT", f"{V3}/sendToDevice/m.test/t1", None, body={"messages": {}}, expect=401
    )
    assert body["errcode"] == "M_MISSING_TOKEN"
