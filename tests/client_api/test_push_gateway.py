"""Push delivery end to end (C-S API "Push Notifications", Push Gateway API): a whole server
built from its config as `homeserver run` builds it, and a real push gateway over HTTPS in
the test. The gateway receives exactly what the push rules call for (highlights for
mentions, DM messages, nothing from a muted room but mentions, nothing for notices or the
user's own messages), in order and exactly once, also when it was failing and our server
restarted meanwhile; notifications read before they could be delivered are not pushed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web

from tests.federation.homeservers import homeservers
from tests.helpers.rest import V3, RestHelper, User
from tests.helpers.spec_schemas import assert_request_valid
from tests.helpers.tls import CertAuthority, https_server, make_ca

NOTIFY_PATH = "/_matrix/push/v1/notify"
PUSHKEY = "bobs-phone"


class PushGateway:
    """Implements POST /_matrix/push/v1/notify; answers 500 while `failing`."""

    def __init__(self) -> None:
        self.delivered: list[dict[str, Any]] = []
        self.attempts = 0
        self.failing = False
        self.arrived = asyncio.Event()
        self.app = web.Application()
        self.app.router.add_post(NOTIFY_PATH, self._notify)

    async def _notify(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        assert_request_valid("push-gateway/push_notifier.yaml", "/notify", "post", body)
        self.attempts += 1
        if self.failing:
            return web.json_response({"error": "down for maintenance"}, status=500)
        self.delivered.append(body["notification"])
        self.arrived.set()
        return web.json_response({"rejected": []})

    async def next(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """The next notification delivered after those already taken."""
        taken = getattr(self, "_taken", 0)
        async with asyncio.timeout(timeout_s):
            while len(self.delivered) <= taken:
                self.arrived.clear()
                await self.arrived.wait()
        self._taken = taken + 1
        return self.delivered[taken]


@asynccontextmanager
async def push_gateway(ca: CertAuthority) -> AsyncIterator[tuple[PushGateway, str]]:
    gateway = PushGateway()
    async with https_server(gateway.app, ca.server_context("127.0.0.1")) as port:
        yield gateway, f"https://127.0.0.1:{port}{NOTIFY_PATH}"


async def _set_pusher(rest: RestHelper, user: User, url: str) -> None:
    await rest.request(
        "POST",
        f"{V3}/pushers/set",
        user,
        {
            "kind": "http",
            "app_id": "org.example.chat",
            "pushkey": PUSHKEY,
            "app_display_name": "Chat",
            "device_display_name": "Bob's phone",
            "lang": "en",
            "data": {"url": url},
        },
    )


def _mention(user: User, text: str) -> dict[str, Any]:
    return {"msgtype": "m.text", "body": text, "m.mentions": {"user_ids": [user.user_id]}}


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
async def test_gateway_gets_what_the_rules_say_across_a_restart(
    tmp_path: Path, engine: str
) -> None:
    ca = make_ca(tmp_path)
    async with homeservers(tmp_path, 1, engine, ca) as [server], push_gateway(ca) as (gw, url):
        rest = server.rest
        alice, bob, carol = [await rest.register(n) for n in ("alice", "bob", "carol")]
        group = await rest.create_room(alice, preset="public_chat")
        muted = await rest.create_room(alice, preset="public_chat")
        for room_id in (group, muted):
            await rest.join(bob, room_id)
            await rest.join(carol, room_id)
        direct = await rest.create_room(alice, is_direct=True, invite=[bob.user_id])
        await rest.join(bob, direct)
        await rest.request(
            "PUT", f"{V3}/pushrules/global/room/{quote(muted)}", bob, {"actions": []}
        )
        await _set_pusher(rest, bob, url)

        async def pushed(room_id: str, content: str | dict[str, Any]) -> dict[str, Any]:
            event_id = await rest.send(alice, room_id, content)
            notification = await gw.next()
            assert notification["event_id"] == event_id
            assert notification["room_id"] == room_id
            assert notification["sender"] == alice.user_id
            assert notification["devices"][0]["pushkey"] == PUSHKEY
            return notification

        plain = await pushed(group, "hello all")
        assert plain["devices"][0]["tweaks"] == {}
        assert plain["prio"] == "low"
        assert plain["counts"] == {"unread": 1}
        mention = await pushed(group, _mention(bob, "bob, look"))
        assert mention["devices"][0]["tweaks"] == {"sound": "default", "highlight": True}
        assert mention["prio"] == "high"
        # Nothing for a notice, a muted room's message or bob's own message: the next
        # notification the gateway sees is the DM after them.
        await rest.send(alice, group, {"msgtype": "m.notice", "body": "bot says hi"})
        await rest.send(alice, muted, "chatter nobody asked for")
        await rest.send(bob, group, "my own words")
        dm = await pushed(direct, "psst")
        assert dm["devices"][0]["tweaks"] == {"sound": "default"}
        # A mention still highlights in the muted room: its override comes first.
        loud = await pushed(muted, _mention(bob, "bob, in here"))
        assert loud["devices"][0]["tweaks"]["highlight"] is True

        # The gateway fails; two messages wait, a third is read before it can go out.
        gw.failing = True
        attempts = gw.attempts
        waiting = [await rest.send(alice, group, f"while down {n}") for n in range(2)]
        read_in_time = await rest.send(alice, direct, "read on the laptop")
        receipt = f"{V3}/rooms/{quote(direct)}/receipt/m.read/{quote(read_in_time)}"
        await rest.request("POST", receipt, bob, {})
        for _ in range(100):
            if gw.attempts > attempts:
                break
            await asyncio.sleep(0.05)
        assert gw.attempts > attempts  # it was tried and refused
        await server.stop()
        gw.failing = False
        await server.start()

        for event_id in waiting:
            assert (await gw.next())["event_id"] == event_id
        after = await pushed(group, "back again")
        assert after["counts"]["unread"] >= 1
        await asyncio.sleep(0.5)  # room for a duplicate to show up
        delivered = [n["event_id"] for n in gw.delivered]
        assert len(delivered) == len(set(delivered)) == 7
        assert read_in_time not in delivered


async def test_pushers_go_with_their_device(tmp_path: Path) -> None:
    """Logging out the device that set a pusher removes the pusher."""
    ca = make_ca(tmp_path)
    async with homeservers(tmp_path, 1, "sqlite", ca) as [server], push_gateway(ca) as (gw, url):
        rest = server.rest
        alice, bob = await rest.register("alice"), await rest.register("bob")
        room_id = await rest.create_room(alice, is_direct=True, invite=[bob.user_id])
        await rest.join(bob, room_id)
        await _set_pusher(rest, bob, url)
        assert len((await rest.request("GET", f"{V3}/pushers", bob))["pushers"]) == 1
        other_session = await rest.login("bob")
        await rest.request("POST", f"{V3}/logout", bob, {})
        assert (await rest.request("GET", f"{V3}/pushers", other_session))["pushers"] == []
        await rest.send(alice, room_id, "anyone there?")
        await asyncio.sleep(0.5)
        assert gw.delivered == []
