"""A conflict made while servers cannot reach each other resolves to the same state
everywhere (S-S API "Room State Resolution"): three servers share a room; A and B each
change the room's name while cut off from the other (each one down while the other acts),
C sees both forks, and once they all talk again every server holds the same current state.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.federation.homeservers import Homeserver, homeservers
from tests.federation.test_federation_rooms import join_via, wait_for_members, wait_for_message
from tests.helpers.rest import V3, User

DEADLINE_S = 30.0


async def current_state(server: Homeserver, room_id: str) -> dict[tuple[str, str], str]:
    return dict(await server.core.storage.rooms.get_current_state_ids(room_id))


async def set_name(server: Homeserver, user: User, room_id: str, name: str) -> None:
    await server.rest.request(
        "PUT", f"{V3}/rooms/{room_id}/state/m.room.name", user, body={"name": name}
    )


async def test_partitioned_conflict_resolves_the_same_on_all_three(tmp_path: Path) -> None:
    async with homeservers(tmp_path, 3) as (a, b, c):
        alice = await a.rest.register("alice")
        bob = await b.rest.register("bob")
        carol = await c.rest.register("carol")
        room_id = await a.rest.create_room(alice, preset="public_chat", name="Before")
        await join_via(b, bob, room_id, a)
        await join_via(c, carol, room_id, a)
        everyone = {alice.user_id, bob.user_id, carol.user_id}
        for server, user in ((a, alice), (b, bob), (c, carol)):
            await wait_for_members(server, user, room_id, everyone)
        # Alice makes Bob a moderator, so his change is one the auth rules allow.
        levels = await a.rest.request(
            "GET", f"{V3}/rooms/{room_id}/state/m.room.power_levels", alice
        )
        levels["users"][bob.user_id] = 50
        levels.setdefault("events", {})["m.room.name"] = 50
        await a.rest.request(
            "PUT", f"{V3}/rooms/{room_id}/state/m.room.power_levels", alice, body=levels
        )
        await a.rest.send(alice, room_id, "levels set")
        for server, user in ((b, bob), (c, carol)):
            await wait_for_message(server, user, room_id, "levels set")

        # The partition: B is down while A renames the room; then A is down while B, which
        # never saw A's change, renames it too. C hears both.
        await b.stop()
        await set_name(a, alice, room_id, "A's name")
        await a.rest.send(alice, room_id, "renamed on A")
        await wait_for_message(c, carol, room_id, "renamed on A")
        a_name = (await current_state(a, room_id))[("m.room.name", "")]
        await a.stop()
        await b.start()
        await set_name(b, bob, room_id, "B's name")
        await b.rest.send(bob, room_id, "renamed on B")
        await wait_for_message(c, carol, room_id, "renamed on B")
        # A real fork: B built its rename without A's, and C holds both.
        b_name = (await current_state(b, room_id))[("m.room.name", "")]
        assert b_name != a_name
        assert a_name not in await b.core.storage.events.have_events([a_name])
        assert await c.core.storage.events.have_events([a_name, b_name]) == {a_name, b_name}

        # The partition heals: A comes back; everyone talks; everyone converges. A and B
        # each still back off from the other (each failed while the other was down), and
        # neither contacts the other first: the first retry comes within 12 s.
        await a.start()
        await a.rest.send(alice, room_id, "A is back")
        await b.rest.send(bob, room_id, "B is back")
        for server, user in ((a, alice), (b, bob), (c, carol)):
            await wait_for_message(server, user, room_id, "A is back", DEADLINE_S)
            await wait_for_message(server, user, room_id, "B is back", DEADLINE_S)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE_S
        states = []
        while loop.time() < deadline:
            states = [await current_state(s, room_id) for s in (a, b, c)]
            if states[0] == states[1] == states[2]:
                break
            await asyncio.sleep(0.1)
        assert states[0] == states[1] == states[2]
        names = set()
        for server, user in ((a, alice), (b, bob), (c, carol)):
            name = await server.rest.request("GET", f"{V3}/rooms/{room_id}/state/m.room.name", user)
            names.add(name["name"])
        assert len(names) == 1 and names <= {"A's name", "B's name"}
