"""Deterministic rooms of real, signed events for the differential tests, built with
tests/helpers/events.py's RoomBuilder, and the hypothesis strategies that describe them.

Determinism matters to hypothesis (a failure must replay while it shrinks): rooms start at a
fixed timestamp with a room ID derived from a tag, and `deterministic_ids()` replaces the random
event IDs of room v1/v2 events with a counter.
"""
from __future__ import annotations

import contextlib
import itertools
from collections.abc import Awaitable, Iterator, Mapping
from typing import Any
from unittest import mock

from hypothesis import strategies as st
from signedjson.key import decode_signing_key_base64

import homeserver.events.builder as builder_module
from homeserver.auth_rules import check_auth_rules
from homeserver.errors import AuthError
from homeserver.events.event import CREATE, Event
from homeserver.events.room_versions import KNOWN_ROOM_VERSIONS
from homeserver.state import InMemoryStateResolutionStore, resolve_state
from tests.helpers.events import RoomBuilder, server_of

VERSIONS = [str(v) for v in range(1, 13)]

# The spec's test signing key (appendices "Cryptographic Test Vectors"), ID ed25519:1.
SIGNING_KEY = decode_signing_key_base64(
    "ed25519", "1", "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1")

CREATOR = "@creator:a.test"
ALICE = "@alice:a.test"  # the creator's server
BOB = "@bob:b.test"
CAROL = "@carol:c.test"
EVE = "@eve:e.test"  # never in the room
MEMBERS = [ALICE, BOB, CAROL]
USERS = [CREATOR, *MEMBERS]
ALL_USERS = [*USERS, EVE]

START_TS = 1_700_000_000_000


class _CountingSecrets:
    """Stands in for the `secrets` module in the event builder: predictable v1/v2 event IDs."""

    def __init__(self) -> None:
        self._counter = itertools.count()

    def token_urlsafe(self, nbytes: int | None = None) -> str:
        return f"ev{next(self._counter)}"


@contextlib.contextmanager
def deterministic_ids() -> Iterator[None]:
    with mock.patch.object(builder_module, "secrets", _CountingSecrets()):
        yield


def new_room(
    version: str,
    extra_create_content: Mapping[str, Any] | None = None,
    *,
    creator: str = CREATOR,
    tag: str = "room",
    start_ts: int = START_TS,
) -> RoomBuilder:
    """RoomBuilder.new, but deterministic: the room ID (before v12) comes from `tag`, the
    timestamps from `start_ts`."""
    room = RoomBuilder(KNOWN_ROOM_VERSIONS[version], SIGNING_KEY)  # type: ignore[arg-type]
    room.ts = start_ts
    content: dict[str, Any] = {"room_version": version}
    if not room.room_version.implicit_room_creator:
        content["creator"] = creator
    content.update(extra_create_content or {})
    if not room.room_version.room_id_from_create_event:
        room.room_id = f"!{tag}:{server_of(creator)}"
    create = room.send(CREATE, creator, content, state_key="")
    room.room_id = create.room_id
    return room


def run_sync(awaitable: Awaitable[Any]) -> Any:
    """Drive a coroutine whose awaits all complete at once (our in-memory stores, the fake
    Synapse stores, a clock whose sleep returns at once) without an event loop or reactor. A
    bare `yield` (asyncio.sleep(0)) is passed over; anything else that suspends is a test bug."""
    coro = awaitable.__await__()
    try:
        for _ in range(100_000):
            yielded = coro.send(None)
            if yielded is not None:
                raise AssertionError(f"coroutine waited on {yielded!r}: a store did not answer")
    except StopIteration as stop:
        return stop.value
    finally:
        close = getattr(coro, "close", None)
        if close is not None:
            close()
    raise AssertionError("coroutine did not finish")


# --- JSON values --------------------------------------------------------------------------------

# Integers within canonical JSON's range (v6+ rejects others; they are not the point here).
json_ints = st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
json_scalars = st.one_of(
    st.none(), st.booleans(), json_ints, st.text(max_size=8),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.text(max_size=6), inner, max_size=3),
    ),
    max_leaves=8,
)


