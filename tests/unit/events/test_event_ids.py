"""Reference hashes and event IDs (S2S "Calculating the reference hash for an event";
rooms/fragments/v1-event-ids.md, v3 "Event IDs", v4-event-ids.md; appendices "Room IDs" for
v12)."""
from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from canonicaljson import encode_canonical_json
from nacl.signing import SigningKey
from unpaddedbase64 import encode_base64

from homeserver.crypto.signing import hash_and_sign_event
from homeserver.events.event import (
    Event,
    compute_event_id,
    reference_hash,
    room_id_for_create_event_id,
)
from homeserver.events.room_versions import KNOWN_ROOM_VERSIONS, EventFormat
from homeserver.events.validation import is_valid_event_id, is_valid_room_id

SIGNING = json.loads(
    (Path(__file__).resolve().parents[2] / "fixtures" / "spec_vectors" / "signing.json")
    .read_text(encoding="utf-8")
)
# The spec's signed minimal event (appendices "Event Signing"), as a v3+ PDU.
SPEC_EVENT: dict[str, Any] = SIGNING["event_signing"][0]["expected"]

V3 = KNOWN_ROOM_VERSIONS["3"]
V4 = KNOWN_ROOM_VERSIONS["4"]
STANDARD_ID = re.compile(r"\$[A-Za-z0-9+/]{43}\Z")
URLSAFE_ID = re.compile(r"\$[A-Za-z0-9_\-]{43}\Z")
HASH_VERSIONS = [
    v for v, rv in KNOWN_ROOM_VERSIONS.items() if rv.event_format is not EventFormat.V1
]


def _independent_reference_hash(pdu: dict[str, Any]) -> bytes:
    """The reference hash by hand for the spec event, whose top-level keys the v1 redaction
    rules all keep (content is already {}): drop signatures and unsigned, hash."""
    kept = {k: v for k, v in pdu.items() if k not in ("signatures", "unsigned")}
    return hashlib.sha256(encode_canonical_json(kept)).digest()


def test_spec_event_id_v3_vs_v4() -> None:
    digest = _independent_reference_hash(SPEC_EVENT)
    assert reference_hash(V3, SPEC_EVENT) == digest == reference_hash(V4, SPEC_EVENT)
    v3_id = compute_event_id(V3, SPEC_EVENT)
    v4_id = compute_event_id(V4, SPEC_EVENT)
    assert v3_id == "$" + encode_base64(digest)
    assert v4_id == "$" + encode_base64(digest, urlsafe=True)
    assert STANDARD_ID.match(v3_id) and URLSAFE_ID.match(v4_id)
    # The same hash in two alphabets: v4 swaps + and / for - and _.
    assert v4_id == v3_id.replace("+", "-").replace("/", "_")
    assert is_valid_event_id(V3, v3_id) and is_valid_event_id(V4, v4_id)


def test_alphabets_differ_when_the_hash_needs_them(signing_key: SigningKey) -> None:
    # Find a variant of the spec event whose hash has a `+` or `/` in standard base64 (about
    # three in four do), then check each version uses only its own alphabet.
    for depth in range(100):
        pdu = copy.deepcopy(SIGNING["event_signing"][0]["input"])
        pdu["depth"] = depth
        hash_and_sign_event(V3, pdu, "domain", signing_key)
        v3_id, v4_id = compute_event_id(V3, pdu), compute_event_id(V4, pdu)
        if set(v3_id) & set("+/"):
            break
    else:  # pragma: no cover
        pytest.fail("no hash with + or / in 100 tries")
    assert v3_id != v4_id
    assert not set(v4_id) & set("+/") and set(v4_id) & set("-_")
    assert not is_valid_event_id(V4, v3_id)
    assert not is_valid_event_id(V3, v4_id)


@pytest.mark.parametrize("version", HASH_VERSIONS)
def test_event_id_is_the_reference_hash(version: str, make_event: Callable[..., Event]) -> None:
    rv = KNOWN_ROOM_VERSIONS[version]
    event = make_event(rv)
    assert event.event_id == "$" + encode_base64(
        reference_hash(rv, event.pdu), urlsafe=rv.event_format is EventFormat.V3
    )
    assert len(event.event_id) == 44
    assert is_valid_event_id(rv, event.event_id)
    assert "event_id" not in event.pdu


