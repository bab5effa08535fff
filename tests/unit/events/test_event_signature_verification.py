"""S2S "Validating hashes and signatures on received events": signatures cover the redacted
event, so they verify on a redacted copy and survive edits to non-essential content, which the
content hash catches instead."""
from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from nacl.signing import SigningKey
from signedjson.key import generate_signing_key, get_verify_key

from homeserver.crypto.signing import hash_and_sign_event, verify_event_signature
from homeserver.events.event import Event, check_content_hash
from homeserver.events.redaction import prune_event_dict
from homeserver.events.room_versions import KNOWN_ROOM_VERSIONS

VERSIONS = ["1", "3", "4", "6", "9", "10", "11", "12"]
# The spec's minimal event (appendices "Event Signing"), which carries a top-level `origin`.
EVENT_SIGNING_BASE = {
    "room_id": "!x:domain", "sender": "@a:domain", "origin": "domain",
    "origin_server_ts": 1000000, "type": "X", "content": {}, "prev_events": [],
    "auth_events": [], "depth": 3,
}


def _member(make_event: Callable[..., Event], version: str) -> Event:
    return make_event(
        KNOWN_ROOM_VERSIONS[version],
        type="m.room.member",
        state_key="@alice:domain",
        content={"membership": "join", "displayname": "Alice", "avatar_url": "mxc://domain/a"},
    )


@pytest.mark.parametrize("version", VERSIONS)
def test_signature_verifies_on_full_and_redacted_copy(
    version: str, make_event: Callable[..., Event], signing_key: SigningKey
) -> None:
    event = _member(make_event, version)
    vk = get_verify_key(signing_key)
    assert verify_event_signature(event.room_version, event.pdu, "domain", vk)
    redacted = event.redacted()
    assert redacted.pdu["content"] == {"membership": "join"}
    assert verify_event_signature(event.room_version, redacted.pdu, "domain", vk)
    # The redacted copy keeps the event ID (v3+: the reference hash is of the redacted form).
    assert redacted.event_id == event.event_id
    assert Event(redacted.pdu, event.room_version).event_id == event.event_id
    # Content hash: good on the full event; the redacted copy fails it, which is how a
    # receiver knows it holds only the redacted form.
    assert check_content_hash(event.pdu)
    assert not check_content_hash(redacted.pdu)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("field", "mutate"),
    [
        ("type", lambda p: p.__setitem__("type", "m.room.message")),
        ("sender", lambda p: p.__setitem__("sender", "@mallory:domain")),
        ("state_key", lambda p: p.__setitem__("state_key", "@mallory:domain")),
        ("depth", lambda p: p.__setitem__("depth", p["depth"] + 1)),
        ("origin_server_ts", lambda p: p.__setitem__("origin_server_ts", 1)),
        ("room_id", lambda p: p.__setitem__("room_id", p["room_id"][:-1] + "B")),
        ("prev_events", lambda p: p.__setitem__("prev_events", [])),
        ("auth_events", lambda p: p.__setitem__("auth_events", [])),
        ("content.membership", lambda p: p["content"].__setitem__("membership", "leave")),
        ("hashes.sha256", lambda p: p["hashes"].__setitem__("sha256", "A" * 43)),
    ],
)
def test_tampering_with_a_kept_field_breaks_the_signature(
    version: str,
    field: str,
    mutate: Callable[[dict[str, Any]], None],
    make_event: Callable[..., Event],
    signing_key: SigningKey,
) -> None:
    event = _member(make_event, version)
    tampered = copy.deepcopy(event.pdu)
    mutate(tampered)
    vk = get_verify_key(signing_key)
    assert not verify_event_signature(event.room_version, tampered, "domain", vk), field
    # And on the redacted copy of the tampered event too.
    pruned = prune_event_dict(event.room_version, tampered)
    assert not verify_event_signature(event.room_version, pruned, "domain", vk), field


@pytest.mark.parametrize("version", VERSIONS)
def test_changing_non_kept_content_keeps_signature_but_breaks_content_hash(
    version: str, make_event: Callable[..., Event], signing_key: SigningKey
) -> None:
    event = _member(make_event, version)
    changed = copy.deepcopy(event.pdu)
    changed["content"]["displayname"] = "Mallory"
    vk = get_verify_key(signing_key)
    assert verify_event_signature(event.room_version, changed, "domain", vk)
    assert not check_content_hash(changed)
    # Adding a key is the same as changing one.
    added = copy.deepcopy(event.pdu)
    added["content"]["reason"] = "sneaky"
    assert verify_event_signature(event.room_version, added, "domain", vk)
    assert not check_content_hash(added)


@pytest.mark.parametrize("version", ["1", "10"])
def test_changing_origin_breaks_pre_v11_signature_only(
    version: str, signing_key: SigningKey
) -> None:
    # `origin` is kept by the v1 redaction rules and stripped by the v11 ones.
    rv = KNOWN_ROOM_VERSIONS[version]
    pdu = copy.deepcopy(EVENT_SIGNING_BASE)
    hash_and_sign_event(rv, pdu, "domain", signing_key)
    pdu["origin"] = "elsewhere"
    assert not verify_event_signature(rv, pdu, "domain", get_verify_key(signing_key))
    v11 = KNOWN_ROOM_VERSIONS["11"]
    pdu11 = copy.deepcopy(EVENT_SIGNING_BASE)
    hash_and_sign_event(v11, pdu11, "domain", signing_key)
    pdu11["origin"] = "elsewhere"
    assert verify_event_signature(v11, pdu11, "domain", get_verify_key(signing_key))
    assert not check_content_hash(pdu11)


@pytest.mark.parametrize("version", VERSIONS)
def test_unsigned_and_signatures_are_not_covered(
    version: str, make_event: Callable[..., Event], signing_key: SigningKey
) -> None:
    event = _member(make_event, version)
    pdu = copy.deepcopy(event.pdu)
    pdu["unsigned"] = {"age": 1234, "anything": [1, 2, 3]}
    pdu["signatures"]["other.example"] = {"ed25519:k": "c2ln"}
    vk = get_verify_key(signing_key)
    assert verify_event_signature(event.room_version, pdu, "domain", vk)
    assert check_content_hash(pdu)


@pytest.mark.parametrize("version", VERSIONS)
def test_wrong_key_or_server_fails(
    version: str, make_event: Callable[..., Event], signing_key: SigningKey
) -> None:
    event = _member(make_event, version)
    other = generate_signing_key("1")  # same key ID, different key
    rv = event.room_version
    assert not verify_event_signature(rv, event.pdu, "domain", get_verify_key(other))
    assert not verify_event_signature(
        event.room_version, event.pdu, "other.example", get_verify_key(signing_key)
    )
    unknown_id = generate_signing_key("2")
    assert not verify_event_signature(
        event.room_version, event.pdu, "domain", get_verify_key(unknown_id)
    )


def test_check_content_hash_rejects_malformed_hashes(make_event: Callable[..., Event]) -> None:
    event = make_event(KNOWN_ROOM_VERSIONS["11"])
    hashes: Any
    for hashes in (None, [], {}, {"sha256": 5}, {"sha256": "!!!not base64"}):
        pdu = dict(event.pdu, hashes=hashes)
        assert not check_content_hash(pdu), hashes