def well_formed_level(version: str) -> st.SearchStrategy[Any]:
    """A power level as the room version allows it: integers everywhere, integer strings
    (rooms/fragments/v1-stringy-power-levels.md) before v10."""
    ints = st.sampled_from([-1, 0, 1, 49, 50, 51, 99, 100, 101])
    if KNOWN_ROOM_VERSIONS[version].integer_power_levels:
        return ints
    return st.one_of(ints, ints, st.sampled_from(["50", " 50 ", "+050", "-1", "0", "100", "101"]))


def power_levels_content(
    version: str, users: list[str] = USERS
) -> st.SearchStrategy[dict[str, Any]]:
    level = well_formed_level(version)
    named = ["users_default", "events_default", "state_default", "ban", "kick", "redact", "invite"]
    rv = KNOWN_ROOM_VERSIONS[version]
    # v12: creators may not be listed (rule 10.4); listing them stays possible, but rarer.
    listable = [u for u in users if not (rv.privileged_creators and u == CREATOR)]
    return st.fixed_dictionaries(
        {},
        optional={
            "users": st.dictionaries(
                st.sampled_from(listable) | st.sampled_from(users), level, max_size=4),
            **{k: level for k in named},
            "events": st.dictionaries(
                st.sampled_from([
                    "m.room.power_levels", "m.room.name", "m.room.topic", "m.room.message",
                    "m.room.join_rules", "org.example.custom",
                ]),
                level,
                max_size=3,
            ),
            "notifications": st.fixed_dictionaries({}, optional={"room": level}),
        },
    )


def one_in(draw: st.DrawFn, n: int) -> bool:
    """True about once in `n` draws; shrinks to False (hypothesis biases small integers, so
    `integers(0, n) == 0` would come up far more often than 1/n)."""
    return draw(st.sampled_from([False] * (n - 1) + [True]))


JOIN_RULE_VALUES = ["public", "invite", "knock", "restricted", "knock_restricted", "private"]
MEMBERSHIPS = ["join", "invite", "leave", "ban", "knock"]
STATE_TYPES = ["m.room.topic", "m.room.name", "org.example.custom", "m.room.history_visibility"]
STATE_KEYS = ["", "x", ALICE, BOB, "@", "@alice"]


@st.composite
def room_states(draw: st.DrawFn, version: str, federate: st.SearchStrategy[Any]) -> RoomBuilder:
    """A room built from real events whose state is random: the create event (with a drawn
    `m.federate`, v12 sometimes an additional creator), then optionally the creator's join,
    power levels and join rules, then each member's history. Events are applied without auth
    checks, so the state need not be one the auth rules would have reached."""
    rv = KNOWN_ROOM_VERSIONS[version]
    extra: dict[str, Any] = {}
    fed = draw(federate)
    if fed is not _ABSENT:
        extra["m.federate"] = fed
    if rv.privileged_creators and draw(st.booleans()):
        extra["additional_creators"] = [ALICE]
    room = new_room(version, extra)
    if one_in(draw, 10):
        return room  # only the create event: the creator's first join is a special case
    if not one_in(draw, 6):
        room.join(CREATOR)
    if not one_in(draw, 5):
        content = draw(power_levels_content(version))
        if not rv.privileged_creators and not one_in(draw, 4):
            # Usually the creator keeps the power to change things (v12 creators always do).
            content["users"] = {**content.get("users", {}), CREATOR: 100}
        room.send("m.room.power_levels", CREATOR, content, state_key="")
    if not one_in(draw, 5):
        content: dict[str, Any] = {}
        rule = draw(st.sampled_from([*JOIN_RULE_VALUES, None]))
        if rule is not None:
            content["join_rule"] = rule
        if rule in ("restricted", "knock_restricted") and draw(st.booleans()):
            content["allow"] = [{"type": "m.room_membership", "room_id": "!other:a.test"}]
        room.send("m.room.join_rules", CREATOR, content, state_key="")
    for user in MEMBERS:
        history = draw(st.lists(st.sampled_from(["join", "join", *MEMBERSHIPS]), max_size=2))
        for membership in history:
            sender = user if membership in ("join", "knock") else draw(st.sampled_from(USERS))
            room.member(sender, user, membership)
    return room


class _Absent:
    def __repr__(self) -> str:
        return "<absent>"


