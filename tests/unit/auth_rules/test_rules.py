"""The rules outside m.room.create, m.room.member and m.room.power_levels: m.federate, the
v1-v5 aliases rule, the sender's membership, the '@' state_key rule, v1/v2 redactions, and soft
failure."""
from __future__ import annotations

import pytest
from nacl.signing import SigningKey

from homeserver.auth_rules import is_soft_failed
from homeserver.events.event import ALIASES, MEMBER, REDACTION
from tests.helpers.events import CREATOR, RoomBuilder
from tests.unit.auth_rules.helpers import (
    ALICE,
    BOB,
    VERSIONS,
    allowed,
    rejected,
    rule_after_member,
    versions_from,
)

# m.federate (rule 3; v12 rule 4) ---------------------------------------------------------


def _federate_rule(version: str) -> str:
    return "4" if version == "12" else "3"


@pytest.mark.parametrize("version", VERSIONS)
def test_unfederated_room_rejects_remote_senders(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.new(version, signing_key, extra_create_content={"m.federate": False})
    room.join(CREATOR)
    room.send("m.room.join_rules", CREATOR, {"join_rule": "public"}, state_key="")
    room.join(ALICE)
    room.join(BOB)  # as if accepted elsewhere
    allowed(room.build("m.room.message", ALICE, {"body": "local"}), room.state)
    rejected(room.build("m.room.message", BOB, {"body": "remote"}), room.state,
             _federate_rule(version))


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("federate", [True, "false", 0, None])
def test_only_false_unfederates(version: str, federate: object, signing_key: SigningKey) -> None:
    room = RoomBuilder.new(version, signing_key, extra_create_content={"m.federate": federate})
    room.join(CREATOR)
    room.send("m.room.join_rules", CREATOR, {"join_rule": "public"}, state_key="")
    allowed(room.build(MEMBER, BOB, {"membership": "join"}, state_key=BOB), room.state)


# m.room.aliases (v1-v5 rule 4) -----------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_aliases_special_case_until_v5(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key)
    # BOB's server publishes aliases without BOB being in the room.
    event = room.build(ALIASES, BOB, {"aliases": ["#x:b.test"]}, state_key="b.test")
    if int(version) <= 5:
        allowed(event, room.state)
    else:
        rejected(event, room.state, rule_after_member(version, 1))


@pytest.mark.parametrize("version", versions_from(1, 5))
def test_aliases_state_key_must_be_senders_domain(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key)
    event = room.build(ALIASES, BOB, {"aliases": ["#x:a.test"]}, state_key="a.test")
    rejected(event, room.state, "4.2")
    # Even a joined user with enough power.
    event = room.build(ALIASES, CREATOR, {"aliases": []}, state_key="b.test")
    rejected(event, room.state, "4.2")


@pytest.mark.parametrize("version", versions_from(1, 5))
def test_aliases_needs_a_state_key(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key)
    rejected(room.build(ALIASES, BOB, {"aliases": []}), room.state, "4.1")


@pytest.mark.parametrize("version", versions_from(6))
def test_aliases_follow_normal_rules_from_v6(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key)
    room.join(ALICE)
    event = room.build(ALIASES, ALICE, {"aliases": []}, state_key="a.test")
    rejected(event, room.state, rule_after_member(version, 3))  # state_default 50
    allowed(room.build(ALIASES, CREATOR, {"aliases": []}, state_key="elsewhere"), room.state)


# The sender must be joined -----------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("membership", [None, "invite", "leave", "ban", "knock"])
def test_sender_must_be_joined(version: str, membership: str | None,
                               signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key)
    if membership is not None:
        room.send(MEMBER, ALICE, {"membership": membership}, state_key=ALICE)
    event = room.build("m.room.message", ALICE, {"body": "hi"})
    rejected(event, room.state, rule_after_member(version, 1))
    room.join(ALICE)
    allowed(room.build("m.room.message", ALICE, {"body": "hi"}), room.state)


# A state_key starting with '@' -------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_user_state_key_must_be_the_sender(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key, users={ALICE: 50})
    room.join(ALICE)
    allowed(room.build("m.custom", ALICE, {}, state_key=ALICE), room.state)
    allowed(room.build("m.custom", ALICE, {}, state_key="not@user"), room.state)
    rejected(room.build("m.custom", ALICE, {}, state_key=BOB), room.state,
             rule_after_member(version, 4))
    rejected(room.build("m.custom", CREATOR, {}, state_key=ALICE + "_suffix"), room.state,
             rule_after_member(version, 4))


# m.room.redaction (v1/v2 rule 11) ---------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_redaction_of_another_servers_event(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key)
    room.join(ALICE)
    room.join(BOB)
    remote = room.send("m.room.message", BOB, {"body": "hi"})
    local = room.send("m.room.message", ALICE, {"body": "hi"})
    by_alice = room.build(REDACTION, ALICE, {}, redacts=remote.event_id)
    if int(version) <= 2:
        allowed(room.build(REDACTION, ALICE, {}, redacts=local.event_id), room.state)
        rejected(by_alice, room.state, "11.3")
        # The redact level allows any redaction.
        allowed(room.build(REDACTION, CREATOR, {}, redacts=remote.event_id), room.state)
    else:
        # v3+: the auth rules leave this to "Handling redactions".
        allowed(by_alice, room.state)


@pytest.mark.parametrize("version", VERSIONS)
def test_redaction_events_need_their_required_level(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key, events={REDACTION: 10})
    room.join(ALICE)
    event = room.build(REDACTION, ALICE, {}, redacts=room.create.event_id)
    rejected(event, room.state, rule_after_member(version, 3))


@pytest.mark.parametrize("version", ["1", "2"])
def test_redaction_without_redacts_rejected_below_redact_level(
    version: str, signing_key: SigningKey
) -> None:
    room = RoomBuilder.standard(version, signing_key)
    room.join(ALICE)
    rejected(room.build(REDACTION, ALICE, {}), room.state, "11.3")


# Soft failure ----------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_soft_failure_after_a_ban(version: str, signing_key: SigningKey) -> None:
    room = RoomBuilder.standard(version, signing_key)
    room.join(BOB)
    state_before = dict(room.state)
    # BOB's server sends a message on top of the state before his ban.
    message = room.build("m.room.message", BOB, {"body": "evading"})
    room.member(CREATOR, BOB, "ban")
    allowed(message, state_before)
    assert not is_soft_failed(message, state_before)
    assert is_soft_failed(message, room.state)


def test_soft_failure_in_v12_reads_the_create_event(signing_key: SigningKey) -> None:
    room = RoomBuilder.standard("12", signing_key)
    message = room.build("m.room.message", CREATOR, {"body": "hi"})
    assert not is_soft_failed(message, room.state)
    without_create = {k: v for k, v in room.state.items() if k[0] != "m.room.create"}
    assert is_soft_failed(message, without_create)