@pytest.mark.parametrize("version", HASH_VERSIONS)
def test_event_id_ignores_unsigned_and_signatures(
    version: str, make_event: Callable[..., Event]
) -> None:
    rv = KNOWN_ROOM_VERSIONS[version]
    event = make_event(rv)
    pdu = copy.deepcopy(event.pdu)
    pdu["unsigned"] = {"age": 5, "transaction_id": "x"}
    pdu["signatures"]["other.example"] = {"ed25519:a": "c2ln"}
    pdu["signatures"]["domain"]["ed25519:1"] = "Zm9v"
    assert compute_event_id(rv, pdu) == event.event_id
    # A redacted copy has the same ID too.
    assert compute_event_id(rv, event.redacted().pdu) == event.event_id


@pytest.mark.parametrize("version", HASH_VERSIONS)
def test_event_id_changes_with_content(
    version: str, make_event: Callable[..., Event], signing_key: SigningKey
) -> None:
    rv = KNOWN_ROOM_VERSIONS[version]
    event = make_event(rv)
    # Re-hashed (as any honest sender would): the content hash moves, so the ID does.
    pdu = copy.deepcopy(event.pdu)
    pdu["content"]["body"] = "goodbye"
    hash_and_sign_event(rv, pdu, "domain", signing_key)
    assert compute_event_id(rv, pdu) != event.event_id
    # Without re-hashing, a message's content is redacted away before hashing: same ID. This
    # is why receivers check the content hash separately.
    stale = copy.deepcopy(event.pdu)
    stale["content"]["body"] = "goodbye"
    assert compute_event_id(rv, stale) == event.event_id
    # Protected content changes the ID even without re-hashing.
    rules = make_event(rv, type="m.room.join_rules", state_key="", content={"join_rule": "invite"})
    changed = copy.deepcopy(rules.pdu)
    changed["content"]["join_rule"] = "public"
    assert compute_event_id(rv, changed) != rules.event_id
    # As does any kept top-level key.
    for key, value in (("depth", 6), ("origin_server_ts", 1), ("sender", "@bob:domain")):
        assert compute_event_id(rv, dict(event.pdu, **{key: value})) != event.event_id, key


@pytest.mark.parametrize("version", ["1", "2"])
def test_v1_v2_event_ids_are_carried_in_the_pdu(
    version: str, make_event: Callable[..., Event]
) -> None:
    rv = KNOWN_ROOM_VERSIONS[version]
    event = make_event(rv)
    assert event.event_id == event.pdu["event_id"]
    assert re.fullmatch(r"\$[^:]+:domain", event.event_id)
    assert is_valid_event_id(rv, event.event_id)
    # prev/auth events are [id, {hashes}] pairs.
    assert all(isinstance(r, list) and len(r) == 2 for r in event.pdu["prev_events"])
    assert event.prev_event_ids == ("$event1:domain",)
    with pytest.raises(ValueError):
        compute_event_id(rv, {k: v for k, v in event.pdu.items() if k != "event_id"})


def test_v12_room_id_is_the_create_event_id(make_event: Callable[..., Event]) -> None:
    rv = KNOWN_ROOM_VERSIONS["12"]
    create = make_event(
        rv, type="m.room.create", state_key="", content={"room_version": "12"},
        prev_events=[], auth_events=[], depth=1,
    )
    assert "room_id" not in create.pdu
    assert create.room_id == "!" + create.event_id[1:]
    assert create.room_id == room_id_for_create_event_id(create.event_id)
    assert is_valid_room_id(rv, create.room_id)
    assert not is_valid_room_id(rv, "!room:domain")
    assert not is_valid_room_id(KNOWN_ROOM_VERSIONS["11"], create.room_id)
    member = make_event(
        rv, type="m.room.member", state_key="@alice:domain", content={"membership": "join"},
        room_id=create.room_id, prev_events=[create.event_id], auth_events=[],
    )
    assert member.room_id == create.room_id