_ABSENT = _Absent()
FEDERATE_BOOLEAN = st.sampled_from([_ABSENT, _ABSENT, True, False])
# Known, deliberate difference (homeserver/auth_rules/rules.py): only a literal false stops
# federation for us; Synapse stops it for anything but a literal true.
FEDERATE_ODD = st.sampled_from([_ABSENT, True, False, "false", 0, None, "true", 1])


def _mutated_power_levels(
    draw: st.DrawFn, version: str, current: Mapping[str, Any]
) -> dict[str, Any]:
    """The current power levels with one or two small changes, so that many candidates pass."""
    content = {k: (dict(v) if isinstance(v, dict) else v) for k, v in current.items()}
    level = well_formed_level(version)
    for _ in range(draw(st.integers(1, 2))):
        what = draw(st.sampled_from(["named", "user", "event", "drop"]))
        if what == "named":
            content[draw(st.sampled_from(["ban", "kick", "redact", "invite", "state_default",
                                          "events_default", "users_default"]))] = draw(level)
        elif what == "user":
            users = content.setdefault("users", {})
            if isinstance(users, dict):
                user = draw(st.sampled_from(ALL_USERS))
                if one_in(draw, 4):
                    users.pop(user, None)
                else:
                    users[user] = draw(level)
        elif what == "event":
            events = content.setdefault("events", {})
            if isinstance(events, dict):
                events[draw(st.sampled_from(["m.room.name", "m.room.power_levels"]))] = draw(level)
        elif content:
            content.pop(draw(st.sampled_from(sorted(content))))
    return content


AUTH_EVENT_CHOICES = ["spec"] * 12 + ["drop", "extra", "duplicate", "non_state", "other_room",
                                     "create"]


