"""POST /user_directory/search (C-S API "User directory") over a real server on both
databases: who is found (shared rooms, public and world-readable rooms, optionally every local
account), matching, ranking, `limited`, and profile changes."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from homeserver.config import RegistrationConfig, UserDirectoryConfig
from homeserver.core import build_core
from homeserver.crypto.keys import ServerKeys
from homeserver.storage import Storage
from tests.client_api.conftest import UNLIMITED, ClientFactory, client_app
from tests.helpers.rest import V3, RestHelper, User
from tests.helpers.spec_schemas import assert_response_valid

API = ("client-server/users.yaml", "/user_directory/search", "post")


async def search(rest: RestHelper, user: User, term: str, **extra: Any) -> Any:
    answer = await rest.request(
        "POST", f"{V3}/user_directory/search", user, {"search_term": term, **extra}
    )
    assert_response_valid(*API, 200, answer)
    return answer


def ids(answer: Any) -> list[str]:
    return [r["user_id"] for r in answer["results"]]


async def set_displayname(rest: RestHelper, user: User, name: str) -> None:
    await rest.request(
        "PUT", f"{V3}/profile/{quote(user.user_id)}/displayname", user, {"displayname": name}
    )


async def test_shared_private_rooms_and_public_rooms_are_searched(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    carol = await rest.register("carol")
    dave = await rest.register("dave")
    await set_displayname(rest, bob, "Bobby Tables")
    private = await rest.create_room(alice)
    await rest.invite(alice, private, bob.user_id)
    await rest.join(bob, private)
    public = await rest.create_room(carol, preset="public_chat")
    readable = await rest.create_room(
        dave,
        initial_state=[
            {
                "type": "m.room.history_visibility",
                "content": {"history_visibility": "world_readable"},
            }
        ],
    )

    answer = await search(rest, alice, "tables")
    assert answer == {
        "results": [{"user_id": bob.user_id, "display_name": "Bobby Tables"}],
        "limited": False,
    }
    assert ids(await search(rest, alice, "CAROL")) == [carol.user_id]  # a public room's member
    assert ids(await search(rest, alice, "dave")) == [dave.user_id]  # a world-readable room's
    # bob shares no room with carol, and alice's room is private.
    assert ids(await search(rest, carol, "bob")) == []
    assert ids(await search(rest, carol, "alice")) == []
    # Leaving takes bob out of alice's results at once.
    await rest.leave(bob, private)
    assert ids(await search(rest, alice, "bob")) == []
    # A room that stops being public hides its members.
    await rest.set_state(carol, public, "m.room.join_rules", {"join_rule": "invite"})
    assert ids(await search(rest, alice, "carol")) == []
    await rest.set_state(
        dave, readable, "m.room.history_visibility", {"history_visibility": "shared"}
    )
    assert ids(await search(rest, alice, "dave")) == []


async def test_profile_changes_ranking_and_limit(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    room = await rest.create_room(alice, preset="public_chat")
    users = [await rest.register(name) for name in ("sam", "samantha", "isam", "xavier")]
    for user in users:
        await rest.join(user, room)
    await set_displayname(rest, users[3], "Sammy X")
    await rest.request(
        "PUT",
        f"{V3}/profile/{quote(users[3].user_id)}/avatar_url",
        users[3],
        {"avatar_url": "mxc://test.local/x"},
    )

    answer = await search(rest, alice, "sam")

    # Localpart or name starting with the term first, then named users, then by ID.
    assert answer["results"] == [
        {
            "user_id": users[3].user_id,
            "display_name": "Sammy X",
            "avatar_url": "mxc://test.local/x",
        },
        {"user_id": users[0].user_id},
        {"user_id": users[1].user_id},
        {"user_id": users[2].user_id},
    ]
    limited = await search(rest, alice, "sam", limit=2)
    assert ids(limited) == [users[3].user_id, users[0].user_id]
    assert limited["limited"] is True
    assert (await search(rest, alice, "sam", limit=4))["limited"] is False
    # Wildcards are literal characters, not patterns.
    assert ids(await search(rest, alice, "%")) == []
    assert ids(await search(rest, alice, "s_m")) == []
    assert ids(await search(rest, alice, "   ")) == []
    bad = await rest.request(
        "POST", f"{V3}/user_directory/search", alice, {"search_term": 1}, expect=400
    )
    assert bad["errcode"] == "M_INVALID_PARAM"


async def test_search_all_users_finds_accounts_in_no_room(
    aiohttp_client: ClientFactory, storage: Storage, server_keys: ServerKeys
) -> None:
    core = build_core(
        storage,
        "test.local",
        server_keys,
        registration=RegistrationConfig(enabled=True),
        limits=UNLIMITED,
        user_directory=UserDirectoryConfig(search_all_users=True),
    )
    rest = RestHelper(await aiohttp_client(client_app(core)))
    alice = await rest.register("alice")
    hermit = await rest.register("hermit")
    await set_displayname(rest, hermit, "The Hermit")

    answer = await search(rest, alice, "herm")

    assert answer["results"] == [{"user_id": hermit.user_id, "display_name": "The Hermit"}]
    assert ids(await search(rest, alice, "the h")) == [hermit.user_id]
