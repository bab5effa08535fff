"""Reporting content (events, rooms, users; `homeserver reports list`) and the server's limits
on local users (joined members per room, mentions and links per message), over a real server
on both databases."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from homeserver.cli import main
from homeserver.config import (
    ConfigError,
    LimitsConfig,
    RegistrationConfig,
    SpamLimitsConfig,
    parse_config,
)
from homeserver.core import Core, build_core
from homeserver.crypto.keys import ServerKeys
from homeserver.storage import Storage, open_storage
from homeserver.storage.stores.reports import ContentReport
from tests.client_api.conftest import UNLIMITED, ClientFactory, client_app
from tests.helpers.rest import V3, RestHelper, User
from tests.helpers.spec_schemas import assert_response_valid

SPEC = "client-server/report_content.yaml"


async def report_event(
    rest: RestHelper, user: User, room_id: str, event_id: str, body: Any, expect: int
) -> Any:
    path = f"{V3}/rooms/{quote(room_id)}/report/{quote(event_id)}"
    answer = await rest.request("POST", path, user, body, expect=expect)
    if expect != 400:  # the spec lists no 400, though a malformed body gets one
        assert_response_valid(SPEC, "/rooms/{roomId}/report/{eventId}", "post", expect, answer)
    return answer


async def test_a_member_reports_an_event(rest: RestHelper, client_core: Core) -> None:
    alice = await rest.register("alice")
    bob = await rest.register("bob")
    room = await rest.create_room(alice, preset="public_chat")
    await rest.join(bob, room)
    event_id = await rest.send(alice, room, "rude words")

    answer = await report_event(rest, bob, room, event_id, {"reason": "rude", "score": -100}, 200)

    assert answer == {}
    [report] = await client_core.storage.reports.get_reports(10)
    assert (report.kind, report.reporter, report.room_id, report.event_id) == (
        "event",
        bob.user_id,
        room,
        event_id,
    )
    assert (report.reason, report.score, report.user_id) == ("rude", -100, None)
    # No reason at all is allowed for events.
    await report_event(rest, bob, room, event_id, {}, 200)
    assert len(await client_core.storage.reports.get_reports(10)) == 2


async def test_event_reports_need_a_joined_reporter_who_can_see_the_event(
    rest: RestHelper, client_core: Core
) -> None:
    alice = await rest.register("alice")
    carol = await rest.register("carol")
    room = await rest.create_room(alice, preset="public_chat")
    other = await rest.create_room(alice, preset="public_chat")
    event_id = await rest.send(alice, room, "hello")

    # Not joined (yet), even though the room is public: the same 404 as no such event.
    not_joined = await report_event(rest, carol, room, event_id, {"reason": "x"}, 404)
    assert not_joined["errcode"] == "M_NOT_FOUND"
    await rest.join(carol, room)
    for room_id, event in ((room, "$unknown"), (other, event_id)):
        answer = await report_event(rest, alice, room_id, event, {"reason": "x"}, 404)
        assert answer["errcode"] == "M_NOT_FOUND"
    # History before carol joined is hidden from her in a "joined" room.
    private = await rest.create_room(
        alice,
        preset="public_chat",
        initial_state=[
            {"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}}
        ],
    )
    earlier = await rest.send(alice, private, "before carol")
    await rest.join(carol, private)
    await report_event(rest, carol, private, earlier, {"reason": "x"}, 404)
    bad = await report_event(rest, carol, room, event_id, {"reason": 1}, 400)
    assert bad["errcode"] == "M_INVALID_PARAM"
    assert await client_core.storage.reports.get_reports(10) == []


async def test_rooms_and_users_are_reported_without_being_joined(
    rest: RestHelper, client_core: Core
) -> None:
    alice = await rest.register("alice")
    carol = await rest.register("carol")
    room = await rest.create_room(alice)

    room_path = f"{V3}/rooms/{quote(room)}/report"
    answer = await rest.request("POST", room_path, carol, {"reason": "spam room"})
    assert_response_valid(SPEC, "/rooms/{roomId}/report", "post", 200, answer)
    unknown = await rest.request(
        "POST", f"{V3}/rooms/{quote('!nope:test.local')}/report", carol, {"reason": ""}, 404
    )
    assert_response_valid(SPEC, "/rooms/{roomId}/report", "post", 404, unknown)
    missing = await rest.request("POST", room_path, carol, {}, 400)
    assert missing["errcode"] == "M_MISSING_PARAM"

    user_path = f"{V3}/users/{quote(alice.user_id)}/report"
    answer = await rest.request("POST", user_path, carol, {"reason": "harasses me"})
    assert_response_valid(SPEC, "/users/{userId}/report", "post", 200, answer)
    unknown = await rest.request(
        "POST", f"{V3}/users/{quote('@nobody:test.local')}/report", carol, {"reason": ""}, 404
    )
    assert_response_valid(SPEC, "/users/{userId}/report", "post", 404, unknown)

    reports = await client_core.storage.reports.get_reports(10)
    assert sorted((r.kind, r.room_id, r.user_id, r.reason) for r in reports) == [
        ("room", room, None, "spam room"),
        ("user", None, alice.user_id, "harasses me"),
    ]
    assert {r.reporter for r in reports} == {carol.user_id}


def test_reports_list_prints_the_newest_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path = tmp_path / "homeserver.yaml"
    args = ["generate-config", "--server-name", "test.local", "--config", str(config_path)]
    assert main(args) == 0
    config = parse_config(config_path.read_text(), tmp_path)

    async def add_reports() -> None:
        storage = await open_storage(config.database)
        try:
            for n in range(3):
                await storage.reports.add_report(
                    ContentReport(
                        f"r{n}",
                        "room",
                        "@a:test.local",
                        "!r:test.local",
                        None,
                        None,
                        f"reason {n}",
                        None,
                        1000 + n,
                    )
                )
        finally:
            await storage.close()

    asyncio.run(add_reports())
    capsys.readouterr()
    assert main(["reports", "list", "--config", str(config_path), "--limit", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["reason"] for line in lines] == ["reason 2", "reason 1"]
    assert json.loads(lines[0])["received_ts"] == 1002


async def limited_rest(
    aiohttp_client: ClientFactory, storage: Storage, server_keys: ServerKeys, limits: LimitsConfig
) -> RestHelper:
    core = build_core(
        storage,
        "test.local",
        server_keys,
        registration=RegistrationConfig(enabled=True),
        limits=limits,
    )
    return RestHelper(await aiohttp_client(client_app(core)))


async def test_joins_beyond_the_member_limit_are_refused(
    aiohttp_client: ClientFactory, storage: Storage, server_keys: ServerKeys
) -> None:
    limits = LimitsConfig(**{**vars(UNLIMITED), "max_joined_members_per_room": 2})
    rest = await limited_rest(aiohttp_client, storage, server_keys, limits)
    alice, bob, carol = [await rest.register(name) for name in ("alice", "bob", "carol")]
    room = await rest.create_room(alice, preset="public_chat")
    await rest.join(bob, room)

    refused = await rest.join(carol, room, expect=403)

    assert refused["errcode"] == "M_FORBIDDEN"
    assert "at most 2 joined members" in refused["error"]
    await rest.join(bob, room)  # already a member: not a new join
    await rest.leave(bob, room)
    await rest.join(carol, room)


async def test_spam_limits_refuse_messages_with_too_many_mentions_or_links(
    aiohttp_client: ClientFactory, storage: Storage, server_keys: ServerKeys
) -> None:
    spam = SpamLimitsConfig(enabled=True, max_mentions=3, max_links=2)
    limits = LimitsConfig(**{**vars(UNLIMITED), "spam": spam})
    rest = await limited_rest(aiohttp_client, storage, server_keys, limits)
    alice = await rest.register("alice")
    room = await rest.create_room(alice)

    def mentioning(n: int, listed: int = 0) -> dict[str, Any]:
        body = " ".join(f"@user{i}:example.org" for i in range(n))
        ids = [f"@listed{i}:test.local" for i in range(listed)]
        return {"msgtype": "m.text", "body": body, "m.mentions": {"user_ids": ids}}

    await rest.send(alice, room, mentioning(3))
    await rest.send(alice, room, mentioning(2, listed=1))
    for content in (mentioning(4), mentioning(2, listed=2)):
        refused = await rest.request(
            "PUT",
            f"{V3}/rooms/{quote(room)}/send/m.room.message/t{len(str(content))}",
            alice,
            content,
            expect=400,
        )
        assert refused["errcode"] == "M_INVALID_PARAM"
        assert "at most 3" in refused["error"]
    await rest.send(alice, room, "see https://a.example and http://b.example")
    too_many = await rest.send(
        alice, room, "https://a.example https://b.example HTTPS://c.example", expect=400
    )
    assert too_many == "M_INVALID_PARAM"


async def test_without_spam_limits_any_number_of_links_is_sent(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    room = await rest.create_room(alice)
    await rest.send(alice, room, " ".join(f"https://{i}.example" for i in range(20)))


def test_limits_config_is_read_and_checked(tmp_path: Path) -> None:
    config = parse_config(
        "server_name: test.local\n"
        "limits:\n  max_joined_members_per_room: 500\n  spam:\n    enabled: true\n"
        "user_directory:\n  search_all_users: true\n",
        tmp_path,
    )
    assert config.limits.max_joined_members_per_room == 500
    assert config.limits.spam == SpamLimitsConfig(enabled=True, max_mentions=10, max_links=5)
    assert config.user_directory.search_all_users
    assert parse_config("server_name: test.local\n", tmp_path).limits.spam.enabled is False
    with pytest.raises(ConfigError) as raised:
        parse_config(
            "server_name: test.local\n"
            "limits:\n  max_joined_members_per_room: 0\n  spam:\n    max_links: -1\n",
            tmp_path,
        )
    assert len(raised.value.problems) == 2