@st.composite
def candidate_events(draw: st.DrawFn, room: RoomBuilder, other_room: RoomBuilder) -> Event:
    """An event on top of `room`'s state (not applied): memberships of every kind by various
    senders (no third-party invites), power levels (fresh or a small change, now and then with
    a non-empty state_key), other state, messages, redactions, aliases, third-party invite
    events and create events. Its auth events are the spec's selection, or that selection
    broken in one way to exercise the rules on auth events."""
    version = room.room_version.identifier
    rv = room.room_version
    kind = draw(st.sampled_from(["member", "member", "member", "power_levels", "power_levels",
                                 "join_rules", "state", "message", "redaction", "aliases",
                                 "third_party_invite", "create"]))
    joined = [u for u in USERS
              if (m := room.state.get(("m.room.member", u))) and m.membership == "join"]
    sender = draw(st.sampled_from(joined if joined and draw(st.booleans()) else ALL_USERS))
    state_key: str | None = None
    content: dict[str, Any] = {}
    event_type = ""
    redacts: str | None = None
    prev_events: list[Any] | None = None
    if kind == "member":
        event_type = "m.room.member"
        membership = draw(st.sampled_from([*MEMBERSHIPS, "join", "leave", "bogus"]))
        content = {"membership": membership}
        if membership in ("join", "knock", "leave") and not one_in(draw, 3):
            state_key = sender
        else:
            state_key = draw(st.sampled_from(ALL_USERS))
        if membership == "join" and one_in(draw, 4):
            content["join_authorised_via_users_server"] = draw(st.sampled_from(ALL_USERS))
        if one_in(draw, 10):
            # The creator's first join is allowed when its only prev event is the create event.
            prev_events = [room.create]
        if one_in(draw, 20):
            content = {"displayname": "no membership"}
    elif kind == "power_levels":
        event_type = "m.room.power_levels"
        if draw(st.booleans()):
            sender = draw(st.sampled_from([CREATOR, ALICE]))
        current = room.state.get(("m.room.power_levels", ""))
        if current is not None and draw(st.booleans()):
            content = _mutated_power_levels(draw, version, current.content)
        else:
            content = draw(power_levels_content(version, ALL_USERS))
        state_key = draw(st.sampled_from(["", "", "", "", "x"]))
    elif kind == "join_rules":
        event_type = "m.room.join_rules"
        content = {"join_rule": draw(st.sampled_from(JOIN_RULE_VALUES))}
        state_key = ""
    elif kind == "state":
        event_type = draw(st.sampled_from(STATE_TYPES))
        state_key = draw(st.sampled_from(STATE_KEYS + [sender]))
        content = {"value": draw(st.integers(0, 3))}
    elif kind == "message":
        event_type = "m.room.message"
        content = {"msgtype": "m.text", "body": "hi"}
    elif kind == "redaction":
        event_type = "m.room.redaction"
        redacts = draw(st.sampled_from([*sorted(room.events), "$gone:b.test", "$gone:a.test"]))
    elif kind == "aliases":
        event_type = "m.room.aliases"
        state_key = draw(st.sampled_from(["a.test", "b.test", "", server_of(sender)]))
        content = {"aliases": ["#room:" + server_of(sender)]}
    elif kind == "third_party_invite":
        event_type = "m.room.third_party_invite"
        state_key = "token"
        content = {"display_name": "someone", "key_validity_url": "https://id.test/v",
                   "public_key": "AAAA"}
    else:
        event_type = CREATE
        state_key = ""
        content = {}
        room_version = draw(st.sampled_from([version, version, "1", "12", "13", "foo", 5, None]))
        if room_version is not None:
            content["room_version"] = room_version
        if not rv.implicit_room_creator and not one_in(draw, 4):
            content["creator"] = sender
        if rv.privileged_creators and draw(st.booleans()):
            content["additional_creators"] = draw(st.sampled_from(
                [[ALICE], [ALICE, BOB], "x", [5], ["alice"], [ALICE, "@bad"]]))
        prev_events = draw(st.sampled_from([[], [], [room.create]]))
        return room.build(event_type, sender, content, state_key, prev_events=prev_events,
                          auth_events=[])

    event = room.build(event_type, sender, content, state_key, redacts=redacts,
                       prev_events=prev_events)
    how = draw(st.sampled_from(AUTH_EVENT_CHOICES))
    if how == "spec":
        return event
    auth = [room.events[i] for i in event.auth_event_ids]
    older = [e for e in room.events.values()
             if e.is_state() and e not in auth and e.type != CREATE]
    if how == "drop" and auth:
        auth.pop(draw(st.integers(0, len(auth) - 1)))
    elif how in ("extra", "duplicate") and older:
        candidates = older
        if how == "duplicate":
            keys = {a.state_key_tuple for a in auth}
            candidates = [e for e in older if e.state_key_tuple in keys] or older
        auth.append(draw(st.sampled_from(candidates)))
    elif how == "non_state":
        messages = [e for e in room.events.values() if not e.is_state()]
        if messages:
            auth.append(messages[0])
        else:
            auth.append(room.send("m.room.message", CREATOR, {"body": "m"}))
    elif how == "other_room":
        auth.append(other_room.state[("m.room.power_levels", "")])
    elif how == "create" and rv.room_id_from_create_event:
        auth.append(room.create)
    else:
        return event
    return room.build(event_type, sender, content, state_key, redacts=redacts,
                      prev_events=prev_events, auth_events=auth)


# --- forks for state resolution -----------------------------------------------------------------

DAVE = "@dave:b.test"
ERIN = "@erin:c.test"
FORK_USERS = [ALICE, BOB, CAROL, DAVE, ERIN]


def _allowed_on(room: RoomBuilder, event: Event) -> bool:
    """Whether our auth rules accept `event` against the room's current state (the fork's)."""
    try:
        check_auth_rules(event, room.state)
    except AuthError:
        return False
    return True


