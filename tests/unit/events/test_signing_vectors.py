"""appendices "Cryptographic Test Vectors": JSON signing and event signing with the spec's fixed
key (seed YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1, ed25519:1, server `domain`), checked
byte-exact through signedjson and homeserver.crypto.signing."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey
from signedjson.key import decode_signing_key_base64, encode_verify_key_base64, get_verify_key
from signedjson.sign import sign_json, verify_signed_json
from unpaddedbase64 import encode_base64

from homeserver.crypto.signing import (
    compute_event_signature,
    hash_and_sign_event,
    verify_event_signature,
)
from homeserver.events.event import check_content_hash, content_hash
from homeserver.events.room_versions import KNOWN_ROOM_VERSIONS, RedactionRules

VECTORS = json.loads(
    (Path(__file__).resolve().parents[2] / "fixtures" / "spec_vectors" / "signing.json")
    .read_text(encoding="utf-8")
)
JSON_CASES = VECTORS["json_signing"]
EVENT_CASES = VECTORS["event_signing"]
# The spec's event examples carry a top-level `origin`, which the v1 redaction rules keep and
# the v11 rules strip, so their signatures are those of room versions 1 to 10.
PRE_V11 = [v for v, rv in KNOWN_ROOM_VERSIONS.items() if rv.redaction is not RedactionRules.V11]
V11_PLUS = [v for v, rv in KNOWN_ROOM_VERSIONS.items() if rv.redaction is RedactionRules.V11]


def test_the_spec_key_has_the_spec_key_id(signing_key: SigningKey) -> None:
    key_id = f"{signing_key.alg}:{signing_key.version}"  # type: ignore[attr-defined]
    assert key_id == VECTORS["key_id"]
    # The seed fixes the key: decoding it again gives the same verify key.
    again = decode_signing_key_base64("ed25519", "1", VECTORS["signing_key_seed"])
    assert encode_verify_key_base64(get_verify_key(again)) == encode_verify_key_base64(
        get_verify_key(signing_key)
    )


@pytest.mark.parametrize("case", JSON_CASES, ids=[c["reason"] for c in JSON_CASES])
def test_json_signing_vector(case: dict[str, Any], signing_key: SigningKey) -> None:
    signed = sign_json(copy.deepcopy(case["input"]), VECTORS["server_name"], signing_key)
    assert signed == case["expected"]
    verify_signed_json(signed, VECTORS["server_name"], get_verify_key(signing_key))


@pytest.mark.parametrize("case", JSON_CASES, ids=[c["reason"] for c in JSON_CASES])
def test_json_signing_ignores_unsigned(case: dict[str, Any], signing_key: SigningKey) -> None:
    # "Signing Details": `unsigned` and `signatures` are not covered by the signature.
    given = copy.deepcopy(case["input"])
    given["unsigned"] = {"age_ts": 922834800000}
    signed = sign_json(given, VECTORS["server_name"], signing_key)
    assert signed["signatures"] == case["expected"]["signatures"]
    assert signed["unsigned"] == {"age_ts": 922834800000}


@pytest.mark.parametrize("version", PRE_V11)
@pytest.mark.parametrize("case", EVENT_CASES, ids=[c["reason"] for c in EVENT_CASES])
def test_event_signing_vector(case: dict[str, Any], version: str, signing_key: SigningKey) -> None:
    rv = KNOWN_ROOM_VERSIONS[version]
    pdu = copy.deepcopy(case["input"])
    hash_and_sign_event(rv, pdu, VECTORS["server_name"], signing_key)
    assert pdu == case["expected"]
    # And the pieces separately.
    assert encode_base64(content_hash(case["input"])) == case["expected"]["hashes"]["sha256"]
    assert compute_event_signature(rv, case["expected"], "domain", signing_key) == (
        case["expected"]["signatures"]
    )
    assert check_content_hash(case["expected"])
    assert verify_event_signature(rv, case["expected"], "domain", get_verify_key(signing_key))


@pytest.mark.parametrize("version", V11_PLUS)
@pytest.mark.parametrize("case", EVENT_CASES, ids=[c["reason"] for c in EVENT_CASES])
def test_event_signing_vector_v11_strips_origin(
    case: dict[str, Any], version: str, signing_key: SigningKey
) -> None:
    # The content hash covers the whole event and is the same; the v11 redaction rules drop
    # `origin` before signing, so the signature differs from the spec's (pre-v11) vector.
    rv = KNOWN_ROOM_VERSIONS[version]
    pdu = copy.deepcopy(case["input"])
    hash_and_sign_event(rv, pdu, "domain", signing_key)
    assert pdu["hashes"] == case["expected"]["hashes"]
    assert pdu["signatures"] != case["expected"]["signatures"]
    without_origin = {k: v for k, v in case["expected"].items() if k != "origin"}
    assert pdu["signatures"] == compute_event_signature(
        KNOWN_ROOM_VERSIONS["1"], without_origin, "domain", signing_key
    )
    assert verify_event_signature(rv, pdu, "domain", get_verify_key(signing_key))


def test_event_signing_keeps_other_servers_signatures(signing_key: SigningKey) -> None:
    rv = KNOWN_ROOM_VERSIONS["10"]
    pdu = copy.deepcopy(EVENT_CASES[0]["input"])
    pdu["signatures"] = {"other.example": {"ed25519:x": "c2lnbmF0dXJl"}}
    hash_and_sign_event(rv, pdu, "domain", signing_key)
    assert pdu["signatures"]["other.example"] == {"ed25519:x": "c2lnbmF0dXJl"}
    # Other servers' signatures are not covered, so ours is still the spec's.
    assert pdu["signatures"]["domain"] == EVENT_CASES[0]["expected"]["signatures"]["domain"]
