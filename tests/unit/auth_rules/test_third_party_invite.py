"""Invites with `third_party_invite` (member rule, invite sub-rule 1) with tokens really signed
by an identity server key, and the m.room.third_party_invite event rule."""
from __future__ import annotations

from typing import Any

import pytest
from nacl.signing import SigningKey
from signedjson.key import (
    encode_verify_key_base64,
    generate_signing_key,
    get_verify_key,
)
from signedjson.sign import sign_json
from signedjson.types import SigningKey as IdentityKey
from unpaddedbase64 import encode_base64

from homeserver.events.event import MEMBER, THIRD_PARTY_INVITE, Event
from tests.helpers.events import CREATOR, RoomBuilder
from tests.unit.auth_rules.helpers import (
    ALICE,
    BOB,
    MEMBER_RULE,
    VERSIONS,
    allowed,
    rejected,
    rule_after_member,
)

TOKEN = "tok3n"
ID_SERVER = "id.test"


@pytest.fixture(scope="module")
def id_key() -> IdentityKey:
    return generate_signing_key("0")


def _rule(version: str, n: int) -> str:
    invite = 4 if int(version) >= 8 else 3
    return f"{MEMBER_RULE[version]}.{invite}.1.{n}"


def _room(version: str, key: SigningKey, id_key: IdentityKey, **tpi: Any) -> RoomBuilder:
    room = RoomBuilder.standard(version, key, join_rule="invite")
    room.join(ALICE)
    content = {
        "display_name": "b...@example.com",
        "key_validity_url": "https://id.test/_matrix/identity/v2/pubkey/isvalid",
        "public_key": encode_verify_key_base64(get_verify_key(id_key)),
        **tpi,
    }
    room.send(THIRD_PARTY_INVITE, ALICE, content, state_key=TOKEN)
    return room


def _signed(id_key: IdentityKey, mxid: str = BOB, token: str = TOKEN) -> dict[str, Any]:
    return sign_json({"mxid": mxid, "token": token}, ID_SERVER, id_key)


def _invite(room: RoomBuilder, third_party_invite: Any, sender: str = ALICE) -> Event:
    content = {"membership": "invite", "third_party_invite": third_party_invite}
    return room.build(MEMBER, sender, content, state_key=BOB)


@pytest.mark.parametrize("version", VERSIONS)
def test_signed_third_party_invite_allowed(
    version: str, signing_key: SigningKey, id_key: IdentityKey
) -> None:
    room = _room(version, signing_key, id_key)
    event = _invite(room, {"display_name": "b...", "signed": _signed(id_key)})
    assert (THIRD_PARTY_INVITE, TOKEN) in {room.events[i].state_key_tuple
                                          for i in event.auth_event_ids}
    allowed(event, room.state)


@pytest.mark.parametrize("version", ["1", "9", "12"])
def test_target_banned_rejected(version: str, signing_key: SigningKey, id_key: IdentityKey) -> None:
    room = _room(version, signing_key, id_key)
    room.member(CREATOR, BOB, "ban")
    rejected(_invite(room, {"signed": _signed(id_key)}), room.state, _rule(version, 1))


@pytest.mark.parametrize("third_party_invite", [{}, {"signed": "x"}, "junk", None])
@pytest.mark.parametrize("version", ["1", "12"])
def test_missing_signed_rejected(
    version: str, third_party_invite: Any, signing_key: SigningKey, id_key: IdentityKey
) -> None:
    room = _room(version, signing_key, id_key)
    rejected(_invite(room, third_party_invite), room.state, _rule(version, 2))


@pytest.mark.parametrize("missing", ["mxid", "token"])
def test_signed_without_mxid_or_token_rejected(
    missing: str, signing_key: SigningKey, id_key: IdentityKey
) -> None:
    room = _room("10", signing_key, id_key)
    signed = {k: v for k, v in _signed(id_key).items() if k != missing}
    rejected(_invite(room, {"signed": signed}), room.state, _rule("10", 3))


def test_mxid_not_matching_state_key_rejected(signing_key: SigningKey, id_key: IdentityKey) -> None:
    room = _room("10", signing_key, id_key)
    rejected(_invite(room, {"signed": _signed(id_key, mxid=ALICE)}), room.state, _rule("10", 4))


