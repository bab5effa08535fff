"""Push rules (C-S API "Push Rules", "Push Rules: API"): the evaluator's conditions, the
server-default rule set, and editing a user's rules through /pushrules."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from homeserver.auth_rules.power_levels import PowerLevels
from homeserver.events.event import Event
from homeserver.events.room_versions import KNOWN_ROOM_VERSIONS
from homeserver.push.evaluator import CompiledRuleset, RoomFacts, split_key
from tests.helpers.rest import V3, RestHelper, User
from tests.helpers.spec_schemas import assert_response_valid

API = "client-server/pushrules.yaml"
RULE = "/pushrules/global/{kind}/{ruleId}"
ROOM = "!room:test.local"
DEFAULT_OVERRIDE_IDS = [
    ".m.rule.master",
    ".m.rule.suppress_notices",
    ".m.rule.invite_for_me",
    ".m.rule.member_event",
    ".m.rule.is_user_mention",
    ".m.rule.is_room_mention",
    ".m.rule.tombstone",
    ".m.rule.reaction",
    ".m.rule.room.server_acl",
    ".m.rule.suppress_edits",
]
DEFAULT_UNDERRIDE_IDS = [
    ".m.rule.call",
    ".m.rule.encrypted_room_one_to_one",
    ".m.rule.room_one_to_one",
    ".m.rule.message",
    ".m.rule.encrypted",
]

# --- the evaluator ---------------------------------------------------------------------------


def _facts(member_count: int = 3, levels: dict[str, Any] | None = None) -> RoomFacts:
    room_version = KNOWN_ROOM_VERSIONS["10"]
    create = Event(
        {"type": "m.room.create", "state_key": "", "sender": "@creator:x", "content": {}},
        room_version,
        "$create",
    )
    power = Event(
        {"type": "m.room.power_levels", "state_key": "", "sender": "@creator:x", "content": levels},
        room_version,
        "$pl",
    )
    return RoomFacts(
        member_count,
        PowerLevels(create, power if levels is not None else None),
        {"@me:x": "Alice Smith"},
    )


def _matches(
    condition: dict[str, Any], event: dict[str, Any], facts: RoomFacts | None = None
) -> bool:
    ruleset = CompiledRuleset(
        "@me:x",
        {"override": [{"rule_id": "r", "conditions": [condition], "actions": ["notify"]}]},
    )
    return ruleset.evaluate(event, facts or _facts()) is not None


@pytest.mark.parametrize(
    ("key", "pattern", "value", "expected"),
    [
        ("content.topic", "lunc?*", "Lunch plans", True),
        ("content.topic", "lunc?*", "LUNCH", True),
        ("content.topic", "lunc?*", " lunch", False),
        ("content.topic", "lunc?*", "lunc", False),
        ("content.topic", "*", None, False),
        ("content.body", "ex*ple", "An example event.", True),
        ("content.body", "ex*ple", "exple", True),
        ("content.body", "ex*ple", "An exciting triple-whammy", True),
        ("content.body", "ample", "An example event.", False),
        ("content.body", "cake", "I like_cake", False),
        ("content.body", "cake", "cake!", True),
    ],
)
def test_event_match(key: str, pattern: str, value: Any, expected: bool) -> None:
    content = {} if value is None else {key.split(".")[1]: value}
    condition = {"kind": "event_match", "key": key, "pattern": pattern}
    assert _matches(condition, {"type": "m.room.topic", "content": content}) is expected


def test_property_conditions() -> None:
    event = {"content": {"m.federate": True, "n": 1, "alt_aliases": ["#a:x", 1, {"x": 1}]}}
    assert split_key("content.m\\.federate") == ["content", "m.federate"]
    is_true = {"kind": "event_property_is", "key": "content.m\\.federate", "value": True}
    assert _matches(is_true, event)
    # Exact: no casts between booleans, integers and strings.
    assert not _matches({**is_true, "value": 1}, event)
    assert not _matches({**is_true, "value": "true"}, event)
    assert not _matches({"kind": "event_property_is", "key": "content.n", "value": True}, event)
    assert _matches({"kind": "event_property_is", "key": "content.n", "value": 1}, event)
    contains = {"kind": "event_property_contains", "key": "content.alt_aliases"}
    assert _matches({**contains, "value": "#a:x"}, event)
    assert not _matches({**contains, "value": ":x"}, event)
    assert not _matches({**contains, "value": True}, event)
    assert not _matches({"kind": "event_property_contains", "key": "content.n", "value": 1}, event)
    # "Unrecognised conditions MUST NOT match any events".
    assert not _matches({"kind": "org.example.unknown"}, event)


def test_room_conditions() -> None:
    event = {"sender": "@mod:x", "content": {"body": "hey alice smith!"}}
    for spec, count, expected in (
        ("2", 2, True),
        ("==2", 3, False),
        ("<3", 2, True),
        (">=3", 3, True),
        (">3", 3, False),
        ("lots", 3, False),
    ):
        condition = {"kind": "room_member_count", "is": spec}
        assert _matches(condition, event, _facts(count)) is expected, spec
    permission = {"kind": "sender_notification_permission", "key": "room"}
    assert not _matches(permission, event, _facts(levels={"users": {"@mod:x": 49}}))
    assert _matches(permission, event, _facts(levels={"users": {"@mod:x": 50}}))
    lowered = {"users": {"@mod:x": 10}, "notifications": {"room": 10}}
    assert _matches(permission, event, _facts(levels=lowered))
    display_name = {"kind": "contains_display_name"}
    assert _matches(display_name, event)
    assert not _matches(display_name, {"content": {"body": "alice smithers"}})


def test_rule_order_and_actions() -> None:
    ruleset = CompiledRuleset(
        "@me:x",
        {
            "override": [{"rule_id": "off", "enabled": False, "conditions": [], "actions": []}],
            "content": [{"rule_id": "c", "pattern": "tea", "actions": ["notify"]}],
            "room": [{"rule_id": ROOM, "actions": ["dont_notify"]}],
            "underride": [
                {
                    "rule_id": "u",
                    "conditions": [],
                    "actions": ["notify", {"set_tweak": "highlight"}],
                }
            ],
        },
    )
    facts = _facts()
    tea = ruleset.evaluate({"room_id": ROOM, "content": {"body": "time for tea"}}, facts)
    assert tea is not None and tea.notify and not tea.highlight
    # The room rule comes before the underride; dont_notify is a historical no-op action.
    muted = ruleset.evaluate({"room_id": ROOM, "content": {}}, facts)
    assert muted is not None and muted.actions == [] and not muted.notify
    other = ruleset.evaluate({"room_id": "!other:x", "content": {}}, facts)
    assert other is not None and other.notify and other.highlight


# --- the API ---------------------------------------------------------------------------------


def _ids(ruleset: dict[str, Any], kind: str) -> list[str]:
    return [r["rule_id"] for r in ruleset[kind]]


async def _ruleset(rest: RestHelper, user: User) -> dict[str, Any]:
    body = await rest.request("GET", f"{V3}/pushrules/", user)
    assert_response_valid(API, "/pushrules/", "get", 200, body)
    ruleset: dict[str, Any] = body["global"]
    return ruleset


async def test_default_rules(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    ruleset = await _ruleset(rest, alice)
    assert _ids(ruleset, "override") == DEFAULT_OVERRIDE_IDS
    assert _ids(ruleset, "underride") == DEFAULT_UNDERRIDE_IDS
    assert ruleset["content"] == ruleset["room"] == ruleset["sender"] == []
    master = ruleset["override"][0]
    assert master == {
        "rule_id": ".m.rule.master",
        "default": True,
        "enabled": False,
        "conditions": [],
        "actions": [],
    }
    mention = next(r for r in ruleset["override"] if r["rule_id"] == ".m.rule.is_user_mention")
    assert mention["conditions"][0]["value"] == alice.user_id
    invite = next(r for r in ruleset["override"] if r["rule_id"] == ".m.rule.invite_for_me")
    assert invite["conditions"][2]["pattern"] == alice.user_id
    scoped = await rest.request("GET", f"{V3}/pushrules/global/", alice)
    assert_response_valid(API, "/pushrules/global/", "get", 200, scoped)
    assert scoped == ruleset
    one = await rest.request("GET", f"{V3}/pushrules/global/override/.m.rule.master", alice)
    assert_response_valid(API, RULE, "get", 200, one)
    assert one == master
    missing = await rest.request("GET", f"{V3}/pushrules/global/override/nope", alice, expect=404)
    assert_response_valid(API, RULE, "get", 404, missing)
    assert missing["errcode"] == "M_NOT_FOUND"
    await rest.request("GET", f"{V3}/pushrules/", expect=401)


async def test_rule_crud_and_ordering(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    base = f"{V3}/pushrules/global/override"
    condition = {"kind": "event_match", "key": "content.body", "pattern": "x"}

    async def put(rule_id: str, expect: int = 200, **params: str) -> Any:
        body = {"actions": ["notify"], "conditions": [condition]}
        done = await rest.request("PUT", f"{base}/{rule_id}", alice, body, expect, **params)
        assert_response_valid(API, RULE, "put", expect, done)
        return done

    await put("a")
    await put("b")  # new rules go first
    await put("c", before="a")
    await put("d", after="a")
    await put("e", after="b")
    user_rules = _ids(await _ruleset(rest, alice), "override")[1:6]
    assert user_rules == ["b", "e", "c", "a", "d"]
    # An update keeps its place; with an anchor it moves.
    await put("c")
    await put("b", after="d")
    ruleset = await _ruleset(rest, alice)
    assert _ids(ruleset, "override")[0] == ".m.rule.master"
    assert _ids(ruleset, "override")[1:6] == ["e", "c", "a", "d", "b"]
    assert _ids(ruleset, "override")[6:] == DEFAULT_OVERRIDE_IDS[1:]
    created = ruleset["override"][1]
    assert created == {
        "rule_id": "e",
        "default": False,
        "enabled": True,
        "conditions": [condition],
        "actions": ["notify"],
    }

    unknown_anchor = await put("f", 400, before="nope")
    assert unknown_anchor["errcode"] == "M_UNKNOWN"
    await put("f", 400, before=".m.rule.master")
    reserved = await put(".m.rule.mine", 400)
    assert reserved["errcode"] == "M_INVALID_PARAM"
    await rest.request("PUT", f"{base}/g", alice, {"conditions": []}, 400)
    await rest.request("PUT", f"{V3}/pushrules/global/nokind/g", alice, {"actions": []}, 400)
    content = f"{V3}/pushrules/global/content/cake"
    await rest.request("PUT", content, alice, {"actions": ["notify"]}, 400)
    await rest.request("PUT", content, alice, {"actions": ["notify"], "pattern": "cake*lie"})
    got = await rest.request("GET", content, alice)
    assert got["pattern"] == "cake*lie" and got["default"] is False

    deleted = await rest.request("DELETE", f"{base}/a", alice)
    assert_response_valid(API, RULE, "delete", 200, deleted)
    again = await rest.request("DELETE", f"{base}/a", alice, expect=404)
    assert_response_valid(API, RULE, "delete", 404, again)
    assert "a" not in _ids(await _ruleset(rest, alice), "override")


async def test_enabled_and_actions(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    sender_rule = f"{V3}/pushrules/global/sender/{quote('@bob:test.local')}"
    await rest.request("PUT", sender_rule, alice, {"actions": []})
    for path in (sender_rule, f"{V3}/pushrules/global/override/.m.rule.master"):
        enabled = await rest.request("GET", f"{path}/enabled", alice)
        assert_response_valid(API, f"{RULE}/enabled", "get", 200, enabled)
        was = enabled["enabled"]
        done = await rest.request("PUT", f"{path}/enabled", alice, {"enabled": not was})
        assert_response_valid(API, f"{RULE}/enabled", "put", 200, done)
        assert (await rest.request("GET", f"{path}/enabled", alice))["enabled"] is not was
        actions = ["notify", {"set_tweak": "sound", "value": "bell"}]
        done = await rest.request("PUT", f"{path}/actions", alice, {"actions": actions})
        assert_response_valid(API, f"{RULE}/actions", "put", 200, done)
        got = await rest.request("GET", f"{path}/actions", alice)
        assert_response_valid(API, f"{RULE}/actions", "get", 200, got)
        assert got == {"actions": actions}
        # Changing actions leaves enabled alone.
        assert (await rest.request("GET", f"{path}/enabled", alice))["enabled"] is not was
    master = (await _ruleset(rest, alice))["override"][0]
    assert master["enabled"] is True and master["default"] is True
    bad = await rest.request("PUT", f"{sender_rule}/enabled", alice, {"enabled": "yes"}, 400)
    assert bad["errcode"] == "M_INVALID_PARAM"
    missing = f"{V3}/pushrules/global/room/{quote('!nope:test.local')}/enabled"
    gone = await rest.request("PUT", missing, alice, {"enabled": True}, 404)
    assert_response_valid(API, f"{RULE}/enabled", "put", 404, gone)


async def test_push_rules_account_data_in_sync(rest: RestHelper) -> None:
    alice = await rest.register("alice")
    first = await rest.sync(alice)
    # A new user has the default rules from the first sync on, as clients expect (they read
    # notification settings from this account data), and through GET.
    [initial] = [e for e in first["account_data"]["events"] if e["type"] == "m.push_rules"]
    assert initial["content"]["global"] == await _ruleset(rest, alice)
    assert _ids(initial["content"]["global"], "override")[0] == ".m.rule.master"
    path = f"{V3}/user/{quote(alice.user_id)}/account_data/m.push_rules"
    assert await rest.request("GET", path, alice) == initial["content"]
    rule = f"{V3}/pushrules/global/room/{quote(ROOM)}"
    await rest.request("PUT", rule, alice, {"actions": []})

    def has_rules(body: dict[str, Any]) -> bool:
        return any(e["type"] == "m.push_rules" for e in body["account_data"]["events"])

    body = await rest.sync_until(alice, first["next_batch"], has_rules)
    assert_response_valid("client-server/sync.yaml", "/sync", "get", 200, body)
    event = next(e for e in body["account_data"]["events"] if e["type"] == "m.push_rules")
    assert event["content"]["global"] == await _ruleset(rest, alice)
    assert _ids(event["content"]["global"], "room") == [ROOM]


# --- pushers ---------------------------------------------------------------------------------

PUSHERS = "client-server/pusher.yaml"
GATEWAY = "https://push.example.org/_matrix/push/v1/notify"


def _pusher(**changes: Any) -> dict[str, Any]:
    return {
        "kind": "http",
        "app_id": "org.example.app.ios",
        "pushkey": "key-1",
        "app_display_name": "Example",
        "device_display_name": "Phone",
        "lang": "en",
        "data": {"url": GATEWAY, "format": "event_id_only", "custom": 1},
        **changes,
    }


async def test_pushers(rest: RestHelper) -> None:
    alice, bob = await rest.register("alice"), await rest.register("bob")

    async def pushers(user: User) -> list[dict[str, Any]]:
        body = await rest.request("GET", f"{V3}/pushers", user)
        assert_response_valid(PUSHERS, "/pushers", "get", 200, body)
        found: list[dict[str, Any]] = body["pushers"]
        return found

    assert await pushers(alice) == []
    done = await rest.request("POST", f"{V3}/pushers/set", alice, _pusher(profile_tag="t"))
    assert_response_valid(PUSHERS, "/pushers/set", "post", 200, done)
    assert await pushers(alice) == [_pusher(profile_tag="t")]
    # Setting again updates the pusher with that app_id and pushkey.
    await rest.request("POST", f"{V3}/pushers/set", alice, _pusher(lang="de"))
    assert [p["lang"] for p in await pushers(alice)] == ["de"]
    # Another user taking the pushkey removes alice's, unless they append.
    await rest.request("POST", f"{V3}/pushers/set", bob, _pusher(append=True))
    assert len(await pushers(alice)) == 1
    await rest.request("POST", f"{V3}/pushers/set", bob, _pusher())
    assert await pushers(alice) == []
    assert len(await pushers(bob)) == 1
    await rest.request("POST", f"{V3}/pushers/set", bob, _pusher(kind=None))
    assert await pushers(bob) == []

    for bad, errcode in (
        ({k: v for k, v in _pusher().items() if k != "pushkey"}, "M_MISSING_PARAM"),
        ({k: v for k, v in _pusher().items() if k != "lang"}, "M_MISSING_PARAM"),
        (_pusher(kind="email"), "M_INVALID_PARAM"),
        (
            _pusher(data={"url": "http://push.example.org/_matrix/push/v1/notify"}),
            "M_INVALID_PARAM",
        ),
        (_pusher(data={"url": "https://push.example.org/notify"}), "M_INVALID_PARAM"),
        (_pusher(pushkey="k" * 513), "M_INVALID_PARAM"),
    ):
        refused = await rest.request("POST", f"{V3}/pushers/set", alice, bad, 400)
        assert_response_valid(PUSHERS, "/pushers/set", "post", 400, refused)
        assert refused["errcode"] == errcode
    assert await pushers(alice) == []