@st.composite
def forked_rooms(
    draw: st.DrawFn, version: str
) -> tuple[RoomBuilder, list[list[dict[tuple[str, str], str]]]]:
    """A room of 3 to 6 users (creator, admins, moderators, members), then 2 or 3 forks from
    its latest event, each a few random changes of membership (joins, leaves, kicks, bans,
    unbans, invites), power levels, join rules and other state, built on that fork's own state
    and kept only when our auth rules accept it there (so no event would have been rejected).
    Now and then one fork merges another: its state becomes our resolution of the two, and a
    topic event cites both extremities. Timestamps sometimes repeat, to reach the event ID
    tie-break. Returns the room and every resolution to compare: each merge's, then the forks'
    final states."""
    rv = KNOWN_ROOM_VERSIONS[version]
    users = [CREATOR, *draw(st.lists(st.sampled_from(FORK_USERS), min_size=2, max_size=5,
                                     unique=True))]
    room = new_room(version)
    room.join(CREATOR)
    levels = {u: draw(st.sampled_from([0, 0, 50, 100])) for u in users[1:]}
    if not rv.privileged_creators:
        levels[CREATOR] = 100
    room.send("m.room.power_levels", CREATOR, {"users": levels}, state_key="")
    room.send("m.room.join_rules", CREATOR, {"join_rule": "public"}, state_key="")
    for user in users[1:]:
        room.join(user)

    forks = [(dict(room.state), list(room.prev_events), room.depth)
             for _ in range(draw(st.integers(2, 3)))]
    resolutions: list[list[dict[tuple[str, str], str]]] = []
    steps = draw(st.lists(st.integers(0, len(forks) - 1), min_size=2, max_size=12))
    earlier_ts = [room.ts]
    for fork_index in steps:
        room.state, room.prev_events, room.depth = (
            dict(forks[fork_index][0]), list(forks[fork_index][1]), forks[fork_index][2])
        if one_in(draw, 4):
            room.ts = draw(st.sampled_from(earlier_ts)) - 1  # build() adds one
        joined = [u for u in users if (m := room.state.get(("m.room.member", u)))
                  and m.membership == "join"] or [CREATOR]
        sender = draw(st.sampled_from(joined))
        what = draw(st.sampled_from(["member", "member", "power_levels", "power_levels",
                                     "join_rules", "state", "merge"]))
        if what == "merge":
            other = draw(st.sampled_from([i for i in range(len(forks)) if i != fork_index]))
            state_sets = [{k: e.event_id for k, e in forks[i][0].items()}
                          for i in (fork_index, other)]
            resolutions.append(state_sets)
            merged = run_sync(resolve_state(room.room_id, rv, state_sets,
                                            InMemoryStateResolutionStore(room.events.values())))
            room.state = {k: room.events[i] for k, i in merged.items()}
            room.prev_events = [*forks[fork_index][1], *forks[other][1]]
            room.depth = max(forks[fork_index][2], forks[other][2])
            joined = [u for u in users if (m := room.state.get(("m.room.member", u)))
                      and m.membership == "join"] or [CREATOR]
            sender = draw(st.sampled_from(joined))
            event = room.build("m.room.topic", sender, {"merge": len(resolutions)}, state_key="")
        elif what == "member":
            target = draw(st.sampled_from(users))
            membership = draw(st.sampled_from(["join", "leave", "ban", "invite"]))
            if membership == "join":
                sender = target
            event = room.build("m.room.member", sender, {"membership": membership},
                               state_key=target)
        elif what == "power_levels":
            current = room.state[("m.room.power_levels", "")].content
            content = {k: (dict(v) if isinstance(v, dict) else v) for k, v in current.items()}
            change = draw(st.sampled_from(["user", "user", "ban", "kick", "events"]))
            if change == "user":
                target = draw(st.sampled_from(users))
                if not (rv.privileged_creators and target == CREATOR):
                    content["users"][target] = draw(st.sampled_from([0, 50, 75, 100]))
            elif change == "events":
                content["events"] = {draw(st.sampled_from(["m.room.name", "m.room.topic"])):
                                     draw(st.sampled_from([0, 50, 100]))}
            else:
                content[change] = draw(st.sampled_from([0, 50, 100]))
            event = room.build("m.room.power_levels", sender, content, state_key="")
        elif what == "join_rules":
            event = room.build("m.room.join_rules", sender,
                               {"join_rule": draw(st.sampled_from(["public", "invite"]))},
                               state_key="")
        else:
            event = room.build(draw(st.sampled_from(["m.room.name", "m.room.topic"])), sender,
                               {"v": draw(st.integers(0, 3))}, state_key="")
        earlier_ts.append(event.origin_server_ts)
        if _allowed_on(room, event):
            room.apply(event)
        elif what != "merge":
            del room.events[event.event_id]
        forks[fork_index] = (room.state, room.prev_events, room.depth)
    resolutions.append([{k: e.event_id for k, e in state.items()} for state, _, _ in forks])
    return room, resolutions
