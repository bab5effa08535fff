"""Events that must never reach clients (S-S API "Checks performed on receipt of a PDU"): a
forged signature is dropped, a wrong content hash is kept only redacted, and an event the
auth rules refuse is rejected. Sent by one real server to another over TLS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from signedjson.key import generate_signing_key

from federation.transport import FederationTransport
from homeserver.crypto.signing import hash_and_sign_event
from homeserver.events.builder import EventBuilder
from homeserver.events.event import CREATE, MEMBER, Event
from tests.federation.homeservers import Homeserver, homeservers
from tests.federation.test_federation_rooms import join_via, wait_for_members
from tests.helpers.rest import V3


async def build_on(
    server: Homeserver,
    room_id: str,
    sender: str,
    event_type: str,
    content: dict[str, Any],
    state_key: str | None = None,
) -> dict[str, Any]:
    """A PDU on the room's tips as `server` sees them, unsigned (hashes and signatures are
    added by the caller, rightly or wrongly)."""
    storage = server.core.storage
    room_version = await storage.rooms.get_room_version(room_id)
    assert room_version is not None
    state = await storage.rooms.get_current_state_ids(room_id)
    tips = await storage.events.get_forward_extremities(room_id)
    depth = max(e.depth for e in (await storage.events.get_events(tips)).values()) + 1
    auth = [state[k] for k in (("m.room.power_levels", ""), (MEMBER, sender)) if k in state]
    if not room_version.room_id_from_create_event:
        auth.append(state[(CREATE, "")])
    builder = EventBuilder(
        room_version, event_type, sender, content, room_id=room_id, state_key=state_key
    )
    event = builder.build(
        prev_events=tips,
        auth_events=auth,
        depth=depth,
        origin_server_ts=server.core.clock.time_ms(),
        server_name=server.server_name,
        signing_key=server.core.server.keys.signing_key,
    )
    pdu = {k: v for k, v in event.pdu.items() if k not in ("hashes", "signatures")}
    return pdu


async def test_forged_tampered_and_unauthorised_events_never_reach_clients(
    tmp_path: Path,
) -> None:
    async with homeservers(tmp_path, 2) as (a, b):
        alice = await a.rest.register("alice")
        bob = await b.rest.register("bob")
        room_id = await b.rest.create_room(bob, preset="public_chat")
        await join_via(a, alice, room_id, b)
        await wait_for_members(b, bob, room_id, {alice.user_id, bob.user_id})
        room_version = await a.core.storage.rooms.get_room_version(room_id)
        assert room_version is not None
        key = a.core.server.keys.signing_key

        forged = await build_on(
            a, room_id, alice.user_id, "m.room.message", {"msgtype": "m.text", "body": "forged"}
        )
        hash_and_sign_event(room_version, forged, a.server_name, generate_signing_key(key.version))

        tampered = await build_on(
            a, room_id, alice.user_id, "m.room.message", {"msgtype": "m.text", "body": "original"}
        )
        hash_and_sign_event(room_version, tampered, a.server_name, key)
        tampered["content"]["body"] = "tampered"  # after hashing: the hash no longer matches

        # Alice is an ordinary member: she may not change the power levels.
        levels = await b.rest.request("GET", f"{V3}/rooms/{room_id}/state/m.room.power_levels", bob)
        grab = await build_on(
            a,
            room_id,
            alice.user_id,
            "m.room.power_levels",
            {**levels, "users": {alice.user_id: 100}},
            state_key="",
        )
        hash_and_sign_event(room_version, grab, a.server_name, key)

        ids = {
            name: Event(pdu, room_version).event_id
            for name, pdu in (("forged", forged), ("tampered", tampered), ("grab", grab))
        }
        transport = FederationTransport(a.server_name, key, a.config.federation)
        try:
            answer = await transport.request(
                b.server_name,
                "PUT",
                "/_matrix/federation/v1/send/bad1",
                content={
                    "origin": a.server_name,
                    "origin_server_ts": 0,
                    "pdus": [forged, tampered, grab],
                },
            )
        finally:
            await transport.close()
        results = answer["pdus"]
        assert "Signature" in results[ids["forged"]]["error"]
        assert "error" in results[ids["grab"]]
        assert results[ids["tampered"]] == {}

        page = await b.rest.request(
            "GET", f"{V3}/rooms/{room_id}/messages", bob, dir="b", limit="50"
        )
        shown = {e["event_id"]: e for e in page["chunk"]}
        assert ids["forged"] not in shown and ids["grab"] not in shown
        # The tampered event is kept in its redacted form only: no body, neither one.
        assert shown[ids["tampered"]]["content"] == {}
        assert "tampered" not in str(page) and "forged" not in str(page)
        after = await b.rest.request("GET", f"{V3}/rooms/{room_id}/state/m.room.power_levels", bob)
        assert after == levels
        stored = await b.core.storage.events.have_events(ids.values())
        assert ids["forged"] not in stored


async def test_server_acl_refuses_a_denied_servers_events_and_edus(tmp_path: Path) -> None:
    async with homeservers(tmp_path, 2) as (a, b):
        alice = await a.rest.register("alice")
        bob = await b.rest.register("bob")
        room_id = await a.rest.create_room(alice, preset="public_chat")
        await join_via(b, bob, room_id, a)
        await wait_for_members(a, alice, room_id, {alice.user_id, bob.user_id})
        # Every server here is 127.0.0.1 (ACLs ignore ports): deny that host.
        await a.rest.request(
            "PUT",
            f"{V3}/rooms/{room_id}/state/m.room.server_acl",
            alice,
            body={"allow": ["*"], "deny": ["127.0.0.1"], "allow_ip_literals": True},
        )
        room_version = await b.core.storage.rooms.get_room_version(room_id)
        assert room_version is not None
        key = b.core.server.keys.signing_key
        message = await build_on(
            b, room_id, bob.user_id, "m.room.message", {"msgtype": "m.text", "body": "let me in"}
        )
        hash_and_sign_event(room_version, message, b.server_name, key)
        event_id = Event(message, room_version).event_id
        typing = {
            "edu_type": "m.typing",
            "content": {"room_id": room_id, "user_id": bob.user_id, "typing": True},
        }
        transport = FederationTransport(b.server_name, key, b.config.federation)
        try:
            answer = await transport.request(
                a.server_name,
                "PUT",
                "/_matrix/federation/v1/send/acl1",
                content={
                    "origin": b.server_name,
                    "origin_server_ts": 0,
                    "pdus": [message],
                    "edus": [typing],
                },
            )
        finally:
            await transport.close()
        assert "ACL" in answer["pdus"][event_id]["error"]
        assert event_id not in await a.core.storage.events.have_events([event_id])
        assert a.core.typing.typing_users(room_id) == []