def test_unknown_token_rejected(signing_key: SigningKey, id_key: IdentityKey) -> None:
    room = _room("10", signing_key, id_key)
    rejected(_invite(room, {"signed": _signed(id_key, token="other")}), room.state, _rule("10", 5))


def test_sender_must_have_sent_the_third_party_invite(
    signing_key: SigningKey, id_key: IdentityKey
) -> None:
    room = _room("10", signing_key, id_key)
    event = _invite(room, {"signed": _signed(id_key)}, sender=CREATOR)
    rejected(event, room.state, _rule("10", 6))


@pytest.mark.parametrize("version", ["1", "10", "12"])
def test_signature_by_another_key_rejected(
    version: str, signing_key: SigningKey, id_key: IdentityKey
) -> None:
    room = _room(version, signing_key, id_key)
    forged = _signed(generate_signing_key("0"))
    rejected(_invite(room, {"signed": forged}), room.state, _rule(version, 8))


def test_tampered_signed_rejected(signing_key: SigningKey, id_key: IdentityKey) -> None:
    room = _room("10", signing_key, id_key)
    signed = _signed(id_key, mxid="@other:b.test")
    signed["mxid"] = BOB
    rejected(_invite(room, {"signed": signed}), room.state, _rule("10", 8))


@pytest.mark.parametrize(
    "signatures",
    [None, {}, {ID_SERVER: "x"}, {ID_SERVER: {"ed25519:0": "not base64!"}}],
)
def test_malformed_signatures_rejected(
    signatures: Any, signing_key: SigningKey, id_key: IdentityKey
) -> None:
    room = _room("10", signing_key, id_key)
    signed = {"mxid": BOB, "token": TOKEN, "signatures": signatures}
    rejected(_invite(room, {"signed": signed}), room.state, _rule("10", 8))


def test_key_in_public_keys_list_allowed(signing_key: SigningKey, id_key: IdentityKey) -> None:
    other = generate_signing_key("0")
    room = _room(
        "10", signing_key, id_key,
        public_key=encode_verify_key_base64(get_verify_key(other)),
        public_keys=[
            {"public_key": "!!not a key"},
            {"public_key": encode_verify_key_base64(get_verify_key(id_key))},
        ],
    )
    allowed(_invite(room, {"signed": _signed(id_key)}), room.state)


def test_url_safe_public_key_allowed(signing_key: SigningKey, id_key: IdentityKey) -> None:
    raw = get_verify_key(id_key).encode()
    room = _room("10", signing_key, id_key, public_key=encode_base64(raw, urlsafe=True))
    allowed(_invite(room, {"signed": _signed(id_key)}), room.state)


def test_invite_needs_no_invite_power(signing_key: SigningKey, id_key: IdentityKey) -> None:
    """The third-party branch allows at its sub-rule 7, before the invite level is read."""
    room = _room("10", signing_key, id_key)
    room.send(
        "m.room.power_levels", CREATOR, {"users": {CREATOR: 100}, "invite": 50}, state_key=""
    )
    allowed(_invite(room, {"signed": _signed(id_key)}), room.state)


# The m.room.third_party_invite event -----------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_third_party_invite_event_needs_invite_level(
    version: str, signing_key: SigningKey
) -> None:
    room = RoomBuilder.standard(version, signing_key, users={ALICE: 10}, invite=20)
    room.join(ALICE)
    event = room.build(THIRD_PARTY_INVITE, ALICE, {"display_name": "x"}, state_key="t")
    rejected(event, room.state, f"{rule_after_member(version, 2)}.1")
    allowed(room.build(THIRD_PARTY_INVITE, CREATOR, {"display_name": "x"}, state_key="t"),
            room.state)


@pytest.mark.parametrize("version", VERSIONS)
def test_third_party_invite_event_below_state_default_allowed(
    version: str, signing_key: SigningKey
) -> None:
    room = RoomBuilder.standard(version, signing_key)
    room.join(ALICE)
    # The invite level (0), not state_default (50), decides.
    allowed(room.build(THIRD_PARTY_INVITE, ALICE, {"display_name": "x"}, state_key="t"),
            room.state)
