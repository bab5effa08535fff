"""EDUs across real servers: the whole outbound path (queue, discovery, TLS, X-Matrix
signature) and the inbound one (key fetch, signature check, transaction, EDU handler)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from federation.transport import FederationTransport, RemoteError
from tests.federation.homeservers import Homeserver, homeservers
from tests.helpers.rest import V3, User

DEADLINE_S = 10.0


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
async def test_to_device_message_reaches_another_server(tmp_path: Path, engine: str) -> None:
    async with homeservers(tmp_path, 2, engine) as (a, b):
        alice = await a.rest.register("alice")
        bob = await b.rest.register("bob")
        since = (await b.rest.sync(bob))["next_batch"]
        await a.rest.request(
            "PUT",
            f"{V3}/sendToDevice/m.test/t1",
            alice,
            body={"messages": {bob.user_id: {bob.device_id: {"hello": "there"}}}},
        )
        got: list[dict[str, object]] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE_S
        while not got and loop.time() < deadline:
            body = await b.rest.sync(bob, since=since, timeout="2000")
            got = body["to_device"]["events"]
            since = body["next_batch"]
        assert got == [{"sender": alice.user_id, "type": "m.test", "content": {"hello": "there"}}]
        # B fetched A's key over federation to check the request, and stored it.
        key = (a.server_name, a.core.server.keys.key_id)
        assert list(await b.core.storage.server_keys.get_verify_keys([key])) == [key]


async def sync_until(
    server: Homeserver, user: User, since: str, wanted: int
) -> tuple[list[dict[str, Any]], str]:
    """To-device events for `user` until `wanted` arrived or the deadline passed."""
    got: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while len(got) < wanted and loop.time() < deadline:
        body = await server.rest.sync(user, since=since, timeout="1000")
        got += body["to_device"]["events"]
        since = body["next_batch"]
    return got, since


async def send_to_device(server: Homeserver, sender: User, to: User, txn: str, n: int) -> None:
    await server.rest.request(
        "PUT",
        f"{V3}/sendToDevice/m.test/{txn}",
        sender,
        body={"messages": {to.user_id: {to.device_id: {"n": n}}}},
    )


async def test_a_server_that_was_down_gets_everything_in_order(tmp_path: Path) -> None:
    async with homeservers(tmp_path, 2) as (a, b):
        alice = await a.rest.register("alice")
        bob = await b.rest.register("bob")
        since = (await b.rest.sync(bob))["next_batch"]
        await b.stop()
        for n in range(3):
            await send_to_device(a, alice, bob, f"down{n}", n)
        # A gave up for now and backs off; then A restarts too, with its queue on disk.
        outbox = a.core.storage.federation_outbox
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE_S
        while await outbox.get_backoff(b.server_name) is None and loop.time() < deadline:
            await asyncio.sleep(0.05)
        assert await outbox.get_backoff(b.server_name) is not None
        await a.stop()
        await a.start()
        await b.start()
        # B talks to A, so A knows B is back and retries at once rather than after its
        # back-off.
        await send_to_device(b, bob, alice, "back", 99)
        got, _ = await sync_until(b, bob, since, 3)
        assert [e["content"] for e in got] == [{"n": 0}, {"n": 1}, {"n": 2}]
        # Acknowledged, so dropped from A's queue (just after B answered).
        outbox = a.core.storage.federation_outbox
        deadline = loop.time() + DEADLINE_S
        while await outbox.destinations_with_items() and loop.time() < deadline:
            await asyncio.sleep(0.05)
        assert await outbox.destinations_with_items() == []


async def test_transactions_are_authenticated_idempotent_and_bounded(tmp_path: Path) -> None:
    async with homeservers(tmp_path, 2) as (a, b):
        alice = await a.rest.register("alice")
        bob = await b.rest.register("bob")
        since = (await b.rest.sync(bob))["next_batch"]
        transport = FederationTransport(
            a.server_name, a.core.server.keys.signing_key, a.config.federation
        )
        try:
            edu = {
                "edu_type": "m.direct_to_device",
                "content": {
                    "sender": alice.user_id,
                    "type": "m.test",
                    "message_id": "m1",
                    "messages": {bob.user_id: {"*": {"once": True}}},
                },
            }
            body = {"origin": a.server_name, "origin_server_ts": 0, "pdus": [], "edus": [edu]}
            path = "/_matrix/federation/v1/send/txn1"
            for _ in range(2):  # the same transaction twice: processed once
                assert await transport.request(b.server_name, "PUT", path, content=body) == {
                    "pdus": {}
                }
            # Each answer came after the EDU was stored: one sync shows all there is.
            synced = await b.rest.sync(bob, since=since)
            assert [e["content"] for e in synced["to_device"]["events"]] == [{"once": True}]

            # Too many PDUs; another server's name as origin; another server's user.
            too_many = dict(body, pdus=[{}] * 51)
            failures = [
                (too_many, 400),
                (dict(body, origin="elsewhere.example"), 403),
            ]
            for bad, status in failures:
                with pytest.raises(RemoteError) as info:
                    await transport.request(b.server_name, "PUT", path + "x", content=bad)
                assert info.value.status == status
            forged = {**edu, "content": {**edu["content"], "sender": "@mallory:elsewhere"}}
            await transport.request(
                b.server_name, "PUT", path + "y", content=dict(body, edus=[forged])
            )
            later = await b.rest.sync(bob, since=synced["next_batch"])
            assert later["to_device"]["events"] == []
            # Unsigned: 401.
            with pytest.raises(RemoteError) as info:
                await transport.request(
                    b.server_name, "PUT", path + "z", content=body, signed=False
                )
            assert (info.value.status, info.value.errcode) == (401, "M_UNAUTHORIZED")
        finally:
            await transport.close()
